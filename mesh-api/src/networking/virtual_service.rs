//! `VirtualService`: HTTP, TLS and TCP routes, and their checks.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_yaml::Value;

use super::common::{check_export_to, Destination, Headers, Percent, StringMatch, ONE_MS};
use crate::diag::{Code, Findings};
use crate::util::{
    check_cidr, check_duration, check_host, check_percent, check_port, check_regex, join,
    not_implemented,
};

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

#[cfg(test)]
mod tests;
