//! `networking.istio.io`: VirtualService, DestinationRule, Gateway,
//! ServiceEntry, Sidecar, and the local-rate-limit form of EnvoyFilter.
//!
//! The shapes follow istio/api `networking/v1alpha3/*.proto` (the same
//! schema is served as v1alpha3, v1beta1 and v1). Every field of the
//! schema is present so that unknown fields can be refused; fields Ambit
//! does not implement are reported by `validate` as warnings.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_yaml::Value;

use crate::diag::{Code, Findings, Severity};
use crate::meta::LabelsSelector;
use crate::util::{
    check_cidr, check_duration, check_host, check_label_name, check_percent, check_port,
    check_regex, join,
};

const ONE_MS: Option<Duration> = Some(Duration::from_millis(1));

use crate::util::not_implemented;

fn check_export_to(f: &mut Findings, path: &str, export_to: &[String]) {
    if !export_to.is_empty() {
        f.push(
            Code::NotImplemented,
            path,
            "exportTo is not implemented by Ambit: the resource is visible to the whole mesh",
        );
    }
}

// ------------------------------------------------------------ common --

/// `{exact|prefix|regex}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StringMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

impl StringMatch {
    /// `allow_empty`: header matches may be `{}` (presence match).
    fn validate(&self, f: &mut Findings, path: &str, allow_empty: bool) {
        let set = [&self.exact, &self.prefix, &self.regex]
            .iter()
            .filter(|o| o.is_some())
            .count();
        if set > 1 {
            f.push(
                Code::ConflictingFields,
                path,
                "set only one of exact, prefix, regex",
            );
        } else if set == 0 && !allow_empty {
            f.push(
                Code::MissingField,
                path,
                "one of exact, prefix, regex is required",
            );
        }
        if let Some(r) = &self.regex {
            check_regex(f, &join(path, "regex"), r);
        }
    }
}

/// `port: {number}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<i64>,
}

/// `Port` of Gateway servers and Sidecar listeners.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Port {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<i64>,
}

const PROTOCOLS: &[&str] = &[
    "HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "TCP", "TLS", "UDP",
];

impl Port {
    fn validate(&self, f: &mut Findings, path: &str, need_protocol: bool) {
        match self.number {
            Some(n) => {
                check_port(f, &join(path, "number"), n);
            }
            None => f.push(Code::MissingField, join(path, "number"), "required"),
        }
        if let Some(t) = self.target_port {
            check_port(f, &join(path, "targetPort"), t);
        }
        match &self.protocol {
            Some(p) if !PROTOCOLS.contains(&p.to_ascii_uppercase().as_str()) => f.push(
                Code::InvalidValue,
                join(path, "protocol"),
                format!("{p:?} is not a protocol (one of {})", PROTOCOLS.join(", ")),
            ),
            None if need_protocol => f.push(Code::MissingField, join(path, "protocol"), "required"),
            _ => {}
        }
    }
}

/// `Destination`: host, subset, port.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Destination {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
}

impl Destination {
    fn validate(&self, f: &mut Findings, path: &str) {
        match &self.host {
            Some(h) if !h.is_empty() => check_host(f, &join(path, "host"), h, false),
            _ => f.push(Code::MissingField, join(path, "host"), "required"),
        }
        if let Some(s) = &self.subset {
            check_label_name(f, &join(path, "subset"), s);
        }
        if let Some(PortSelector { number: Some(n) }) = &self.port {
            check_port(f, &join(path, "port.number"), *n);
        }
    }
}

/// `Percent`: `{value: 0-100}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Percent {
    #[serde(default)]
    pub value: f64,
}

/// `Headers`: request/response header manipulation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Headers {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<HeaderOperations>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<HeaderOperations>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderOperations {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

