//! Istio's standard metric labels: the caller's, computed once per
//! connection ([`SourceInfo`]), and the whole set of one request
//! ([`RequestLabels`]).

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;

use super::flags::response_flags;
use super::series::{SeriesCache, SeriesKeyRef};
use crate::discovery::{Labels, WorkloadInfo};
use crate::namespace::host_namespace;

/// The caller as the metrics label it, computed once per connection.
#[derive(Clone, Debug)]
pub struct SourceInfo {
    pub workload: SharedStr,
    pub namespace: SharedStr,
    pub principal: SharedStr,
    pub app: SharedStr,
    pub version: SharedStr,
    /// The connection came through an HBONE (mTLS) tunnel.
    pub mutual_tls: bool,
    /// The metric series this caller recorded into lately.
    pub(super) series: SeriesCache,
}

/// A label value shared by many requests (one per connection): cloning
/// it does not allocate.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct SharedStr(pub Arc<str>);

impl SharedStr {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for SharedStr {
    fn from(s: &str) -> Self {
        SharedStr(Arc::from(s))
    }
}

impl prometheus_client::encoding::EncodeLabelValue for SharedStr {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder,
    ) -> Result<(), std::fmt::Error> {
        encoder.write_str(&self.0)
    }
}

fn unknown() -> SharedStr {
    SharedStr::from("unknown")
}

/// Istio's app / version label choice: canonical name first.
pub(super) fn app_of(l: &Labels) -> Option<&str> {
    l.get("service.istio.io/canonical-name")
        .or_else(|| l.get("app.kubernetes.io/name"))
        .or_else(|| l.get("app"))
        .map(String::as_str)
}

pub(super) fn version_of(l: &Labels) -> Option<&str> {
    l.get("service.istio.io/canonical-revision")
        .or_else(|| l.get("app.kubernetes.io/version"))
        .or_else(|| l.get("version"))
        .map(String::as_str)
}

impl Default for SourceInfo {
    fn default() -> Self {
        let u = unknown();
        SourceInfo {
            workload: u.clone(),
            namespace: u.clone(),
            principal: u.clone(),
            app: u.clone(),
            version: u,
            mutual_tls: false,
            series: SeriesCache::default(),
        }
    }
}

impl SourceInfo {
    pub fn new(workload: Option<&WorkloadInfo>, labels: &Labels, mutual_tls: bool) -> Self {
        let v = |s: Option<&str>| s.map_or_else(unknown, SharedStr::from);
        SourceInfo {
            workload: v(workload.map(|w| w.name.as_str())),
            namespace: v(workload.map(|w| w.namespace.as_str())),
            principal: v(workload.map(|w| w.principal.as_str())),
            app: v(app_of(labels)),
            version: v(version_of(labels)),
            mutual_tls,
            series: SeriesCache::default(),
        }
    }

    /// The principal the connection authenticated (the HBONE peer), which
    /// wins over what discovery says about the address.
    pub fn with_principal(mut self, principal: &str) -> Self {
        self.principal = SharedStr::from(principal);
        // Series cached under the old principal carry its label.
        self.series = SeriesCache::default();
        self
    }
}

pub(super) type Value = Cow<'static, str>;

/// Istio's standard metric labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub reporter: Value,
    pub source_workload: SharedStr,
    pub source_workload_namespace: SharedStr,
    pub source_principal: SharedStr,
    pub source_app: SharedStr,
    pub source_version: SharedStr,
    pub destination_workload: Value,
    pub destination_workload_namespace: Value,
    pub destination_principal: Value,
    pub destination_service: Value,
    pub destination_service_name: Value,
    pub destination_service_namespace: Value,
    pub destination_app: Value,
    pub destination_version: Value,
    pub request_protocol: Value,
    pub response_code: Value,
    pub grpc_response_status: Value,
    pub response_flags: Value,
    pub connection_security_policy: Value,
}

const UNKNOWN: Value = Cow::Borrowed("unknown");

fn owned_or_unknown(s: Option<&str>) -> Value {
    match s {
        Some(s) if !s.is_empty() => Cow::Owned(s.to_string()),
        _ => UNKNOWN,
    }
}

fn status_label(code: u16) -> Value {
    // The common codes without an allocation.
    Cow::Borrowed(match code {
        200 => "200",
        201 => "201",
        204 => "204",
        301 => "301",
        302 => "302",
        304 => "304",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        413 => "413",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        _ => return Cow::Owned(code.to_string()),
    })
}

/// Istio's labels of a request from `source` whose other label inputs
/// are `k`.
pub(super) fn request_labels(k: &SeriesKeyRef<'_>, source: &SourceInfo) -> RequestLabels {
    let dest_wl = k.destination_workload;
    let svc = k.destination_service;
    RequestLabels {
        reporter: Cow::Borrowed("waypoint"),
        source_workload: source.workload.clone(),
        source_workload_namespace: source.namespace.clone(),
        source_principal: source.principal.clone(),
        source_app: source.app.clone(),
        source_version: source.version.clone(),
        destination_workload: owned_or_unknown(dest_wl.map(|w| w.name.as_str())),
        destination_workload_namespace: owned_or_unknown(
            dest_wl
                .map(|w| w.namespace.as_str())
                .or_else(|| svc.and_then(host_namespace)),
        ),
        destination_principal: owned_or_unknown(dest_wl.map(|w| w.principal.as_str())),
        destination_service: owned_or_unknown(svc),
        destination_service_name: owned_or_unknown(svc.and_then(|s| s.split('.').next())),
        destination_service_namespace: owned_or_unknown(svc.and_then(host_namespace)),
        destination_app: owned_or_unknown(k.destination_app),
        destination_version: owned_or_unknown(k.destination_version),
        request_protocol: Cow::Borrowed(if k.grpc { "grpc" } else { "http" }),
        response_code: status_label(k.code),
        grpc_response_status: if k.grpc {
            owned_or_unknown(k.grpc_status)
        } else {
            Cow::Borrowed("")
        },
        response_flags: response_flags(k.flag, k.delayed),
        connection_security_policy: Cow::Borrowed(if source.mutual_tls {
            "mutual_tls"
        } else {
            "none"
        }),
    }
}
