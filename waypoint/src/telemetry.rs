//! Per-request telemetry: Istio's standard metrics (names, labels and
//! buckets as Istio's Prometheus stats, `reporter="waypoint"`), an
//! Envoy-like access log line (tracing event at info, target `access`),
//! the Telemetry resources' settings the waypoint applies (sampling
//! percentage, access log on/off), and Envoy's response flags.
//!
//! Metrics are recorded once the response head is known, for forwarded
//! requests and local replies alike; the duration is to the response head
//! (the body streams on afterwards). `istio_response_bytes` observes the
//! body length at the head when it is known there (`content-length`, local
//! replies), else when a streamed body ends (or is dropped), counted as it
//! passes; the access log's `bytes_sent` is `-` for the latter.
//!
//! Label values that are not known are `unknown`, as Istio's.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Method, Response, Version};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use mesh_api::telemetry::TelemetrySpec;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::body::{BoxError, ProxyBody};
use crate::discovery::{Discovery, Labels, WorkloadInfo};
use crate::issue::Issue;
use crate::namespace::{host_namespace, ROOT_NAMESPACE};
use crate::ratelimit::Stats;
use crate::trace::DEFAULT_SAMPLING_PERCENT;

/// Istio's `istio_request_duration_milliseconds` buckets.
pub const DURATION_BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];
/// Istio's byte-size buckets (powers of ten, 1 B to 1 GB).
pub const SIZE_BUCKETS: [f64; 10] = [1.0, 10.0, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

/// The content type of [`Telemetry::metrics_text`].
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

// ------------------------------------------------------ response flags --

/// Envoy's response flags, as a response extension set where a local
/// reply is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseFlag(pub &'static str);

impl ResponseFlag {
    /// Circuit breaker overflow.
    pub const UPSTREAM_OVERFLOW: Self = ResponseFlag("UO");
    pub const NO_HEALTHY_UPSTREAM: Self = ResponseFlag("UH");
    pub const UPSTREAM_CONNECT_FAILURE: Self = ResponseFlag("UF");
    pub const UPSTREAM_CONNECTION_TERMINATION: Self = ResponseFlag("UC");
    pub const UPSTREAM_TIMEOUT: Self = ResponseFlag("UT");
    pub const FAULT_ABORT: Self = ResponseFlag("FI");
    pub const FAULT_DELAY: Self = ResponseFlag("DI");
    pub const NO_ROUTE: Self = ResponseFlag("NR");
    pub const RATE_LIMITED: Self = ResponseFlag("RL");
}

/// Marks a (local) response with a flag.
pub fn flagged(mut r: Response<ProxyBody>, f: ResponseFlag) -> Response<ProxyBody> {
    r.extensions_mut().insert(f);
    r
}

/// The endpoint that answered, as a response extension.
#[derive(Clone, Debug)]
pub struct UpstreamHost {
    pub addr: SocketAddr,
    pub labels: Labels,
}

// ---------------------------------------------------------- workloads --

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
    series: SeriesCache,
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
fn app_of(l: &Labels) -> Option<&str> {
    l.get("service.istio.io/canonical-name")
        .or_else(|| l.get("app.kubernetes.io/name"))
        .or_else(|| l.get("app"))
        .map(String::as_str)
}

fn version_of(l: &Labels) -> Option<&str> {
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

// -------------------------------------------------------- series cache --

/// The four series of one label set, resolved: recording into them is a
/// few atomic adds, where `Family::get_or_create` hashes ~20 labels per
/// family and building the labels allocates.
#[derive(Clone)]
struct Series {
    requests: Counter,
    duration: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
}

/// What decides a request's labels besides its caller (the
/// [`SourceInfo`] that holds the cache), and which registry they are in.
struct SeriesKey {
    telemetry: usize,
    destination_workload: Option<Arc<WorkloadInfo>>,
    destination_service: Option<String>,
    destination_app: Option<String>,
    destination_version: Option<String>,
    grpc: bool,
    grpc_status: Option<String>,
    code: u16,
    flag: Option<&'static str>,
    delayed: bool,
}

/// [`SeriesKey`] borrowed from one request, compared without allocating.
struct SeriesKeyRef<'a> {
    telemetry: usize,
    destination_workload: Option<&'a Arc<WorkloadInfo>>,
    destination_service: Option<&'a str>,
    destination_app: Option<&'a str>,
    destination_version: Option<&'a str>,
    grpc: bool,
    grpc_status: Option<&'a str>,
    code: u16,
    flag: Option<&'static str>,
    delayed: bool,
}

impl SeriesKeyRef<'_> {
    fn matches(&self, k: &SeriesKey) -> bool {
        let same_workload = match (self.destination_workload, &k.destination_workload) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b) || **a == **b,
            _ => false,
        };
        self.telemetry == k.telemetry
            && self.code == k.code
            && self.grpc == k.grpc
            && self.flag == k.flag
            && self.delayed == k.delayed
            && same_workload
            && self.destination_service == k.destination_service.as_deref()
            && self.destination_app == k.destination_app.as_deref()
            && self.destination_version == k.destination_version.as_deref()
            && self.grpc_status == k.grpc_status.as_deref()
    }

    fn to_owned(&self) -> SeriesKey {
        SeriesKey {
            telemetry: self.telemetry,
            destination_workload: self.destination_workload.cloned(),
            destination_service: self.destination_service.map(str::to_string),
            destination_app: self.destination_app.map(str::to_string),
            destination_version: self.destination_version.map(str::to_string),
            grpc: self.grpc,
            grpc_status: self.grpc_status.map(str::to_string),
            code: self.code,
            flag: self.flag,
            delayed: self.delayed,
        }
    }
}