// ---------------------------------------------------- VirtualService --

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualServiceSpec {
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub gateways: Vec<String>,
    #[serde(default)]
    pub http: Vec<HttpRoute>,
    #[serde(default)]
    pub tls: Vec<TlsRoute>,
    #[serde(default)]
    pub tcp: Vec<TcpRoute>,
    #[serde(default)]
    pub export_to: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRoute {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, rename = "match")]
    pub matches: Vec<HttpMatchRequest>,
    #[serde(default)]
    pub route: Vec<HttpRouteDestination>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<HttpRedirect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_response: Option<HttpDirectResponse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegate: Option<Delegate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<HttpRewrite>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<HttpRetry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<HttpFaultInjection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Destination>,
    #[serde(default)]
    pub mirrors: Vec<HttpMirrorPolicy>,
    /// Deprecated: use `mirrorPercentage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_percent: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_percentage: Option<Percent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors_policy: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMatchRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<StringMatch>,
    #[serde(default)]
    pub headers: BTreeMap<String, StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    #[serde(default)]
    pub source_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub gateways: Vec<String>,
    #[serde(default)]
    pub query_params: BTreeMap<String, StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_uri_case: Option<bool>,
    #[serde(default)]
    pub without_headers: BTreeMap<String, StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stat_prefix: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteDestination {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<Destination>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRedirect {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derive_port: Option<DerivePort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_code: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DerivePort {
    FromProtocolDefault,
    FromRequestPort,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpDirectResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<HttpBody>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Delegate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRewrite {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri_regex_rewrite: Option<RegexRewrite>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegexRewrite {
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRetry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_remote_localities: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_ignore_previous_hosts: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<String>,
}

/// The `retryOn` policies Istio accepts (Envoy's HTTP and gRPC retry
/// conditions); bare HTTP status codes are accepted as well.
pub const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpFaultInjection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelay>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbort>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultDelay {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_delay: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exponential_delay: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
    /// Deprecated integer percentage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultAbort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMirrorPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<Destination>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsRoute {
    #[serde(default, rename = "match")]
    pub matches: Vec<TlsMatchAttributes>,
    #[serde(default)]
    pub route: Vec<RouteDestination>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsMatchAttributes {
    #[serde(default)]
    pub sni_hosts: Vec<String>,
    #[serde(default)]
    pub destination_subnets: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    #[serde(default)]
    pub source_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub gateways: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpRoute {
    #[serde(default, rename = "match")]
    pub matches: Vec<L4MatchAttributes>,
    #[serde(default)]
    pub route: Vec<RouteDestination>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct L4MatchAttributes {
    #[serde(default)]
    pub destination_subnets: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_subnet: Option<String>,
    #[serde(default)]
    pub source_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub gateways: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteDestination {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<Destination>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i64>,
}

/// Checks the weights of a route's destinations: with more than one
/// destination they must add up to 100; a single one may omit it.
fn check_weights(f: &mut Findings, path: &str, weights: &[Option<i64>]) {
    for (i, w) in weights.iter().enumerate() {
        if let Some(w) = w {
            if *w < 0 {
                f.push(
                    Code::InvalidValue,
                    format!("{path}[{i}].weight"),
                    format!("{w} is negative"),
                );
                return;
            }
        }
    }
    if weights.len() > 1 {
        let total: i64 = weights.iter().map(|w| w.unwrap_or(0)).sum();
        if total != 100 {
            let listed: Vec<String> = weights
                .iter()
                .map(|w| w.map_or("unset".into(), |w| w.to_string()))
                .collect();
            f.push(
                Code::InvalidWeights,
                path,
                format!(
                    "the weights of the {} destinations add up to {total} ({}), not 100",
                    weights.len(),
                    listed.join(" + ")
                ),
            );
        }
    }
}

fn check_gateway_ref(f: &mut Findings, path: &str, g: &str) {
    if g == "mesh" {
        return;
    }
    let (ns, name) = match g.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, g),
    };
    let ok = ns.is_none_or(crate::util::is_dns_label) && crate::util::is_dns_subdomain(name);
    if !ok {
        f.push(
            Code::InvalidValue,
            path,
            format!(
                "{g:?} is not a gateway reference (\"mesh\", \"<name>\" or \"<namespace>/<name>\")"
            ),
        );
    }
}

impl VirtualServiceSpec {
    pub fn validate(&self, f: &mut Findings) {
        if self.hosts.is_empty() {
            f.push(
                Code::NotImplemented,
                "spec.hosts",
                "no hosts: Istio treats a VirtualService without hosts as a delegate; delegation is not implemented by Ambit, so this VirtualService has no effect",
            );
        }
        for (i, h) in self.hosts.iter().enumerate() {
            check_host(f, &format!("spec.hosts[{i}]"), h, true);
        }
        for (i, g) in self.gateways.iter().enumerate() {
            check_gateway_ref(f, &format!("spec.gateways[{i}]"), g);
        }
        for (i, r) in self.http.iter().enumerate() {
            r.validate(f, &format!("spec.http[{i}]"));
        }
        if !self.tls.is_empty() {
            not_implemented(f, "spec.tls", "TLS (SNI) routing");
        }
        for (i, r) in self.tls.iter().enumerate() {
            let p = format!("spec.tls[{i}]");
            if r.matches.is_empty() {
                f.push(Code::MissingField, join(&p, "match"), "required");
            }
            for (j, m) in r.matches.iter().enumerate() {
                if m.sni_hosts.is_empty() {
                    f.push(
                        Code::MissingField,
                        format!("{p}.match[{j}].sniHosts"),
                        "required",
                    );
                }
                for (k, s) in m.destination_subnets.iter().enumerate() {
                    check_cidr(f, &format!("{p}.match[{j}].destinationSubnets[{k}]"), s);
                }
            }
            check_route_destinations(f, &join(&p, "route"), &r.route);
        }
        if !self.tcp.is_empty() {
            not_implemented(f, "spec.tcp", "TCP routing");
        }
        for (i, r) in self.tcp.iter().enumerate() {
            let p = format!("spec.tcp[{i}]");
            for (j, m) in r.matches.iter().enumerate() {
                for (k, s) in m.destination_subnets.iter().enumerate() {
                    check_cidr(f, &format!("{p}.match[{j}].destinationSubnets[{k}]"), s);
                }
                if let Some(port) = m.port {
                    check_port(f, &format!("{p}.match[{j}].port"), port);
                }
            }
            check_route_destinations(f, &join(&p, "route"), &r.route);
        }
        check_export_to(f, "spec.exportTo", &self.export_to);
    }

    /// Every destination the VirtualService names (route, mirror), with its field path.
    pub fn destinations(&self) -> Vec<(String, &Destination)> {
        let mut out = Vec::new();
        for (i, r) in self.http.iter().enumerate() {
            for (j, d) in r.route.iter().enumerate() {
                if let Some(d) = &d.destination {
                    out.push((format!("spec.http[{i}].route[{j}].destination"), d));
                }
            }
            if let Some(m) = &r.mirror {
                out.push((format!("spec.http[{i}].mirror"), m));
            }
            for (j, m) in r.mirrors.iter().enumerate() {
                if let Some(d) = &m.destination {
                    out.push((format!("spec.http[{i}].mirrors[{j}].destination"), d));
                }
            }
        }
        for (kind, routes) in [("tls", &self.tls_routes()), ("tcp", &self.tcp_routes())] {
            for (i, r) in routes.iter().enumerate() {
                for (j, d) in r.iter().enumerate() {
                    if let Some(d) = &d.destination {
                        out.push((format!("spec.{kind}[{i}].route[{j}].destination"), d));
                    }
                }
            }
        }
        out
    }

    fn tls_routes(&self) -> Vec<&[RouteDestination]> {
        self.tls.iter().map(|r| r.route.as_slice()).collect()
    }

    fn tcp_routes(&self) -> Vec<&[RouteDestination]> {
        self.tcp.iter().map(|r| r.route.as_slice()).collect()
    }
}

fn check_route_destinations(f: &mut Findings, path: &str, route: &[RouteDestination]) {
    if route.is_empty() {
        f.push(
            Code::MissingField,
            path,
            "at least one destination is required",
        );
    }
    for (i, d) in route.iter().enumerate() {
        match &d.destination {
            Some(dest) => dest.validate(f, &format!("{path}[{i}].destination")),
            None => f.push(
                Code::MissingField,
                format!("{path}[{i}].destination"),
                "required",
            ),
        }
    }
    let weights: Vec<Option<i64>> = route.iter().map(|d| d.weight).collect();
    check_weights(f, path, &weights);
}

impl HttpRoute {
    fn validate(&self, f: &mut Findings, p: &str) {
        for (j, m) in self.matches.iter().enumerate() {
            m.validate(f, &format!("{p}.match[{j}]"));
        }
        let actions = [
            !self.route.is_empty(),
            self.redirect.is_some(),
            self.direct_response.is_some(),
            self.delegate.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if actions == 0 {
            f.push(
                Code::MissingField,
                join(p, "route"),
                "one of route, redirect, directResponse or delegate is required",
            );
        } else if actions > 1 {
            f.push(
                Code::ConflictingFields,
                p,
                "set only one of route, redirect, directResponse, delegate",
            );
        }
        for (j, d) in self.route.iter().enumerate() {
            let dp = format!("{p}.route[{j}].destination");
            match &d.destination {
                Some(dest) => dest.validate(f, &dp),
                None => f.push(Code::MissingField, dp, "required"),
            }
        }
        let weights: Vec<Option<i64>> = self.route.iter().map(|d| d.weight).collect();
        check_weights(f, &join(p, "route"), &weights);

        if let Some(r) = &self.redirect {
            let rp = join(p, "redirect");
            if let Some(c) = r.redirect_code {
                if !(300..=399).contains(&c) {
                    f.push(
                        Code::InvalidValue,
                        join(&rp, "redirectCode"),
                        format!("{c} is not a redirect status (300-399)"),
                    );
                }
            }
            if let Some(port) = r.port {
                check_port(f, &join(&rp, "port"), port);
            }
            if r.port.is_some() && r.derive_port.is_some() {
                f.push(
                    Code::ConflictingFields,
                    &rp,
                    "set only one of port, derivePort",
                );
            }
        }
        if let Some(d) = &self.direct_response {
            let dp = join(p, "directResponse");
            match d.status {
                Some(s) if (200..=599).contains(&s) => {}
                Some(s) => f.push(
                    Code::InvalidValue,
                    join(&dp, "status"),
                    format!("{s} is not an HTTP status (200-599)"),
                ),
                None => f.push(Code::MissingField, join(&dp, "status"), "required"),
            }
            if let Some(b) = &d.body {
                if b.string.is_some() && b.bytes.is_some() {
                    f.push(
                        Code::ConflictingFields,
                        join(&dp, "body"),
                        "set only one of string, bytes",
                    );
                }
            }
        }
        if self.delegate.is_some() {
            not_implemented(f, &join(p, "delegate"), "VirtualService delegation");
        }
        if let Some(r) = &self.rewrite {
            let rp = join(p, "rewrite");
            if r.uri.is_some() && r.uri_regex_rewrite.is_some() {
                f.push(
                    Code::ConflictingFields,
                    &rp,
                    "set only one of uri, uriRegexRewrite",
                );
            }
            if let Some(rr) = &r.uri_regex_rewrite {
                match &rr.pattern {
                    Some(m) => check_regex(f, &join(&rp, "uriRegexRewrite.match"), m),
                    None => f.push(
                        Code::MissingField,
                        join(&rp, "uriRegexRewrite.match"),
                        "required",
                    ),
                }
            }
        }
        check_duration(f, &join(p, "timeout"), self.timeout.as_ref(), None);
        if let Some(r) = &self.retries {
            let rp = join(p, "retries");
            if let Some(a) = r.attempts {
                if a < 0 {
                    f.push(
                        Code::InvalidValue,
                        join(&rp, "attempts"),
                        format!("{a} is negative"),
                    );
                }
            }
            check_duration(
                f,
                &join(&rp, "perTryTimeout"),
                r.per_try_timeout.as_ref(),
                ONE_MS,
            );
            if let Some(on) = &r.retry_on {
                for (k, cond) in on.split(',').map(str::trim).enumerate() {
                    let is_status = cond.parse::<u16>().is_ok_and(|c| (100..=599).contains(&c));
                    if !is_status && !RETRY_ON.contains(&cond) {
                        let hint = crate::util::did_you_mean(cond, RETRY_ON)
                            .map(|s| format!("; did you mean {s}?"))
                            .unwrap_or_default();
                        f.push(
                            Code::InvalidValue,
                            join(&rp, "retryOn"),
                            format!(
                                "condition {} ({cond:?}) is not a retry policy Istio knows{hint}",
                                k + 1
                            ),
                        );
                    }
                }
            }
            check_duration(f, &join(&rp, "backoff"), r.backoff.as_ref(), ONE_MS);
            if r.retry_remote_localities == Some(true) {
                not_implemented(
                    f,
                    &join(&rp, "retryRemoteLocalities"),
                    "locality-aware retries",
                );
            }
        }
        if let Some(fault) = &self.fault {
            fault.validate(f, &join(p, "fault"));
        }
        if let Some(m) = &self.mirror {
            m.validate(f, &join(p, "mirror"));
        }
        if self.mirror.is_some() && !self.mirrors.is_empty() {
            f.push(
                Code::ConflictingFields,
                p,
                "set only one of mirror, mirrors",
            );
        }
        for (j, m) in self.mirrors.iter().enumerate() {
            let mp = format!("{p}.mirrors[{j}]");
            match &m.destination {
                Some(d) => d.validate(f, &join(&mp, "destination")),
                None => f.push(Code::MissingField, join(&mp, "destination"), "required"),
            }
            if let Some(pc) = &m.percentage {
                check_percent(f, &join(&mp, "percentage.value"), pc.value);
            }
        }
        if let Some(mp) = self.mirror_percent {
            f.push(
                Code::Deprecated,
                join(p, "mirrorPercent"),
                "deprecated: use mirrorPercentage.value (accepted and treated as mirrorPercentage)",
            );
            check_percent(f, &join(p, "mirrorPercent"), mp as f64);
        }
        if let Some(pc) = &self.mirror_percentage {
            check_percent(f, &join(p, "mirrorPercentage.value"), pc.value);
        }
        if self.cors_policy.is_some() {
            not_implemented(f, &join(p, "corsPolicy"), "CORS policy");
        }
    }
}

impl HttpMatchRequest {
    fn validate(&self, f: &mut Findings, mp: &str) {
        for (name, sm) in [
            ("uri", &self.uri),
            ("scheme", &self.scheme),
            ("method", &self.method),
            ("authority", &self.authority),
        ] {
            if let Some(sm) = sm {
                sm.validate(f, &join(mp, name), false);
            }
        }
        for (field, map) in [
            ("headers", &self.headers),
            ("queryParams", &self.query_params),
            ("withoutHeaders", &self.without_headers),
        ] {
            for (k, sm) in map {
                sm.validate(f, &format!("{mp}.{field}.{k}"), true);
            }
        }
        if let Some(port) = self.port {
            check_port(f, &join(mp, "port"), port);
        }
        if !self.source_labels.is_empty() {
            not_implemented(
                f,
                &join(mp, "sourceLabels"),
                "matching on the source workload's labels",
            );
        }
        for (k, g) in self.gateways.iter().enumerate() {
            check_gateway_ref(f, &format!("{mp}.gateways[{k}]"), g);
        }
    }
}

impl HttpFaultInjection {
    fn validate(&self, f: &mut Findings, fp: &str) {
        if self.delay.is_none() && self.abort.is_none() {
            f.push(Code::MissingField, fp, "one of delay, abort is required");
        }
        if let Some(d) = &self.delay {
            let dp = join(fp, "delay");
            match (&d.fixed_delay, &d.exponential_delay) {
                (Some(_), Some(_)) => f.push(
                    Code::ConflictingFields,
                    &dp,
                    "set only one of fixedDelay, exponentialDelay",
                ),
                (None, None) => f.push(Code::MissingField, join(&dp, "fixedDelay"), "required"),
                _ => {}
            }
            check_duration(f, &join(&dp, "fixedDelay"), d.fixed_delay.as_ref(), ONE_MS);
            if d.exponential_delay.is_some() {
                check_duration(
                    f,
                    &join(&dp, "exponentialDelay"),
                    d.exponential_delay.as_ref(),
                    ONE_MS,
                );
                not_implemented(f, &join(&dp, "exponentialDelay"), "exponential delay");
            }
            if let Some(pc) = &d.percentage {
                check_percent(f, &join(&dp, "percentage.value"), pc.value);
            }
            if let Some(pc) = d.percent {
                f.push(
                    Code::Deprecated,
                    join(&dp, "percent"),
                    "deprecated: use percentage.value (accepted and treated as percentage)",
                );
                check_percent(f, &join(&dp, "percent"), pc as f64);
            }
        }
        if let Some(a) = &self.abort {
            let ap = join(fp, "abort");
            let set = [
                a.http_status.is_some(),
                a.grpc_status.is_some(),
                a.http2_error.is_some(),
            ]
            .iter()
            .filter(|b| **b)
            .count();
            if set == 0 {
                f.push(
                    Code::MissingField,
                    join(&ap, "httpStatus"),
                    "one of httpStatus, grpcStatus, http2Error is required",
                );
            } else if set > 1 {
                f.push(
                    Code::ConflictingFields,
                    &ap,
                    "set only one of httpStatus, grpcStatus, http2Error",
                );
            }
            if let Some(s) = a.http_status {
                if !(200..=599).contains(&s) {
                    f.push(
                        Code::InvalidValue,
                        join(&ap, "httpStatus"),
                        format!("{s} is not an HTTP status (200-599)"),
                    );
                }
            }
            if a.http2_error.is_some() {
                not_implemented(f, &join(&ap, "http2Error"), "HTTP/2 error abort");
            }
            if let Some(pc) = &a.percentage {
                check_percent(f, &join(&ap, "percentage.value"), pc.value);
            }
        }
    }
}

// --------------------------------------------------- DestinationRule --

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationRuleSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
    #[serde(default)]
    pub subsets: Vec<Subset>,
    #[serde(default)]
    pub export_to: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<LabelsSelector>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTlsSettings>,
    #[serde(default)]
    pub port_level_settings: Vec<PortTrafficPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortTrafficPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTlsSettings>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancerSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simple: Option<SimpleLb>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent_hash: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality_lb_setting: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_duration_secs: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<Value>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SimpleLb {
    Unspecified,
    LeastConn,
    Random,
    Passthrough,
    RoundRobin,
    LeastRequest,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionPoolSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSettings>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connection_duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http1_max_pending_requests: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_max_requests: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_connection: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h2_upgrade_policy: Option<H2UpgradePolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_client_protocol: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_streams: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum H2UpgradePolicy {
    Default,
    DoNotUpgrade,
    Upgrade,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    /// Deprecated: Istio treats it as `consecutive5xxErrors`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_errors: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_5xx_errors: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_gateway_errors: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_local_origin_failures: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_external_local_origin_errors: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_health_percent: Option<i64>,
}

impl OutlierDetection {
    /// The effective `consecutive5xxErrors`: the deprecated
    /// `consecutiveErrors` counts when the new field is absent (as in Istio).
    pub fn effective_consecutive_5xx_errors(&self) -> Option<i64> {
        self.consecutive_5xx_errors.or(self.consecutive_errors)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientTlsSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ClientTlsMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_name: Option<String>,
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_crl: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClientTlsMode {
    Disable,
    Simple,
    Mutual,
    IstioMutual,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subset {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
}

impl DestinationRuleSpec {
    pub fn validate(&self, f: &mut Findings) {
        match &self.host {
            Some(h) if !h.is_empty() => check_host(f, "spec.host", h, true),
            _ => f.push(Code::MissingField, "spec.host", "required"),
        }
        if let Some(tp) = &self.traffic_policy {
            tp.validate(f, "spec.trafficPolicy");
        }
        let mut names = BTreeSet::new();
        for (i, s) in self.subsets.iter().enumerate() {
            let sp = format!("spec.subsets[{i}]");
            match &s.name {
                Some(n) => {
                    check_label_name(f, &join(&sp, "name"), n);
                    if !names.insert(n.as_str()) {
                        f.push(
                            Code::InvalidValue,
                            join(&sp, "name"),
                            format!("duplicate subset name {n:?}"),
                        );
                    }
                }
                None => f.push(Code::MissingField, join(&sp, "name"), "required"),
            }
            if let Some(tp) = &s.traffic_policy {
                tp.validate(f, &join(&sp, "trafficPolicy"));
            }
        }
        if self.workload_selector.is_some() {
            not_implemented(
                f,
                "spec.workloadSelector",
                "DestinationRule workloadSelector",
            );
        }
        check_export_to(f, "spec.exportTo", &self.export_to);
    }

    /// Subset names defined by this rule.
    pub fn subset_names(&self) -> impl Iterator<Item = &str> {
        self.subsets.iter().filter_map(|s| s.name.as_deref())
    }
}

impl TrafficPolicy {
    fn validate(&self, f: &mut Findings, p: &str) {
        validate_policy_parts(
            f,
            p,
            self.load_balancer.as_ref(),
            self.connection_pool.as_ref(),
            self.outlier_detection.as_ref(),
            self.tls.as_ref(),
        );
        for (i, pl) in self.port_level_settings.iter().enumerate() {
            let pp = format!("{p}.portLevelSettings[{i}]");
            match &pl.port {
                Some(PortSelector { number: Some(n) }) => {
                    check_port(f, &join(&pp, "port.number"), *n);
                }
                _ => f.push(Code::MissingField, join(&pp, "port.number"), "required"),
            }
            validate_policy_parts(
                f,
                &pp,
                pl.load_balancer.as_ref(),
                pl.connection_pool.as_ref(),
                pl.outlier_detection.as_ref(),
                pl.tls.as_ref(),
            );
        }
        if self.tunnel.is_some() {
            not_implemented(f, &join(p, "tunnel"), "tunnel settings");
        }
        if self.proxy_protocol.is_some() {
            not_implemented(f, &join(p, "proxyProtocol"), "PROXY protocol");
        }
    }
}

fn non_negative(f: &mut Findings, path: &str, v: Option<i64>) {
    if let Some(v) = v {
        if v < 0 {
            f.push(Code::InvalidValue, path, format!("{v} is negative"));
        }
    }
}

fn validate_policy_parts(
    f: &mut Findings,
    p: &str,
    lb: Option<&LoadBalancerSettings>,
    pool: Option<&ConnectionPoolSettings>,
    od: Option<&OutlierDetection>,
    tls: Option<&ClientTlsSettings>,
) {
    if let Some(lb) = lb {
        let lp = join(p, "loadBalancer");
        if lb.simple.is_some() && lb.consistent_hash.is_some() {
            f.push(
                Code::ConflictingFields,
                &lp,
                "set only one of simple, consistentHash",
            );
        }
        if lb.consistent_hash.is_some() {
            not_implemented(
                f,
                &join(&lp, "consistentHash"),
                "consistent-hash load balancing",
            );
        }
        if lb.locality_lb_setting.is_some() {
            not_implemented(
                f,
                &join(&lp, "localityLbSetting"),
                "locality load balancing",
            );
        }
        if lb.warmup_duration_secs.is_some() || lb.warmup.is_some() {
            check_duration(
                f,
                &join(&lp, "warmupDurationSecs"),
                lb.warmup_duration_secs.as_ref(),
                None,
            );
            not_implemented(f, &join(&lp, "warmupDurationSecs"), "slow-start warmup");
        }
    }
    if let Some(pool) = pool {
        let cp = join(p, "connectionPool");
        if let Some(tcp) = &pool.tcp {
            let tp = join(&cp, "tcp");
            non_negative(f, &join(&tp, "maxConnections"), tcp.max_connections);
            check_duration(
                f,
                &join(&tp, "connectTimeout"),
                tcp.connect_timeout.as_ref(),
                ONE_MS,
            );
            check_duration(
                f,
                &join(&tp, "maxConnectionDuration"),
                tcp.max_connection_duration.as_ref(),
                ONE_MS,
            );
            check_duration(
                f,
                &join(&tp, "idleTimeout"),
                tcp.idle_timeout.as_ref(),
                None,
            );
            if tcp.tcp_keepalive.is_some() {
                not_implemented(f, &join(&tp, "tcpKeepalive"), "TCP keepalive settings");
            }
        }
        if let Some(http) = &pool.http {
            let hp = join(&cp, "http");
            non_negative(
                f,
                &join(&hp, "http1MaxPendingRequests"),
                http.http1_max_pending_requests,
            );
            non_negative(f, &join(&hp, "http2MaxRequests"), http.http2_max_requests);
            non_negative(
                f,
                &join(&hp, "maxRequestsPerConnection"),
                http.max_requests_per_connection,
            );
            non_negative(f, &join(&hp, "maxRetries"), http.max_retries);
            non_negative(
                f,
                &join(&hp, "maxConcurrentStreams"),
                http.max_concurrent_streams,
            );
            check_duration(
                f,
                &join(&hp, "idleTimeout"),
                http.idle_timeout.as_ref(),
                ONE_MS,
            );
            // h2UpgradePolicy: the waypoint follows the caller's protocol
            // (DEFAULT, DO_NOT_UPGRADE) or upgrades HTTP/1.1 (UPGRADE).
            if http.use_client_protocol.is_some() {
                not_implemented(f, &join(&hp, "useClientProtocol"), "useClientProtocol");
            }
        }
    }
    if let Some(od) = od {
        let op = join(p, "outlierDetection");
        if od.consecutive_errors.is_some() {
            let msg = if od.consecutive_5xx_errors.is_some() {
                "deprecated: use consecutive5xxErrors (both are set; consecutive5xxErrors wins and consecutiveErrors is ignored)"
            } else {
                "deprecated: use consecutive5xxErrors (it is accepted and treated as consecutive5xxErrors, as Istio does)"
            };
            f.push(Code::Deprecated, join(&op, "consecutiveErrors"), msg);
        }
        non_negative(f, &join(&op, "consecutiveErrors"), od.consecutive_errors);
        non_negative(
            f,
            &join(&op, "consecutive5xxErrors"),
            od.consecutive_5xx_errors,
        );
        non_negative(
            f,
            &join(&op, "consecutiveGatewayErrors"),
            od.consecutive_gateway_errors,
        );
        non_negative(
            f,
            &join(&op, "consecutiveLocalOriginFailures"),
            od.consecutive_local_origin_failures,
        );
        if od.split_external_local_origin_errors == Some(true) {
            not_implemented(
                f,
                &join(&op, "splitExternalLocalOriginErrors"),
                "separate counting of local-origin failures",
            );
        }
        check_duration(f, &join(&op, "interval"), od.interval.as_ref(), ONE_MS);
        check_duration(
            f,
            &join(&op, "baseEjectionTime"),
            od.base_ejection_time.as_ref(),
            ONE_MS,
        );
        if let Some(v) = od.max_ejection_percent {
            check_percent(f, &join(&op, "maxEjectionPercent"), v as f64);
        }
        if let Some(v) = od.min_health_percent {
            check_percent(f, &join(&op, "minHealthPercent"), v as f64);
        }
    }
    if let Some(tls) = tls {
        let tp = join(p, "tls");
        match tls.mode {
            Some(ClientTlsMode::Simple) | Some(ClientTlsMode::Mutual) => not_implemented(
                f,
                &join(&tp, "mode"),
                "TLS origination (SIMPLE/MUTUAL) to the destination",
            ),
            Some(ClientTlsMode::Disable) => f.push_with(
                Severity::Warning,
                Code::NotImplemented,
                join(&tp, "mode"),
                "DISABLE is not honoured: Ambit always carries mesh traffic over mutual TLS (HBONE)",
            ),
            _ => {}
        }
        if tls.mode == Some(ClientTlsMode::Mutual)
            && tls.credential_name.is_none()
            && (tls.client_certificate.is_none() || tls.private_key.is_none())
        {
            f.push(
                Code::MissingField,
                join(&tp, "credentialName"),
                "MUTUAL needs credentialName, or clientCertificate and privateKey",
            );
        }
    }
}

// ----------------------------------------------------------- Gateway --

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewaySpec {
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    #[serde(default)]
    pub servers: Vec<Server>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Server {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Port>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerTlsSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_redirect: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ServerTlsMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_certificate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_crl: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_name: Option<String>,
    #[serde(default)]
    pub credential_names: Vec<String>,
    #[serde(default)]
    pub tls_certificates: Vec<Value>,
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    #[serde(default)]
    pub verify_certificate_spki: Vec<String>,
    #[serde(default)]
    pub verify_certificate_hash: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_protocol_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_protocol_version: Option<String>,
    #[serde(default)]
    pub cipher_suites: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerTlsMode {
    Passthrough,
    Simple,
    Mutual,
    AutoPassthrough,
    IstioMutual,
    OptionalMutual,
}

/// Server protocols the gateway role serves (upper case).
const GATEWAY_PROTOCOLS: &[&str] = &["HTTP", "HTTP2", "GRPC", "HTTPS"];

impl ServerTlsMode {
    /// As written in YAML.
    pub fn name(self) -> &'static str {
        match self {
            ServerTlsMode::Passthrough => "PASSTHROUGH",
            ServerTlsMode::Simple => "SIMPLE",
            ServerTlsMode::Mutual => "MUTUAL",
            ServerTlsMode::AutoPassthrough => "AUTO_PASSTHROUGH",
            ServerTlsMode::IstioMutual => "ISTIO_MUTUAL",
            ServerTlsMode::OptionalMutual => "OPTIONAL_MUTUAL",
        }
    }
}

/// `[namespace/]host` as Gateway servers and Sidecar listeners write hosts.
fn check_ns_host(f: &mut Findings, path: &str, h: &str) {
    let host = match h.split_once('/') {
        Some((ns, host)) => {
            if !(ns == "*" || ns == "." || ns == "~" || crate::util::is_dns_label(ns)) {
                f.push(
                    Code::InvalidValue,
                    path,
                    format!("{h:?}: {ns:?} is not a namespace (a name, \".\", \"~\" or \"*\")"),
                );
                return;
            }
            host
        }
        None => h,
    };
    check_host(f, path, host, true);
}

impl GatewaySpec {
    /// Served by the waypoint binary's ingress gateway role: HTTP, HTTP2,
    /// GRPC and HTTPS servers, TLS mode SIMPLE (credentialName, or
    /// serverCertificate + privateKey), httpsRedirect. What that role does
    /// not serve is named at its field.
    pub fn validate(&self, f: &mut Findings) {
        if self.servers.is_empty() {
            f.push(
                Code::MissingField,
                "spec.servers",
                "at least one server is required",
            );
        }
        for (i, s) in self.servers.iter().enumerate() {
            let sp = format!("spec.servers[{i}]");
            match &s.port {
                Some(p) => p.validate(f, &join(&sp, "port"), true),
                None => f.push(Code::MissingField, join(&sp, "port"), "required"),
            }
            if s.hosts.is_empty() {
                f.push(
                    Code::MissingField,
                    join(&sp, "hosts"),
                    "at least one host is required",
                );
            }
            for (j, h) in s.hosts.iter().enumerate() {
                check_ns_host(f, &format!("{sp}.hosts[{j}]"), h);
            }
            let proto = s
                .port
                .as_ref()
                .and_then(|p| p.protocol.as_deref())
                .map(str::to_ascii_uppercase);
            if let Some(p) = proto.as_deref() {
                // An unknown protocol is Port::validate's error already.
                if PROTOCOLS.contains(&p) && !GATEWAY_PROTOCOLS.contains(&p) {
                    f.push(
                        Code::NotImplemented,
                        format!("{sp}.port.protocol"),
                        format!("{p} servers are not implemented by Ambit's gateway (HTTP, HTTP2, GRPC and HTTPS are); this server is not served"),
                    );
                }
            }
            if s.bind.is_some() {
                not_implemented(f, &join(&sp, "bind"), "binding a server to an address");
            }
            if s.default_endpoint.is_some() {
                not_implemented(f, &join(&sp, "defaultEndpoint"), "defaultEndpoint");
            }
            let needs_tls = matches!(proto.as_deref(), Some("HTTPS") | Some("TLS"));
            match &s.tls {
                None if needs_tls => f.push(
                    Code::MissingField,
                    join(&sp, "tls"),
                    "required for HTTPS and TLS servers",
                ),
                Some(tls) => {
                    let tp = join(&sp, "tls");
                    if needs_tls
                        && matches!(
                            tls.mode,
                            Some(ServerTlsMode::Simple) | Some(ServerTlsMode::Mutual)
                        )
                        && tls.credential_name.is_none()
                        && tls.credential_names.is_empty()
                        && tls.tls_certificates.is_empty()
                        && (tls.server_certificate.is_none() || tls.private_key.is_none())
                    {
                        f.push(
                            Code::MissingField,
                            join(&tp, "credentialName"),
                            "SIMPLE and MUTUAL need credentialName, or serverCertificate and privateKey",
                        );
                    }
                    if needs_tls && tls.mode.is_none() && tls.https_redirect != Some(true) {
                        f.push(
                            Code::MissingField,
                            join(&tp, "mode"),
                            "required for HTTPS and TLS servers",
                        );
                    }
                    // Only HTTPS servers are terminated; a TLS server was
                    // reported by its protocol already.
                    if proto.as_deref() == Some("HTTPS") {
                        if let Some(m) = tls.mode.filter(|m| *m != ServerTlsMode::Simple) {
                            f.push(
                                Code::NotImplemented,
                                join(&tp, "mode"),
                                format!("{} is not implemented by Ambit's gateway (only SIMPLE is); this server is not served", m.name()),
                            );
                        }
                    }
                    if !tls.credential_names.is_empty() {
                        not_implemented(
                            f,
                            &join(&tp, "credentialNames"),
                            "credentialNames (use credentialName)",
                        );
                    }
                    if !tls.tls_certificates.is_empty() {
                        not_implemented(
                            f,
                            &join(&tp, "tlsCertificates"),
                            "tlsCertificates (use credentialName, or serverCertificate and privateKey)",
                        );
                    }
                    for (field, set) in [
                        ("minProtocolVersion", tls.min_protocol_version.is_some()),
                        ("maxProtocolVersion", tls.max_protocol_version.is_some()),
                        ("cipherSuites", !tls.cipher_suites.is_empty()),
                    ] {
                        if set {
                            not_implemented(
                                f,
                                &join(&tp, field),
                                &format!("{field} (the gateway uses its TLS library's defaults)"),
                            );
                        }
                    }
                }
                None => {}
            }
        }
    }
}

// ------------------------------------------------------ ServiceEntry --

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntrySpec {
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<ServiceEntryLocation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<ServiceEntryResolution>,
    #[serde(default)]
    pub endpoints: Vec<WorkloadEntrySpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<LabelsSelector>,
    #[serde(default)]
    pub export_to: Vec<String>,
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServiceEntryLocation {
    MeshExternal,
    MeshInternal,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServiceEntryResolution {
    None,
    Static,
    Dns,
    DnsRoundRobin,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEntrySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default)]
    pub ports: BTreeMap<String, i64>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
}

impl ServiceEntrySpec {
    pub fn validate(&self, f: &mut Findings) {
        if self.hosts.is_empty() {
            f.push(
                Code::MissingField,
                "spec.hosts",
                "at least one host is required",
            );
        }
        for (i, h) in self.hosts.iter().enumerate() {
            check_host(f, &format!("spec.hosts[{i}]"), h, true);
        }
        for (i, a) in self.addresses.iter().enumerate() {
            check_cidr(f, &format!("spec.addresses[{i}]"), a);
        }
        if self.ports.is_empty() {
            f.push(
                Code::MissingField,
                "spec.ports",
                "at least one port is required",
            );
        }
        let mut port_names = BTreeSet::new();
        for (i, p) in self.ports.iter().enumerate() {
            let pp = format!("spec.ports[{i}]");
            match p.number {
                Some(n) => {
                    check_port(f, &join(&pp, "number"), n);
                }
                None => f.push(Code::MissingField, join(&pp, "number"), "required"),
            }
            if let Some(t) = p.target_port {
                check_port(f, &join(&pp, "targetPort"), t);
            }
            if let Some(proto) = &p.protocol {
                if !PROTOCOLS.contains(&proto.to_ascii_uppercase().as_str()) {
                    f.push(
                        Code::InvalidValue,
                        join(&pp, "protocol"),
                        format!(
                            "{proto:?} is not a protocol (one of {})",
                            PROTOCOLS.join(", ")
                        ),
                    );
                }
            }
            if let Some(n) = &p.name {
                if !port_names.insert(n.as_str()) {
                    f.push(
                        Code::InvalidValue,
                        join(&pp, "name"),
                        format!("duplicate port name {n:?}"),
                    );
                }
            }
        }
        let resolution = self.resolution.unwrap_or(ServiceEntryResolution::None);
        if resolution == ServiceEntryResolution::Static
            && self.endpoints.is_empty()
            && self.workload_selector.is_none()
        {
            f.push(
                Code::MissingField,
                "spec.endpoints",
                "resolution STATIC needs endpoints (or a workloadSelector)",
            );
        }
        if !self.endpoints.is_empty() && self.workload_selector.is_some() {
            f.push(
                Code::ConflictingFields,
                "spec",
                "set only one of endpoints, workloadSelector",
            );
        }
        for (i, e) in self.endpoints.iter().enumerate() {
            let ep = format!("spec.endpoints[{i}]");
            let is_static = resolution == ServiceEntryResolution::Static;
            match &e.address {
                Some(a)
                    if is_static
                        && !a.starts_with("unix://")
                        && a.parse::<std::net::IpAddr>().is_err() =>
                {
                    f.push(
                        Code::InvalidValue,
                        join(&ep, "address"),
                        format!("{a:?} is not an IP address (resolution STATIC)"),
                    );
                }
                Some(_) if is_static => {}
                Some(a) => check_host(f, &join(&ep, "address"), a, false),
                None if resolution == ServiceEntryResolution::Static => {
                    f.push(Code::MissingField, join(&ep, "address"), "required")
                }
                None => {}
            }
            for (k, port) in &e.ports {
                check_port(f, &format!("{ep}.ports.{k}"), *port);
            }
        }
        if self.workload_selector.is_some() {
            not_implemented(f, "spec.workloadSelector", "ServiceEntry workloadSelector");
        }
        check_export_to(f, "spec.exportTo", &self.export_to);
    }
}

// ----------------------------------------------------------- Sidecar --

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SidecarSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<LabelsSelector>,
    #[serde(default)]
    pub ingress: Vec<Value>,
    #[serde(default)]
    pub egress: Vec<IstioEgressListener>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_traffic_policy: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_connection_pool: Option<Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IstioEgressListener {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Port>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_mode: Option<String>,
    #[serde(default)]
    pub hosts: Vec<String>,
}

impl SidecarSpec {
    pub fn validate(&self, f: &mut Findings) {
        f.push(
            Code::NotApplied,
            "",
            "Sidecar configures sidecar proxies; Ambit is sidecarless and, like Istio ambient, does not apply it",
        );
        for (i, e) in self.egress.iter().enumerate() {
            let ep = format!("spec.egress[{i}]");
            if e.hosts.is_empty() {
                f.push(
                    Code::MissingField,
                    join(&ep, "hosts"),
                    "at least one host is required",
                );
            }
            for (j, h) in e.hosts.iter().enumerate() {
                let hp = format!("{ep}.hosts[{j}]");
                if !h.contains('/') {
                    f.push(
                        Code::InvalidValue,
                        &hp,
                        format!("{h:?} must be written <namespace>/<host> (e.g. \"./*\", \"istio-system/*\")"),
                    );
                } else {
                    check_ns_host(f, &hp, h);
                }
            }
            if let Some(p) = &e.port {
                p.validate(f, &join(&ep, "port"), false);
            }
        }
    }
}

// ------------------------------------------------------- EnvoyFilter --

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvoyFilterSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<LabelsSelector>,
    #[serde(default)]
    pub target_refs: Vec<crate::meta::PolicyTargetReference>,
    #[serde(default)]
    pub config_patches: Vec<EnvoyConfigObjectPatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvoyConfigObjectPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply_to: Option<String>,
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_: Option<EnvoyConfigObjectMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<Patch>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvoyConfigObjectMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_configuration: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Patch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_class: Option<String>,
}

/// Envoy's `LocalRateLimit` filter config, the part Ambit implements.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalRateLimit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stat_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_bucket: Option<TokenBucket>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_enabled: Option<RuntimeFractionalPercent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_enforced: Option<RuntimeFractionalPercent>,
    #[serde(default)]
    pub response_headers_to_add: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_x_ratelimit_headers: Option<XRateLimitHeaders>,
}

/// Envoy's `x-ratelimit-*` response headers setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum XRateLimitHeaders {
    #[serde(rename = "DISABLE_X_RATELIMIT_HEADERS")]
    Disable,
    #[serde(rename = "DRAFT_VERSION_03")]
    DraftVersion03,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBucket {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_fill: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fill_interval: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeFractionalPercent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_value: Option<FractionalPercent>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FractionalPercent {
    #[serde(default)]
    pub numerator: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denominator: Option<FractionDenominator>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FractionDenominator {
    Hundred,
    TenThousand,
    Million,
}

impl FractionalPercent {
    /// The fraction as a percentage.
    pub fn percent(&self) -> f64 {
        let d = match self.denominator.unwrap_or(FractionDenominator::Hundred) {
            FractionDenominator::Hundred => 100.0,
            FractionDenominator::TenThousand => 10_000.0,
            FractionDenominator::Million => 1_000_000.0,
        };
        self.numerator as f64 * 100.0 / d
    }
}

pub const LOCAL_RATELIMIT_FILTER: &str = "envoy.filters.http.local_ratelimit";
const LOCAL_RATELIMIT_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit";
const TYPED_STRUCTS: &[&str] = &[
    "type.googleapis.com/udpa.type.v1.TypedStruct",
    "type.googleapis.com/xds.type.v3.TypedStruct",
];

/// One recognised local-rate-limit patch.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalRateLimitPatch {
    /// Index in `configPatches`.
    pub index: usize,
    pub context: Option<String>,
    pub config: LocalRateLimit,
}

impl EnvoyConfigObjectPatch {
    /// The LocalRateLimit config carried by this patch, if it has the
    /// local-rate-limit form (an HTTP_FILTER insert of
    /// `envoy.filters.http.local_ratelimit`). `Err` says why not.
    fn local_rate_limit_value(&self) -> Result<(Value, String), String> {
        if self.apply_to.as_deref() != Some("HTTP_FILTER") {
            return Err(format!(
                "applyTo {} (only HTTP_FILTER patches that insert envoy.filters.http.local_ratelimit are implemented)",
                self.apply_to.as_deref().unwrap_or("<unset>")
            ));
        }
        let patch = self.patch.as_ref().ok_or("no patch")?;
        let op = patch.operation.as_deref().unwrap_or("<unset>");
        if !matches!(
            op,
            "INSERT_BEFORE" | "INSERT_AFTER" | "INSERT_FIRST" | "ADD"
        ) {
            return Err(format!(
                "patch operation {op} (only inserting a local_ratelimit filter is implemented)"
            ));
        }
        let value = patch.value.as_ref().ok_or("patch without a value")?;
        let name = value.get("name").and_then(Value::as_str).unwrap_or("");
        if name != LOCAL_RATELIMIT_FILTER {
            return Err(format!(
                "filter {name:?} (only {LOCAL_RATELIMIT_FILTER} is implemented)"
            ));
        }
        let tc = value
            .get("typed_config")
            .or_else(|| value.get("typedConfig"))
            .ok_or("the local_ratelimit filter has no typed_config")?;
        let ty = tc.get("@type").and_then(Value::as_str).unwrap_or("");
        if TYPED_STRUCTS.contains(&ty) {
            let url = tc.get("type_url").and_then(Value::as_str).unwrap_or("");
            if url != LOCAL_RATELIMIT_TYPE {
                return Err(format!(
                    "TypedStruct type_url {url:?} is not LocalRateLimit"
                ));
            }
            let inner = tc.get("value").cloned().unwrap_or(Value::Null);
            Ok((inner, "patch.value.typed_config.value".into()))
        } else if ty == LOCAL_RATELIMIT_TYPE {
            let mut inner = tc.clone();
            if let Value::Mapping(m) = &mut inner {
                m.remove("@type");
            }
            Ok((inner, "patch.value.typed_config".into()))
        } else {
            Err(format!("typed_config @type {ty:?} is not LocalRateLimit"))
        }
    }
}

impl EnvoyFilterSpec {
    /// The local-rate-limit patches, parsed (those that do not parse are
    /// left out; `validate` reports them).
    pub fn local_rate_limits(&self) -> Vec<LocalRateLimitPatch> {
        let mut out = Vec::new();
        for (i, p) in self.config_patches.iter().enumerate() {
            if let Ok((v, _)) = p.local_rate_limit_value() {
                let mut scratch = Findings::default();
                if let Some(config) =
                    crate::lenient::deserialize_lenient::<LocalRateLimit>(v, "", &mut scratch)
                {
                    if !scratch.has_errors() {
                        out.push(LocalRateLimitPatch {
                            index: i,
                            context: p.match_.as_ref().and_then(|m| m.context.clone()),
                            config,
                        });
                    }
                }
            }
        }
        out
    }

    pub fn validate(&self, f: &mut Findings) {
        if self.config_patches.is_empty() {
            f.push(
                Code::MissingField,
                "spec.configPatches",
                "at least one patch is required",
            );
        }
        if self.workload_selector.is_some() && !self.target_refs.is_empty() {
            f.push(
                Code::ConflictingFields,
                "spec",
                "set only one of workloadSelector, targetRefs",
            );
        }
        if !self.target_refs.is_empty() {
            f.push(
                Code::NotImplemented,
                "spec.targetRefs",
                "EnvoyFilter targetRefs are not implemented by Ambit; the filter is ignored",
            );
        }
        if self.priority.is_some() {
            not_implemented(
                f,
                "spec.priority",
                "EnvoyFilter priority (local rate limits apply in resource order)",
            );
        }
        for (i, p) in self.config_patches.iter().enumerate() {
            let pp = format!("spec.configPatches[{i}]");
            match p.local_rate_limit_value() {
                Err(why) => f.push(
                    Code::NotImplemented,
                    &pp,
                    format!(
                        "EnvoyFilter patch not implemented by Ambit: {why}; the patch is ignored"
                    ),
                ),
                Ok((v, rel)) => {
                    let base = format!("{pp}.{rel}");
                    if let Some(ctx) = p.match_.as_ref().and_then(|m| m.context.as_deref()) {
                        if !matches!(ctx, "SIDECAR_INBOUND" | "ANY") {
                            f.push(
                                Code::NotImplemented,
                                format!("{pp}.match.context"),
                                format!("context {ctx}: Ambit applies local rate limits where the destination's traffic is received (SIDECAR_INBOUND); this patch is ignored"),
                            );
                        }
                    }
                    let before = f.items.len();
                    let rl: Option<LocalRateLimit> =
                        crate::lenient::deserialize_lenient_as(v, &base, f, Code::NotImplemented);
                    // Unknown LocalRateLimit fields are features Ambit does not
                    // implement, not schema errors (the schema is Envoy's).
                    for item in &mut f.items[before..] {
                        if item.code == Code::NotImplemented {
                            item.severity = Severity::Warning;
                            if !item.message.contains("not implemented") {
                                item.message = format!(
                                    "{} (LocalRateLimit field not implemented by Ambit; ignored)",
                                    item.message
                                );
                            }
                        }
                    }
                    if let Some(rl) = rl {
                        rl.validate(f, &base);
                    }
                }
            }
        }
    }
}

impl LocalRateLimit {
    fn validate(&self, f: &mut Findings, base: &str) {
        if self.stat_prefix.as_deref().unwrap_or("").is_empty() {
            f.push(Code::MissingField, join(base, "stat_prefix"), "required");
        }
        match &self.token_bucket {
            None => f.push(Code::MissingField, join(base, "token_bucket"), "required"),
            Some(tb) => {
                let tp = join(base, "token_bucket");
                match tb.max_tokens {
                    Some(n) if n > 0 => {}
                    Some(n) => f.push(
                        Code::InvalidValue,
                        join(&tp, "max_tokens"),
                        format!("{n} must be greater than 0"),
                    ),
                    None => f.push(Code::MissingField, join(&tp, "max_tokens"), "required"),
                }
                if let Some(n) = tb.tokens_per_fill {
                    if n <= 0 {
                        f.push(
                            Code::InvalidValue,
                            join(&tp, "tokens_per_fill"),
                            format!("{n} must be greater than 0"),
                        );
                    }
                }
                match &tb.fill_interval {
                    None => f.push(Code::MissingField, join(&tp, "fill_interval"), "required"),
                    Some(_) => {
                        check_duration(
                            f,
                            &join(&tp, "fill_interval"),
                            tb.fill_interval.as_ref(),
                            ONE_MS,
                        );
                    }
                }
            }
        }
        for (name, rf) in [
            ("filter_enabled", &self.filter_enabled),
            ("filter_enforced", &self.filter_enforced),
        ] {
            if let Some(FractionalPercent { numerator, .. }) =
                rf.as_ref().and_then(|r| r.default_value.as_ref())
            {
                if *numerator < 0 {
                    f.push(
                        Code::InvalidPercentage,
                        format!("{base}.{name}.default_value.numerator"),
                        format!("{numerator} is negative"),
                    );
                }
            }
        }
        for (i, v) in self.response_headers_to_add.iter().enumerate() {
            check_header_value_option(f, &format!("{base}.response_headers_to_add[{i}]"), v);
        }
    }
}

/// Envoy's `HeaderValueOption` as the waypoint reads it: `header.key`
/// (a header name), `header.value`, and `append` or `append_action`
/// (APPEND_IF_EXISTS_OR_ADD, OVERWRITE_IF_EXISTS_OR_ADD).
fn check_header_value_option(f: &mut Findings, path: &str, v: &Value) {
    let Some(h) = v.get("header") else {
        f.push(Code::MissingField, join(path, "header"), "required");
        return;
    };
    match h.get("key").and_then(Value::as_str) {
        None | Some("") => f.push(Code::MissingField, join(path, "header.key"), "required"),
        Some(k) => {
            if !crate::util::is_header_name(k) {
                f.push(
                    Code::InvalidValue,
                    join(path, "header.key"),
                    format!("{k:?} is not an HTTP header name"),
                );
            }
        }
    }
    match v.get("append_action").and_then(Value::as_str) {
        None | Some("APPEND_IF_EXISTS_OR_ADD") | Some("OVERWRITE_IF_EXISTS_OR_ADD") => {}
        Some(other) => f.push(
            Code::NotImplemented,
            join(path, "append_action"),
            format!("{other} is not implemented by Ambit (APPEND_IF_EXISTS_OR_ADD and OVERWRITE_IF_EXISTS_OR_ADD are); the header is not added"),
        ),
    }
}