/// The last few label sets of one caller (one downstream connection): a
/// keep-alive connection's requests mostly share theirs.
#[derive(Default)]
struct SeriesCache(Mutex<Vec<(SeriesKey, Series)>>);

const SERIES_CACHED: usize = 4;

impl SeriesCache {
    fn get(&self, k: &SeriesKeyRef<'_>) -> Option<Series> {
        let v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        v.iter()
            .find(|(key, _)| k.matches(key))
            .map(|(_, s)| s.clone())
    }

    fn put(&self, k: SeriesKey, s: Series) {
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if v.len() >= SERIES_CACHED {
            v.remove(0);
        }
        v.push((k, s));
    }
}

impl Clone for SeriesCache {
    /// A copy starts empty (a copy may change its labels, see
    /// [`SourceInfo::with_principal`]).
    fn clone(&self) -> Self {
        SeriesCache::default()
    }
}

impl std::fmt::Debug for SeriesCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SeriesCache")
    }
}

// -------------------------------------------------------------- labels --

type Value = Cow<'static, str>;

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatPrefix {
    stat_prefix: String,
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

// -------------------------------------------------------------- record --

/// What the request path learned about one request, for metrics and the
/// access log; filled as the request goes.
#[derive(Debug, Default)]
pub struct RequestMeta {
    pub method: Method,
    pub path: String,
    pub version: Version,
    pub authority: String,
    pub grpc: bool,
    pub route_name: Option<String>,
    /// The destination service host the request was sent to.
    pub destination_service: Option<String>,
    pub request_id: Option<HeaderValue>,
    pub request_bytes: u64,
    /// A fault delay was injected.
    pub delayed: bool,
    /// Access logging is on under the Telemetry config for this request.
    pub access_log: bool,
}

impl RequestMeta {
    pub fn from_request<B>(req: &http::Request<B>) -> Self {
        let grpc = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/grpc"));
        RequestMeta {
            method: req.method().clone(),
            path: req.uri().path().to_string(),
            version: req.version(),
            authority: req
                .uri()
                .authority()
                .map(|a| a.to_string())
                .or_else(|| {
                    req.headers()
                        .get(http::header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .map(str::to_string)
                })
                .unwrap_or_default(),
            grpc,
            request_id: req.headers().get("x-request-id").cloned(),
            access_log: true,
            ..RequestMeta::default()
        }
    }
}

/// The waypoint's metrics registry and access log switch.
pub struct Telemetry {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Family<RequestLabels, Histogram, fn() -> Histogram>,
    request_bytes: Family<RequestLabels, Histogram, fn() -> Histogram>,
    response_bytes: Family<RequestLabels, Histogram, fn() -> Histogram>,
    rl_enabled: Family<StatPrefix, Counter>,
    rl_ok: Family<StatPrefix, Counter>,
    rl_rate_limited: Family<StatPrefix, Counter>,
    rl_enforced: Family<StatPrefix, Counter>,
    access_log: AtomicBool,
    /// Tells this registry's cached series from another's.
    id: usize,
}

static NEXT_TELEMETRY_ID: AtomicUsize = AtomicUsize::new(0);

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS_MS)
}

fn size_histogram() -> Histogram {
    Histogram::new(SIZE_BUCKETS)
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let duration = Family::new_with_constructor(duration_histogram as fn() -> Histogram);
        let request_bytes = Family::new_with_constructor(size_histogram as fn() -> Histogram);
        let response_bytes = Family::new_with_constructor(size_histogram as fn() -> Histogram);
        // Counters get `_total` appended by the encoder.
        registry.register(
            "istio_requests",
            "Requests by Istio's standard labels",
            requests.clone(),
        );
        registry.register(
            "istio_request_duration_milliseconds",
            "Time to the response head, milliseconds",
            duration.clone(),
        );
        registry.register(
            "istio_request_bytes",
            "Request body sizes",
            request_bytes.clone(),
        );
        registry.register(
            "istio_response_bytes",
            "Response body sizes (when known at the head)",
            response_bytes.clone(),
        );
        let rl = |registry: &mut Registry, name: &str, help: &str| {
            let f = Family::<StatPrefix, Counter>::default();
            registry.register(name, help, f.clone());
            f
        };
        // Envoy's `<stat_prefix>.http_local_rate_limit.*`, the prefix as a label.
        let rl_enabled = rl(
            &mut registry,
            "envoy_http_local_rate_limit_enabled",
            "Requests the local rate limit checked",
        );
        let rl_ok = rl(
            &mut registry,
            "envoy_http_local_rate_limit_ok",
            "Requests under the local rate limit",
        );
        let rl_rate_limited = rl(
            &mut registry,
            "envoy_http_local_rate_limit_rate_limited",
            "Requests over the local rate limit",
        );
        let rl_enforced = rl(
            &mut registry,
            "envoy_http_local_rate_limit_enforced",
            "Requests denied by the local rate limit",
        );
        Telemetry {
            registry,
            requests,
            duration,
            request_bytes,
            response_bytes,
            rl_enabled,
            rl_ok,
            rl_rate_limited,
            rl_enforced,
            access_log: AtomicBool::new(true),
            id: NEXT_TELEMETRY_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Turns the access log off or on (the `--no-access-log` flag); the
    /// Telemetry config can only turn it off further.
    pub fn set_access_log(&self, on: bool) {
        self.access_log.store(on, Ordering::Relaxed);
    }

    /// The metrics in OpenMetrics text ([`METRICS_CONTENT_TYPE`]).
    pub fn metrics_text(&self) -> String {
        let mut s = String::new();
        // Writing into a String does not fail.
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }

    /// Counts one local rate limit check.
    pub fn record_rate_limit(&self, stat_prefix: &str, s: Stats) {
        let l = StatPrefix {
            stat_prefix: stat_prefix.to_string(),
        };
        for (on, f) in [
            (s.enabled, &self.rl_enabled),
            (s.ok, &self.rl_ok),
            (s.rate_limited, &self.rl_rate_limited),
            (s.enforced, &self.rl_enforced),
        ] {
            if on {
                f.get_or_create(&l).inc();
            }
        }
    }

    /// Records one request whose response head is `resp`; returns the
    /// response (its body counted when its length is not known yet).
    pub fn record(
        &self,
        meta: &RequestMeta,
        source: &SourceInfo,
        peer: SocketAddr,
        discovery: &dyn Discovery,
        resp: Response<ProxyBody>,
        started: Instant,
    ) -> Response<ProxyBody> {
        let elapsed = started.elapsed();
        let upstream = resp.extensions().get::<UpstreamHost>();
        let dest_wl = upstream.and_then(|u| discovery.workload(u.addr.ip()));
        let flag = resp.extensions().get::<ResponseFlag>().map(|f| f.0);
        let key = SeriesKeyRef {
            telemetry: self.id,
            destination_workload: dest_wl.as_ref(),
            destination_service: meta.destination_service.as_deref(),
            destination_app: upstream.and_then(|u| app_of(&u.labels)),
            destination_version: upstream.and_then(|u| version_of(&u.labels)),
            grpc: meta.grpc,
            grpc_status: if meta.grpc {
                resp.headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
            } else {
                None
            },
            code: resp.status().as_u16(),
            flag,
            delayed: meta.delayed,
        };
        let series = match source.series.get(&key) {
            Some(s) => s,
            None => {
                let s = self.series(&request_labels(&key, source));
                source.series.put(key.to_owned(), s.clone());
                s
            }
        };
        let response_len = resp.body().size_hint().exact().or_else(|| {
            resp.headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
        });
        series.requests.inc();
        series.duration.observe(elapsed.as_secs_f64() * 1000.0);
        series.request_bytes.observe(meta.request_bytes as f64);
        if let Some(n) = response_len {
            series.response_bytes.observe(n as f64);
        }
        if meta.access_log && self.access_log.load(Ordering::Relaxed) {
            let flags = response_flags(flag, meta.delayed);
            access_log(meta, &flags, peer, upstream, response_len, elapsed, &resp);
        }
        if response_len.is_some() {
            return resp;
        }
        let histogram = series.response_bytes;
        resp.map(|body| {
            CountingBody {
                inner: body,
                bytes: 0,
                histogram: Some(histogram),
            }
            .boxed_unsync()
        })
    }
}

impl Telemetry {
    /// The series of `labels`, created when new.
    fn series(&self, labels: &RequestLabels) -> Series {
        Series {
            requests: self.requests.get_or_create(labels).clone(),
            duration: self.duration.get_or_create(labels).clone(),
            request_bytes: self.request_bytes.get_or_create(labels).clone(),
            response_bytes: self.response_bytes.get_or_create(labels).clone(),
        }
    }
}

/// Envoy's response flags of a request: a local reply's flag, `DI` for an
/// injected delay, `-` for none.
fn response_flags(flag: Option<&'static str>, delayed: bool) -> Value {
    match (flag, delayed) {
        (None, false) => Cow::Borrowed("-"),
        (Some(f), false) => Cow::Borrowed(f),
        (None, true) => Cow::Borrowed("DI"),
        (Some(f), true) => Cow::Owned(format!("DI,{f}")),
    }
}

/// Istio's labels of a request from `source` whose other label inputs
/// are `k`.
fn request_labels(k: &SeriesKeyRef<'_>, source: &SourceInfo) -> RequestLabels {
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

/// A streamed response body that observes its length when it ends.
struct CountingBody {
    inner: ProxyBody,
    bytes: u64,
    histogram: Option<Histogram>,
}

impl CountingBody {
    fn finish(&mut self) {
        if let Some(h) = self.histogram.take() {
            h.observe(self.bytes as f64);
        }
    }
}

impl Body for CountingBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    self.bytes += d.len() as u64;
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.finish(),
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for CountingBody {
    fn drop(&mut self) {
        self.finish();
    }
}

fn access_log(
    meta: &RequestMeta,
    flags: &str,
    peer: SocketAddr,
    upstream: Option<&UpstreamHost>,
    response_len: Option<u64>,
    elapsed: Duration,
    resp: &Response<ProxyBody>,
) {
    let start = SystemTime::now()
        .checked_sub(elapsed)
        .unwrap_or_else(SystemTime::now);
    // The fields after `start_time` are written by its value, so that the
    // fmt layer does its per-field work (styling, and char-by-char escaping
    // were this a message) once, not 15 times; the text is the same
    // `key=value` line. (A JSON formatter sees them all in `start_time`.)
    tracing::info!(
        target: "access",
        start_time = ?AccessLine {
            start,
            meta,
            flags,
            peer,
            upstream,
            response_len,
            elapsed,
            code: resp.status().as_u16(),
        },
        "access"
    );
}

/// The access log line from the `start_time` value on, as `key=value`
/// pairs.
struct AccessLine<'a> {
    start: SystemTime,
    meta: &'a RequestMeta,
    flags: &'a str,
    peer: SocketAddr,
    upstream: Option<&'a UpstreamHost>,
    response_len: Option<u64>,
    elapsed: Duration,
    code: u16,
}

impl std::fmt::Debug for AccessLine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.meta;
        write!(
            f,
            "{} method={} path={} protocol={:?} response_code={} \
             response_flags={} bytes_received={} bytes_sent=",
            Rfc3339(self.start),
            m.method,
            m.path,
            m.version,
            self.code,
            self.flags,
            m.request_bytes,
        )?;
        match self.response_len {
            Some(n) => write!(f, "{n}")?,
            None => f.write_str("-")?,
        }
        write!(
            f,
            " duration_ms={} upstream_host=",
            self.elapsed.as_millis() as u64
        )?;
        match self.upstream {
            Some(u) => write!(f, "{}", u.addr)?,
            None => f.write_str("-")?,
        }
        write!(
            f,
            " x_request_id={} authority={} downstream_peer={} route_name={}",
            m.request_id
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-"),
            m.authority,
            self.peer,
            m.route_name.as_deref().unwrap_or("-"),
        )
    }
}

/// `2026-12-01T18:07:04.123Z` (UTC), without a date library.
pub fn rfc3339(t: SystemTime) -> String {
    Rfc3339(t).to_string()
}

/// [`rfc3339`] without the `String`.
struct Rfc3339(SystemTime);

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = self.0.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = d.as_secs();
        let days = (secs / 86_400) as i64;
        let rem = secs % 86_400;
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            rem / 3600,
            rem / 60 % 60,
            rem % 60,
            d.subsec_millis()
        )
    }
}

// ------------------------------------------------------ Telemetry config --

/// What one Telemetry resource sets.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Settings {
    sampling_percent: Option<f64>,
    access_log: Option<bool>,
}

impl Settings {
    fn or(self, base: Settings) -> Settings {
        Settings {
            sampling_percent: self.sampling_percent.or(base.sampling_percent),
            access_log: self.access_log.or(base.access_log),
        }
    }
}

/// The Telemetry settings the waypoint applies: a root-namespace
/// (`istio-system`) Telemetry for the mesh, a namespace's for the services
/// of that namespace (by the destination service's namespace), field by
/// field over the mesh's.
#[derive(Clone, Debug, Default)]
pub struct TelemetryPolicy {
    mesh: Settings,
    namespaces: HashMap<String, Settings>,
}

impl TelemetryPolicy {
    fn settings(&self, host: &str) -> Settings {
        match host_namespace(host).and_then(|ns| self.namespaces.get(ns)) {
            Some(s) => s.or(self.mesh),
            None => self.mesh,
        }
    }

    /// The sampling percentage for traces the waypoint starts.
    pub fn sampling_percent(&self, host: &str) -> f64 {
        self.settings(host)
            .sampling_percent
            .unwrap_or(DEFAULT_SAMPLING_PERCENT)
    }

    /// Access logging for requests to `host` (on unless disabled).
    pub fn access_log(&self, host: &str) -> bool {
        self.settings(host).access_log.unwrap_or(true)
    }

    /// Adds one Telemetry resource; what the waypoint does not implement is
    /// reported with its field path.
    pub fn add(
        &mut self,
        resource: &str,
        namespace: &str,
        spec: &TelemetrySpec,
        issues: &mut Vec<Issue>,
    ) {
        let mut ni = |path: &str, what: &str| {
            issues.push(Issue::new(
                resource,
                path,
                format!("{what} is not implemented by the waypoint; ignored"),
            ))
        };
        let targeted = [
            ("spec.selector", spec.selector.is_some()),
            ("spec.targetRef", spec.target_ref.is_some()),
            ("spec.targetRefs", !spec.target_refs.is_empty()),
        ];
        for (path, set) in targeted {
            if set {
                ni(
                    path,
                    "selecting workloads (the Telemetry is applied to its whole namespace)",
                );
            }
        }
        let mut s = Settings::default();
        for (i, t) in spec.tracing.iter().enumerate() {
            let p = format!("spec.tracing[{i}]");
            if !t.providers.is_empty() {
                ni(
                    &format!("{p}.providers"),
                    "span reporting (trace context is propagated and sampled, no spans are sent)",
                );
            }
            if t.match_.is_some() {
                ni(&format!("{p}.match"), "tracing match");
            }
            if !t.custom_tags.is_empty() {
                ni(&format!("{p}.customTags"), "custom span tags");
            }
            if t.disable_span_reporting.is_some() {
                ni(&format!("{p}.disableSpanReporting"), "span reporting");
            }
            if t.use_request_id_for_trace_sampling.is_some() {
                ni(
                    &format!("{p}.useRequestIdForTraceSampling"),
                    "sampling by request id",
                );
            }
            if let Some(pct) = t.random_sampling_percentage {
                s.sampling_percent = Some(pct.clamp(0.0, 100.0));
            }
        }
        for (i, m) in spec.metrics.iter().enumerate() {
            let p = format!("spec.metrics[{i}]");
            for (j, pr) in m.providers.iter().enumerate() {
                if pr.name.as_deref() != Some(mesh_api::telemetry::PROMETHEUS_PROVIDER) {
                    ni(
                        &format!("{p}.providers[{j}]"),
                        "a metrics provider other than prometheus",
                    );
                }
            }
            if !m.overrides.is_empty() {
                ni(&format!("{p}.overrides"), "metric overrides (the standard metrics are always on, with the standard labels)");
            }
            if m.reporting_interval.is_some() {
                ni(&format!("{p}.reportingInterval"), "a reporting interval");
            }
        }
        for (i, a) in spec.access_logging.iter().enumerate() {
            let p = format!("spec.accessLogging[{i}]");
            if a.match_.is_some() {
                ni(&format!("{p}.match"), "access log match");
            }
            if a.filter.is_some() {
                ni(&format!("{p}.filter"), "access log filters");
            }
            for (j, pr) in a.providers.iter().enumerate() {
                if pr.name.as_deref() != Some("envoy") {
                    ni(&format!("{p}.providers[{j}]"), "an access log provider other than envoy (the log goes to the waypoint's output)");
                }
            }
            s.access_log = Some(a.disabled != Some(true));
        }
        if namespace == ROOT_NAMESPACE {
            self.mesh = s.or(self.mesh);
        } else {
            let e = self.namespaces.entry(namespace.to_string()).or_default();
            *e = s.or(*e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::local_reply;
    use crate::discovery::StaticDiscovery;
    use http::StatusCode;

    fn policy(yaml: &str) -> (TelemetryPolicy, Vec<Issue>) {
        let mut p = TelemetryPolicy::default();
        let mut issues = Vec::new();
        for d in mesh_api::parse_documents(yaml, "t.yaml") {
            if let Some(mesh_api::Resource::Telemetry(o)) = &d.resource {
                let ns = o.metadata.namespace_or_default().to_string();
                p.add("Telemetry t", &ns, &o.spec, &mut issues);
            }
        }
        (p, issues)
    }

    #[test]
    fn sampling_and_access_log_by_namespace() {
        let (p, _) = policy("");
        assert_eq!(p.sampling_percent("a.b"), DEFAULT_SAMPLING_PERCENT);
        assert!(p.access_log("a.b"));
        let (p, issues) = policy(
            r#"apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh, namespace: istio-system}
spec:
  tracing:
  - randomSamplingPercentage: 100
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: quiet, namespace: quiet}
spec:
  accessLogging:
  - disabled: true
"#,
        );
        assert!(issues.is_empty(), "{issues:?}");
        assert_eq!(p.sampling_percent("a.quiet.svc.cluster.local"), 100.0);
        assert!(!p.access_log("a.quiet.svc.cluster.local"));
        assert!(p.access_log("a.loud"));
    }

    #[test]
    fn seeds_report_what_is_not_implemented() {
        let read = crate::seed_config;
        let (p, issues) = policy(&read("14-000-telemetry-default-tracing.yaml"));
        assert_eq!(p.sampling_percent("x.y"), 100.0);
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].path, "spec.tracing[0].providers");
        let (p, issues) = policy(&read("38-002-telemetry-mesh-default.yaml"));
        assert!(issues.is_empty(), "{issues:?}");
        assert!(p.access_log("x.y"));
    }

    #[test]
    fn record_labels_and_text() {
        let t = Telemetry::new();
        let meta = RequestMeta {
            destination_service: Some("reviews.bookinfo.svc.cluster.local".into()),
            request_bytes: 3,
            ..RequestMeta::default()
        };
        let r = flagged(
            local_reply(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream"),
            ResponseFlag::NO_HEALTHY_UPSTREAM,
        );
        let peer: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        let disc = StaticDiscovery::new();
        let _ = t.record(
            &meta,
            &SourceInfo::default(),
            peer,
            &disc,
            r,
            Instant::now(),
        );
        let text = t.metrics_text();
        let line = text
            .lines()
            .find(|l| l.starts_with("istio_requests_total{"))
            .expect("counter line");
        for want in [
            r#"reporter="waypoint""#,
            r#"response_code="503""#,
            r#"response_flags="UH""#,
            r#"destination_service_name="reviews""#,
            r#"destination_service_namespace="bookinfo""#,
            r#"source_workload="unknown""#,
            r#"connection_security_policy="none""#,
        ] {
            assert!(line.contains(want), "{want} in {line}");
        }
        assert!(line.ends_with(" 1"), "{line}");
        assert!(text.contains("istio_request_duration_milliseconds_bucket{"));
    }

    /// The value of `istio_requests_total` whose labels include all of `want`.
    fn count(text: &str, want: &[&str]) -> Option<u64> {
        text.lines()
            .filter(|l| l.starts_with("istio_requests_total{"))
            .find(|l| want.iter().all(|w| l.contains(w)))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn cached_series_keep_each_request_s_labels() {
        let t = Telemetry::new();
        let other = Telemetry::new();
        let peer: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        let disc = StaticDiscovery::new();
        let src = SourceInfo::default();
        let up = |app: &str| UpstreamHost {
            addr: "10.0.0.1:80".parse().expect("addr"),
            labels: [("app".to_string(), app.to_string())].into(),
        };
        let send = |t: &Telemetry, svc: &str, code: StatusCode, app: &str, delayed: bool| {
            let meta = RequestMeta {
                destination_service: Some(svc.into()),
                delayed,
                ..RequestMeta::default()
            };
            let mut r = local_reply(code, "x");
            r.extensions_mut().insert(up(app));
            let _ = t.record(&meta, &src, peer, &disc, r, Instant::now());
        };
        // One connection (one SourceInfo), label sets interleaved, more of
        // them than the cache holds.
        for _ in 0..3 {
            send(&t, "a.ns1.svc.cluster.local", StatusCode::OK, "a", false);
            send(
                &t,
                "a.ns1.svc.cluster.local",
                StatusCode::NOT_FOUND,
                "a",
                false,
            );
            send(&t, "b.ns2.svc.cluster.local", StatusCode::OK, "b", false);
            send(&t, "a.ns1.svc.cluster.local", StatusCode::OK, "a2", false);
            send(&t, "a.ns1.svc.cluster.local", StatusCode::OK, "a", true);
            send(
                &other,
                "a.ns1.svc.cluster.local",
                StatusCode::OK,
                "a",
                false,
            );
        }
        let text = t.metrics_text();
        let a = r#"destination_service="a.ns1.svc.cluster.local""#;
        assert_eq!(
            count(
                &text,
                &[
                    a,
                    r#"response_code="200""#,
                    r#"destination_app="a""#,
                    r#"response_flags="-""#
                ]
            ),
            Some(3),
            "{text}"
        );
        assert_eq!(count(&text, &[a, r#"response_code="404""#]), Some(3));
        assert_eq!(
            count(
                &text,
                &[
                    r#"destination_service_namespace="ns2""#,
                    r#"destination_app="b""#
                ]
            ),
            Some(3)
        );
        assert_eq!(count(&text, &[a, r#"destination_app="a2""#]), Some(3));
        assert_eq!(count(&text, &[a, r#"response_flags="DI""#]), Some(3));
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("istio_requests_total{"))
                .count(),
            5
        );
        let text = other.metrics_text();
        assert_eq!(count(&text, &[a]), Some(3), "{text}");
        // A copy under another principal does not reuse the old series.
        let src2 = src.clone().with_principal("spiffe://td/ns/x/sa/y");
        let meta = RequestMeta {
            destination_service: Some("a.ns1.svc.cluster.local".into()),
            ..RequestMeta::default()
        };
        let mut r = local_reply(StatusCode::OK, "x");
        r.extensions_mut().insert(up("a"));
        let _ = t.record(&meta, &src2, peer, &disc, r, Instant::now());
        let text = t.metrics_text();
        assert_eq!(
            count(&text, &[a, r#"source_principal="spiffe://td/ns/x/sa/y""#]),
            Some(1),
            "{text}"
        );
    }

    /// Collects formatted tracing output.
    #[derive(Clone, Default)]
    struct Buf(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn access_log_line_and_switches() {
        let buf = Buf::default();
        let w = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_writer(move || w.clone())
            .with_ansi(false)
            .finish();
        let t = Telemetry::new();
        let mut meta = RequestMeta::from_request(
            &http::Request::builder()
                .uri("/ratings/1?x=y")
                .header("host", "ratings.bookinfo:9080")
                .header("x-request-id", "rid-1")
                .body(())
                .expect("request"),
        );
        meta.route_name = Some("r1".into());
        let peer: SocketAddr = "10.0.0.9:5555".parse().expect("addr");
        let disc = StaticDiscovery::new();
        tracing::subscriber::with_default(sub, || {
            let _ = t.record(
                &meta,
                &SourceInfo::default(),
                peer,
                &disc,
                local_reply(StatusCode::OK, "hello"),
                Instant::now(),
            );
            meta.access_log = false; // Telemetry `accessLogging: disabled`
            let _ = t.record(
                &meta,
                &SourceInfo::default(),
                peer,
                &disc,
                local_reply(StatusCode::OK, "hello"),
                Instant::now(),
            );
            meta.access_log = true;
            t.set_access_log(false); // --no-access-log
            let _ = t.record(
                &meta,
                &SourceInfo::default(),
                peer,
                &disc,
                local_reply(StatusCode::OK, "hello"),
                Instant::now(),
            );
        });
        let out = String::from_utf8(buf.0.lock().expect("lock").clone()).expect("utf8");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 1, "{out}");
        for want in [
            " access: ",
            "method=GET",
            "path=/ratings/1",
            "response_code=200",
            "response_flags=-",
            "bytes_sent=5",
            "x_request_id=rid-1",
            "authority=ratings.bookinfo:9080",
            "downstream_peer=10.0.0.9:5555",
            "route_name=r1",
            "protocol=HTTP/1.1",
        ] {
            assert!(lines[0].contains(want), "{want} in {}", lines[0]);
        }
    }

    /// A body of chunks with no size hint (as a chunked upstream body).
    struct Chunks(Vec<Bytes>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            if self.0.is_empty() {
                Poll::Ready(None)
            } else {
                let b = self.0.remove(0);
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
        }
    }

    #[tokio::test]
    async fn streamed_body_is_counted_when_it_ends() {
        let t = Telemetry::new();
        let body = Chunks(vec![
            Bytes::from_static(b"abc"),
            Bytes::from_static(b"defg"),
        ]);
        let peer: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        let resp = t.record(
            &RequestMeta::default(),
            &SourceInfo::default(),
            peer,
            &StaticDiscovery::new(),
            Response::new(body.boxed_unsync()),
            Instant::now(),
        );
        let before = t.metrics_text();
        assert!(
            before
                .lines()
                .any(|l| l.starts_with("istio_response_bytes_count{") && l.ends_with(" 0")),
            "not observed before the end: {before}"
        );
        let got = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&got[..], b"abcdefg");
        let text = t.metrics_text();
        let sum = text
            .lines()
            .find(|l| l.starts_with("istio_response_bytes_sum{"))
            .expect("observed at the end");
        assert!(sum.ends_with(" 7.0"), "{sum}");
    }

    #[test]
    fn rfc3339_formats_utc() {
        let t = UNIX_EPOCH + Duration::from_millis(1_796_148_424_123);
        assert_eq!(rfc3339(t), "2026-12-01T18:07:04.123Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }
}
