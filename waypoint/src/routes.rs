//! Route tables: VirtualService `http` routes and Gateway API HTTPRoute
//! rules compiled for the hosts they apply to.
//!
//! * A VirtualService's routes are evaluated in order, first match wins;
//!   the `match` entries of a route are ORed, the conditions inside one
//!   entry ANDed. A route without `match` matches everything.
//! * HTTPRoute rules are flattened to one route per match and ordered by
//!   Gateway API precedence (exact path, then longest prefix, then method,
//!   then most header matches, then most query matches), stable otherwise.
//! * String matches are Istio's: `exact`, `prefix`, `regex` (RE2 syntax,
//!   matching the whole value), and `{}` on a header (present).
//! * VirtualServices bound only to gateways (`gateways` without `mesh`)
//!   are not waypoint routes and are skipped. A table can instead be
//!   built for one Istio Gateway ([`Binding::Gateway`], the gateway role):
//!   then only the VirtualServices naming that Gateway apply.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName};
use http::{Method, StatusCode};
use mesh_api::gateway_api::{
    HeaderMatchType, HttpHeaderMatch, HttpRouteFilter, HttpRouteSpec, PathMatchType,
};
use mesh_api::networking::{HttpMatchRequest, HttpRoute, StringMatch, VirtualServiceSpec};
use rand::Rng;
use regex::Regex;
use serde_yaml::Value;

use crate::destination::DestinationRef;
use crate::discovery::Labels;
use crate::fault::FaultPolicy;
use crate::headers::{HeaderOps, HeaderRules};
use crate::issue::Issue;
use crate::mirror::MirrorPolicy;
use crate::resilience::{route_timeout, RetryPolicy};

// ------------------------------------------------------------ matching --

/// One string condition.
#[derive(Clone, Debug)]
pub enum StrMatch {
    Exact(String),
    Prefix(String),
    /// Anchored: the whole value must match.
    Regex(Regex),
    /// `{}`: the header is present.
    Present,
}

impl PartialEq for StrMatch {
    fn eq(&self, o: &Self) -> bool {
        match (self, o) {
            (StrMatch::Exact(a), StrMatch::Exact(b))
            | (StrMatch::Prefix(a), StrMatch::Prefix(b)) => a == b,
            (StrMatch::Regex(a), StrMatch::Regex(b)) => a.as_str() == b.as_str(),
            (StrMatch::Present, StrMatch::Present) => true,
            _ => false,
        }
    }
}

fn anchored(re: &str, ignore_case: bool) -> Result<Regex, String> {
    let flags = if ignore_case { "(?i)" } else { "" };
    Regex::new(&format!("{flags}^(?:{re})$")).map_err(|e| format!("regex {re:?}: {e}"))
}

impl StrMatch {
    pub fn from_istio(m: &StringMatch, ignore_case: bool) -> Result<Self, String> {
        let lower = |s: &String| {
            if ignore_case {
                s.to_ascii_lowercase()
            } else {
                s.clone()
            }
        };
        Ok(match (&m.exact, &m.prefix, &m.regex) {
            (Some(e), _, _) => StrMatch::Exact(lower(e)),
            (_, Some(p), _) => StrMatch::Prefix(lower(p)),
            (_, _, Some(r)) => StrMatch::Regex(anchored(r, ignore_case)?),
            _ => StrMatch::Present,
        })
    }

    pub fn matches(&self, v: &str) -> bool {
        match self {
            StrMatch::Exact(e) => v == e,
            StrMatch::Prefix(p) => v.starts_with(p.as_str()),
            StrMatch::Regex(r) => r.is_match(v),
            StrMatch::Present => true,
        }
    }
}

/// What a request looks like to the matcher.
#[derive(Clone, Copy, Debug)]
pub struct RequestInfo<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub scheme: &'a str,
    /// `host[:port]` as the caller sent it.
    pub authority: &'a str,
    pub port: Option<u16>,
    pub headers: &'a HeaderMap,
    pub source_labels: &'a Labels,
}

/// One `match` entry (all its conditions must hold).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RequestMatch {
    pub uri: Option<StrMatch>,
    pub ignore_uri_case: bool,
    pub scheme: Option<StrMatch>,
    pub method: Option<StrMatch>,
    pub authority: Option<StrMatch>,
    pub headers: Vec<(HeaderName, StrMatch)>,
    pub without_headers: Vec<(HeaderName, StrMatch)>,
    pub query_params: Vec<(String, StrMatch)>,
    pub port: Option<u16>,
    pub source_labels: Labels,
}

fn header_str<'a>(h: &'a HeaderMap, n: &HeaderName) -> Option<&'a str> {
    h.get(n).and_then(|v| v.to_str().ok())
}

/// The value of query parameter `name` (first occurrence; `a` alone is
/// an empty value).
pub fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

impl RequestMatch {
    pub fn matches(&self, r: &RequestInfo<'_>) -> bool {
        if let Some(u) = &self.uri {
            let ok = if self.ignore_uri_case {
                u.matches(&r.path.to_ascii_lowercase())
            } else {
                u.matches(r.path)
            };
            if !ok {
                return false;
            }
        }
        if let Some(m) = &self.method {
            if !m.matches(r.method.as_str()) {
                return false;
            }
        }
        if let Some(s) = &self.scheme {
            if !s.matches(r.scheme) {
                return false;
            }
        }
        if let Some(a) = &self.authority {
            if !a.matches(r.authority) {
                return false;
            }
        }
        if let Some(p) = self.port {
            if r.port != Some(p) {
                return false;
            }
        }
        for (n, m) in &self.headers {
            match header_str(r.headers, n) {
                Some(v) if m.matches(v) => {}
                _ => return false,
            }
        }
        for (n, m) in &self.without_headers {
            if header_str(r.headers, n).is_some_and(|v| m.matches(v)) {
                return false;
            }
        }
        for (k, m) in &self.query_params {
            match query_param(r.query, k) {
                Some(v) if m.matches(v) => {}
                _ => return false,
            }
        }
        self.source_labels
            .iter()
            .all(|(k, v)| r.source_labels.get(k) == Some(v))
    }

    fn from_istio(m: &HttpMatchRequest) -> Result<Self, String> {
        let ignore = m.ignore_uri_case.unwrap_or(false);
        let hdrs = |map: &std::collections::BTreeMap<String, StringMatch>| {
            map.iter()
                .map(|(k, v)| {
                    let n = HeaderName::from_bytes(k.as_bytes())
                        .map_err(|_| format!("{k:?} is not a header name"))?;
                    Ok((n, StrMatch::from_istio(v, false)?))
                })
                .collect::<Result<Vec<_>, String>>()
        };
        Ok(RequestMatch {
            uri: m
                .uri
                .as_ref()
                .map(|u| StrMatch::from_istio(u, ignore))
                .transpose()?,
            ignore_uri_case: ignore,
            scheme: m
                .scheme
                .as_ref()
                .map(|s| StrMatch::from_istio(s, false))
                .transpose()?,
            method: m
                .method
                .as_ref()
                .map(|s| StrMatch::from_istio(s, false))
                .transpose()?,
            authority: m
                .authority
                .as_ref()
                .map(|s| StrMatch::from_istio(s, false))
                .transpose()?,
            headers: hdrs(&m.headers)?,
            without_headers: hdrs(&m.without_headers)?,
            query_params: m
                .query_params
                .iter()
                .map(|(k, v)| Ok((k.clone(), StrMatch::from_istio(v, false)?)))
                .collect::<Result<_, String>>()?,
            port: m.port.and_then(|p| u16::try_from(p).ok()),
            source_labels: m.source_labels.clone(),
        })
    }
}

// ------------------------------------------------------------- actions --

#[derive(Clone, Debug, PartialEq)]
pub struct WeightedDestination {
    pub destination: DestinationRef,
    pub weight: u32,
    /// Header operations of this destination (applied after the route's).
    pub headers: HeaderRules,
}

/// How the path is rewritten (forwarding) or replaced (redirects).
#[derive(Clone, Debug)]
pub enum PathRewrite {
    /// Replace the whole path.
    Full(String),
    /// Replace the part the route's uri prefix matched (Istio
    /// `rewrite.uri`; without a prefix match, the leading `/`).
    Prefix(String),
    /// Gateway API `ReplacePrefixMatch`.
    GatewayPrefix(String),
    /// `uriRegexRewrite`: every match of the regex replaced.
    Regex(Regex, String),
}

impl PartialEq for PathRewrite {
    fn eq(&self, o: &Self) -> bool {
        match (self, o) {
            (PathRewrite::Full(a), PathRewrite::Full(b))
            | (PathRewrite::Prefix(a), PathRewrite::Prefix(b))
            | (PathRewrite::GatewayPrefix(a), PathRewrite::GatewayPrefix(b)) => a == b,
            (PathRewrite::Regex(a, x), PathRewrite::Regex(b, y)) => {
                a.as_str() == b.as_str() && x == y
            }
            _ => false,
        }
    }
}

impl PathRewrite {
    /// The new path for `path` given the match that selected the route.
    pub fn apply(&self, path: &str, matched: Option<&RequestMatch>) -> String {
        let matched_prefix = |m: Option<&RequestMatch>| match m.and_then(|m| m.uri.as_ref()) {
            Some(StrMatch::Prefix(p)) => Some(p.len()),
            Some(StrMatch::Exact(_)) | Some(StrMatch::Regex(_)) => Some(path.len()),
            _ => None,
        };
        match self {
            PathRewrite::Full(p) => p.clone(),
            PathRewrite::Prefix(new) => {
                let n = matched_prefix(matched).unwrap_or(1).min(path.len());
                format!("{new}{}", &path[n..])
            }
            PathRewrite::GatewayPrefix(new) => {
                let n = matched_prefix(matched).unwrap_or(0).min(path.len());
                let rest = &path[n..];
                let joined = if new.ends_with('/') && rest.starts_with('/') {
                    format!("{new}{}", &rest[1..])
                } else if !new.ends_with('/') && !rest.is_empty() && !rest.starts_with('/') {
                    format!("{new}/{rest}")
                } else {
                    format!("{new}{rest}")
                };
                if joined.is_empty() {
                    "/".into()
                } else {
                    joined
                }
            }
            PathRewrite::Regex(re, with) => re.replace_all(path, with.as_str()).into_owned(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rewrite {
    pub path: Option<PathRewrite>,
    pub authority: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Redirect {
    pub path: Option<PathRewrite>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub scheme: Option<String>,
    pub code: StatusCode,
}

impl Redirect {
    /// The `location` for a request.
    pub fn location(&self, r: &RequestInfo<'_>, matched: Option<&RequestMatch>) -> String {
        let scheme = self.scheme.as_deref().unwrap_or(r.scheme);
        let (req_host, req_port) = split_host_port(r.authority);
        let host = self.host.as_deref().unwrap_or(req_host);
        let port = self
            .port
            .or(if self.host.is_some() { None } else { req_port });
        let default_port = match scheme {
            "https" => 443,
            _ => 80,
        };
        let authority = match port {
            Some(p) if p != default_port => format!("{host}:{p}"),
            _ => host.to_string(),
        };
        let path = self
            .path
            .as_ref()
            .map(|p| p.apply(r.path, matched))
            .unwrap_or_else(|| r.path.to_string());
        let query = match r.query {
            Some(q) if !path.contains('?') => format!("?{q}"),
            _ => String::new(),
        };
        format!("{scheme}://{authority}{path}{query}")
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Forward(Vec<WeightedDestination>),
    Redirect(Redirect),
    Direct { status: StatusCode, body: Bytes },
}

/// One compiled route.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    pub name: Option<String>,
    /// ORed; empty matches everything.
    pub matches: Vec<RequestMatch>,
    pub action: Action,
    pub rewrite: Option<Rewrite>,
    pub headers: HeaderRules,
    /// Whole-request timeout (retries included).
    pub timeout: Option<Duration>,
    pub retry: RetryPolicy,
    pub fault: Option<FaultPolicy>,
    pub mirrors: Vec<MirrorPolicy>,
}

impl Route {
    /// The route Istio gives a host without routes: everything to the host.
    pub fn default_for(host: &str) -> Self {
        Route {
            name: Some("default".into()),
            matches: Vec::new(),
            action: Action::Forward(vec![WeightedDestination {
                destination: DestinationRef::host(host),
                weight: 100,
                headers: HeaderRules::default(),
            }]),
            rewrite: None,
            headers: HeaderRules::default(),
            timeout: None,
            retry: RetryPolicy::default(),
            fault: None,
            mirrors: Vec::new(),
        }
    }

    /// The first of `matches` the request satisfies (`Some(None)` for a
    /// route without matches), `None` when the route does not apply.
    pub fn matching<'a>(&'a self, r: &RequestInfo<'_>) -> Option<Option<&'a RequestMatch>> {
        if self.matches.is_empty() {
            return Some(None);
        }
        self.matches.iter().find(|m| m.matches(r)).map(Some)
    }

    /// Draws a destination by weight (`None` when every weight is 0).
    pub fn pick_destination(&self, rng: &mut impl Rng) -> Option<&WeightedDestination> {
        let Action::Forward(ds) = &self.action else {
            return None;
        };
        let total: u64 = ds.iter().map(|d| u64::from(d.weight)).sum();
        if total == 0 {
            return None;
        }
        let mut x = rng.gen_range(0..total);
        for d in ds {
            let w = u64::from(d.weight);
            if x < w {
                return Some(d);
            }
            x -= w;
        }
        None
    }

    /// `Ok(None)`: every match names other gateways (gateway binding only;
    /// for the mesh that is reported as before).
    fn from_istio(
        r: &HttpRoute,
        binding: &Binding,
        vs_namespace: &str,
    ) -> Result<Option<Self>, String> {
        let matches = r
            .matches
            .iter()
            .filter(|m| m.gateways.is_empty() || binding.named_by(&m.gateways, vs_namespace))
            .map(RequestMatch::from_istio)
            .collect::<Result<Vec<_>, _>>()?;
        if matches.is_empty() && !r.matches.is_empty() {
            return match binding {
                Binding::Mesh => Err("every match is bound to a gateway, none to the mesh".into()),
                Binding::Gateway { .. } => Ok(None),
            };
        }
        let action = if let Some(rd) = &r.redirect {
            let code = rd
                .redirect_code
                .and_then(|c| u16::try_from(c).ok())
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::MOVED_PERMANENTLY);
            Action::Redirect(Redirect {
                path: rd.uri.clone().map(PathRewrite::Full),
                host: rd.authority.clone(),
                port: rd.port.and_then(|p| u16::try_from(p).ok()),
                scheme: rd.scheme.clone(),
                code,
            })
        } else if let Some(d) = &r.direct_response {
            let status = d
                .status
                .and_then(|c| u16::try_from(c).ok())
                .and_then(|c| StatusCode::from_u16(c).ok())
                .ok_or("directResponse without a valid status")?;
            let body = d
                .body
                .as_ref()
                .and_then(|b| b.string.clone())
                .map(Bytes::from)
                .unwrap_or_default();
            Action::Direct { status, body }
        } else {
            let single = r.route.len() == 1;
            let ds = r
                .route
                .iter()
                .map(|d| {
                    let dest = d.destination.as_ref().ok_or("route without destination")?;
                    Ok(WeightedDestination {
                        destination: DestinationRef::from_istio(dest)?,
                        weight: match d.weight {
                            Some(w) => u32::try_from(w.max(0)).unwrap_or(0),
                            None if single => 100,
                            None => 0,
                        },
                        headers: HeaderRules::from_istio(d.headers.as_ref())
                            .map_err(|e| e.to_string())?,
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;
            if ds.is_empty() {
                return Err("no route, redirect or directResponse".into());
            }
            Action::Forward(ds)
        };
        let rewrite = r.rewrite.as_ref().map(|rw| -> Result<Rewrite, String> {
            let path = match (&rw.uri, &rw.uri_regex_rewrite) {
                (Some(u), _) => Some(PathRewrite::Prefix(u.clone())),
                (None, Some(rr)) => {
                    let pat = rr
                        .pattern
                        .as_deref()
                        .ok_or("uriRegexRewrite without match")?;
                    let re = Regex::new(pat).map_err(|e| format!("uriRegexRewrite: {e}"))?;
                    Some(PathRewrite::Regex(
                        re,
                        envoy_substitution(rr.rewrite.as_deref().unwrap_or("")),
                    ))
                }
                _ => None,
            };
            Ok(Rewrite {
                path,
                authority: rw.authority.clone(),
            })
        });
        let mut mirrors = Vec::new();
        if let Some(m) = &r.mirror {
            let percent = r
                .mirror_percentage
                .as_ref()
                .map(|p| p.value)
                .or(r.mirror_percent.map(|p| p as f64))
                .unwrap_or(100.0);
            mirrors.push(MirrorPolicy {
                destination: DestinationRef::from_istio(m)?,
                percent,
            });
        }
        for m in &r.mirrors {
            if let Some(d) = &m.destination {
                mirrors.push(MirrorPolicy {
                    destination: DestinationRef::from_istio(d)?,
                    percent: m.percentage.as_ref().map_or(100.0, |p| p.value),
                });
            }
        }
        Ok(Some(Route {
            name: r.name.clone(),
            matches,
            action,
            rewrite: rewrite.transpose()?,
            headers: HeaderRules::from_istio(r.headers.as_ref()).map_err(|e| e.to_string())?,
            timeout: route_timeout(r.timeout.as_deref())?,
            retry: RetryPolicy::from_istio(r.retries.as_ref())?,
            fault: r
                .fault
                .as_ref()
                .map(FaultPolicy::from_istio)
                .transpose()?
                .flatten(),
            mirrors,
        }))
    }
}

/// Envoy's regex substitutions are written `\1`; the regex crate's `${1}`.
fn envoy_substitution(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek().is_some_and(char::is_ascii_digit) => {
                let mut n = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    n.push(*d);
                    chars.next();
                }
                out.push_str(&format!("${{{n}}}"));
            }
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

// ------------------------------------------------------- Gateway API --

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct GwHeader {
    name: String,
    value: String,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct GwHeaderModifier {
    #[serde(default)]
    set: Vec<GwHeader>,
    #[serde(default)]
    add: Vec<GwHeader>,
    #[serde(default)]
    remove: Vec<String>,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct GwPathModifier {
    #[serde(rename = "type")]
    type_: String,
    replace_full_path: Option<String>,
    replace_prefix_match: Option<String>,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct GwRedirect {
    scheme: Option<String>,
    hostname: Option<String>,
    path: Option<GwPathModifier>,
    port: Option<u16>,
    status_code: Option<u16>,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct GwRewrite {
    hostname: Option<String>,
    path: Option<GwPathModifier>,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct GwBackendObjectRef {
    name: String,
    port: Option<u16>,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct GwFraction {
    numerator: i64,
    denominator: Option<i64>,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct GwMirror {
    backend_ref: GwBackendObjectRef,
    percent: Option<i64>,
    fraction: Option<GwFraction>,
}

fn gw<T: serde::de::DeserializeOwned>(v: &Option<Value>, what: &str) -> Result<T, String> {
    let v = v.clone().ok_or_else(|| format!("{what} missing"))?;
    serde_yaml::from_value(v).map_err(|e| format!("{what}: {e}"))
}

fn gw_path(p: &GwPathModifier) -> Result<PathRewrite, String> {
    match p.type_.as_str() {
        "ReplaceFullPath" => Ok(PathRewrite::Full(
            p.replace_full_path.clone().unwrap_or_else(|| "/".into()),
        )),
        "ReplacePrefixMatch" => Ok(PathRewrite::GatewayPrefix(
            p.replace_prefix_match.clone().unwrap_or_else(|| "/".into()),
        )),
        t => Err(format!("path modifier type {t:?}")),
    }
}

fn gw_header_ops(v: &Option<Value>, what: &str) -> Result<HeaderOps, String> {
    let m: GwHeaderModifier = gw(v, what)?;
    let l = |x: &[GwHeader]| {
        x.iter()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect::<Vec<_>>()
    };
    HeaderOps::from_lists(&l(&m.set), &l(&m.add), &m.remove).map_err(|e| e.to_string())
}

/// Applies a rule's (or backend's) filters to a route under construction.
fn apply_gw_filters(route: &mut Route, filters: &[HttpRouteFilter]) -> Result<(), String> {
    for f in filters {
        match f.type_.as_deref().unwrap_or("") {
            "RequestHeaderModifier" => {
                let ops = gw_header_ops(&f.request_header_modifier, "requestHeaderModifier")?;
                route.headers.request = route.headers.request.merged(&ops);
            }
            "ResponseHeaderModifier" => {
                let ops = gw_header_ops(&f.response_header_modifier, "responseHeaderModifier")?;
                route.headers.response = route.headers.response.merged(&ops);
            }
            "RequestRedirect" => {
                let r: GwRedirect = gw(&f.request_redirect, "requestRedirect")?;
                route.action = Action::Redirect(Redirect {
                    path: r.path.as_ref().map(gw_path).transpose()?,
                    host: r.hostname,
                    port: r.port,
                    scheme: r.scheme,
                    code: r
                        .status_code
                        .and_then(|c| StatusCode::from_u16(c).ok())
                        .unwrap_or(StatusCode::FOUND),
                });
            }
            "URLRewrite" => {
                let r: GwRewrite = gw(&f.url_rewrite, "urlRewrite")?;
                route.rewrite = Some(Rewrite {
                    path: r.path.as_ref().map(gw_path).transpose()?,
                    authority: r.hostname,
                });
            }
            "RequestMirror" => {
                let m: GwMirror = gw(&f.request_mirror, "requestMirror")?;
                let percent = match (m.percent, m.fraction) {
                    (Some(p), _) => p as f64,
                    (None, Some(fr)) => {
                        fr.numerator as f64 * 100.0 / fr.denominator.unwrap_or(100).max(1) as f64
                    }
                    _ => 100.0,
                };
                route.mirrors.push(MirrorPolicy {
                    destination: DestinationRef {
                        host: m.backend_ref.name,
                        subset: None,
                        port: m.backend_ref.port,
                    },
                    percent,
                });
            }
            other => return Err(format!("filter {other:?} is not implemented")),
        }
    }
    Ok(())
}

fn gw_header_match(h: &HttpHeaderMatch) -> Result<(String, StrMatch), String> {
    let name = h.name.clone().ok_or("header match without name")?;
    let value = h.value.clone().ok_or("header match without value")?;
    let m = match h.type_.unwrap_or(HeaderMatchType::Exact) {
        HeaderMatchType::Exact => StrMatch::Exact(value),
        HeaderMatchType::RegularExpression => StrMatch::Regex(anchored(&value, false)?),
    };
    Ok((name, m))
}

/// Gateway API precedence key (smaller sorts first).
fn gw_precedence(
    m: &RequestMatch,
) -> (
    u8,
    std::cmp::Reverse<usize>,
    u8,
    std::cmp::Reverse<usize>,
    std::cmp::Reverse<usize>,
) {
    let (kind, len) = match &m.uri {
        Some(StrMatch::Exact(p)) => (0, p.len()),
        Some(StrMatch::Prefix(p)) => (1, p.len()),
        Some(StrMatch::Regex(_)) => (2, 0),
        _ => (1, 1),
    };
    (
        kind,
        std::cmp::Reverse(len),
        u8::from(m.method.is_none()),
        std::cmp::Reverse(m.headers.len()),
        std::cmp::Reverse(m.query_params.len()),
    )
}

/// The routes of one HTTPRoute, with the Service hosts it is attached to.
fn compile_http_route(
    spec: &HttpRouteSpec,
    issues: &mut Vec<Issue>,
    res: &str,
) -> (Vec<String>, Vec<Route>) {
    let hosts: Vec<String> = spec
        .parent_refs
        .iter()
        .filter(|p| p.kind.as_deref() == Some("Service"))
        .filter_map(|p| p.name.clone())
        .collect();
    let mut out: Vec<(RequestMatch, Route)> = Vec::new();
    for (i, rule) in spec.rules.iter().enumerate() {
        let path = format!("spec.rules[{i}]");
        let built = (|| -> Result<Vec<(RequestMatch, Route)>, String> {
            let mut ds = Vec::new();
            for b in &rule.backend_refs {
                let mut holder = Route::default_for("");
                apply_gw_filters(&mut holder, &b.filters)?;
                ds.push(WeightedDestination {
                    destination: DestinationRef {
                        host: b.name.clone().ok_or("backendRef without name")?,
                        subset: None,
                        port: b.port.and_then(|p| u16::try_from(p).ok()),
                    },
                    weight: u32::try_from(b.weight.unwrap_or(1).max(0)).unwrap_or(0),
                    headers: holder.headers,
                });
            }
            let timeouts = rule.timeouts.as_ref();
            let retry = RetryPolicy {
                per_try_timeout: route_timeout(
                    timeouts.and_then(|t| t.backend_request.as_deref()),
                )?,
                ..Default::default()
            };
            let mut route = Route {
                name: rule.name.clone(),
                matches: Vec::new(),
                // No backendRefs: Gateway API answers 500.
                action: if ds.is_empty() {
                    Action::Direct {
                        status: StatusCode::INTERNAL_SERVER_ERROR,
                        body: Bytes::new(),
                    }
                } else {
                    Action::Forward(ds)
                },
                rewrite: None,
                headers: HeaderRules::default(),
                timeout: route_timeout(timeouts.and_then(|t| t.request.as_deref()))?,
                retry,
                fault: None,
                mirrors: Vec::new(),
            };
            apply_gw_filters(&mut route, &rule.filters)?;
            let mut ms = Vec::new();
            let raw = if rule.matches.is_empty() {
                vec![Default::default()]
            } else {
                rule.matches.clone()
            };
            for m in &raw {
                let uri = match &m.path {
                    None => Some(StrMatch::Prefix("/".into())),
                    Some(p) => {
                        let v = p.value.clone().unwrap_or_else(|| "/".into());
                        Some(match p.type_.unwrap_or(PathMatchType::PathPrefix) {
                            PathMatchType::Exact => StrMatch::Exact(v),
                            PathMatchType::PathPrefix => StrMatch::Prefix(v),
                            PathMatchType::RegularExpression => {
                                StrMatch::Regex(anchored(&v, false)?)
                            }
                        })
                    }
                };
                let mut rm = RequestMatch {
                    uri,
                    method: m.method.clone().map(StrMatch::Exact),
                    ..Default::default()
                };
                for h in &m.headers {
                    let (n, sm) = gw_header_match(h)?;
                    let n = HeaderName::from_bytes(n.as_bytes())
                        .map_err(|_| format!("{n:?} is not a header name"))?;
                    rm.headers.push((n, sm));
                }
                for q in &m.query_params {
                    rm.query_params.push(gw_header_match(q)?);
                }
                ms.push(rm);
            }
            Ok(ms
                .into_iter()
                .map(|m| {
                    let mut r = route.clone();
                    r.matches = vec![m.clone()];
                    (m, r)
                })
                .collect())
        })();
        match built {
            Ok(v) => out.extend(v),
            Err(e) => issues.push(Issue::new(res, &path, e)),
        }
    }
    out.sort_by_key(|(m, _)| gw_precedence(m));
    (hosts, out.into_iter().map(|(_, r)| r).collect())
}

// ------------------------------------------------------------- binding --

/// Which proxy a route table is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Binding {
    /// The mesh (waypoints): `gateways` empty or naming `mesh`.
    Mesh,
    /// One Istio Gateway (the gateway role).
    Gateway { namespace: String, name: String },
}

impl Binding {
    /// Does a `gateways` list of a VirtualService in `vs_namespace` name
    /// this binding? A Gateway is named `ns/name`, or `name` from its own
    /// namespace.
    pub fn named_by(&self, gateways: &[String], vs_namespace: &str) -> bool {
        match self {
            Binding::Mesh => gateways.is_empty() || gateways.iter().any(|g| g == "mesh"),
            Binding::Gateway { namespace, name } => {
                gateways.iter().any(|g| match g.split_once('/') {
                    Some((ns, n)) => ns == namespace && n == name,
                    None => g == name && vs_namespace == namespace,
                })
            }
        }
    }
}

// --------------------------------------------------------------- table --

/// The routes of one host pattern.
#[derive(Clone, Debug, PartialEq)]
pub struct HostRoutes {
    /// As written: `reviews`, `reviews.ns.svc.cluster.local`, `*.example.com`.
    pub host: String,
    pub routes: Vec<Route>,
}

/// Every host's routes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RouteTable {
    pub hosts: Vec<HostRoutes>,
}

/// The route chosen for a request and the match entry that chose it.
#[derive(Clone, Copy, Debug)]
pub struct Selected<'a> {
    pub route: &'a Route,
    pub matched: Option<&'a RequestMatch>,
}

/// `host[:port]` → (`host`, port).
pub fn split_host_port(authority: &str) -> (&str, Option<u16>) {
    if let Some(rest) = authority.strip_prefix('[') {
        if let Some((h, p)) = rest.split_once(']') {
            return (h, p.strip_prefix(':').and_then(|p| p.parse().ok()));
        }
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.parse().ok()),
        _ => (authority, None),
    }
}

/// How well `pattern` names `host`: exact 1000, the same short name 900
/// (`reviews` ~ `reviews.ns.svc.cluster.local`), a wildcard suffix its
/// length, `*` 0.
fn host_score(pattern: &str, host: &str) -> Option<usize> {
    let p = pattern.to_ascii_lowercase();
    if p == host {
        return Some(1000);
    }
    let short = |s: &str| s.split('.').next().unwrap_or("").to_string();
    if (!p.contains('.') && short(host) == p) || (!host.contains('.') && short(&p) == host) {
        return Some(900);
    }
    if p == "*" {
        return Some(0);
    }
    if let Some(suffix) = p.strip_prefix('*') {
        if host.ends_with(suffix) {
            return Some(suffix.len());
        }
    }
    None
}

impl RouteTable {
    /// Adds the `http` routes of a VirtualService. Routes that cannot be
    /// compiled are reported and left out.
    pub fn add_virtual_service(
        &mut self,
        res: &str,
        vs: &VirtualServiceSpec,
        issues: &mut Vec<Issue>,
    ) {
        self.add_bound_virtual_service(
            res,
            "",
            vs,
            &Binding::Mesh,
            |h| vec![h.to_string()],
            issues,
        );
    }

    /// Adds the `http` routes of a VirtualService of namespace
    /// `vs_namespace` if its `gateways` name `binding` (matches naming
    /// other gateways are left out). `file_under` maps each VS host to the
    /// hosts its routes are filed under (a gateway: the intersection with
    /// its servers' hosts; none: not served).
    pub fn add_bound_virtual_service(
        &mut self,
        res: &str,
        vs_namespace: &str,
        vs: &VirtualServiceSpec,
        binding: &Binding,
        file_under: impl Fn(&str) -> Vec<String>,
        issues: &mut Vec<Issue>,
    ) {
        if !binding.named_by(&vs.gateways, vs_namespace) {
            return;
        }
        let mut routes = Vec::new();
        for (i, r) in vs.http.iter().enumerate() {
            match Route::from_istio(r, binding, vs_namespace) {
                Ok(Some(route)) => routes.push(route),
                Ok(None) => {}
                Err(e) => issues.push(Issue::new(res, &format!("spec.http[{i}]"), e)),
            }
        }
        let mut hosts: Vec<String> = Vec::new();
        for h in vs.hosts.iter().flat_map(|h| file_under(h)) {
            if !hosts.contains(&h) {
                hosts.push(h);
            }
        }
        for h in hosts {
            self.push(&h, routes.clone());
        }
    }

    /// Adds the rules of an HTTPRoute attached to Services.
    pub fn add_http_route(&mut self, res: &str, spec: &HttpRouteSpec, issues: &mut Vec<Issue>) {
        let (hosts, routes) = compile_http_route(spec, issues, res);
        for h in hosts {
            self.push(&h, routes.clone());
        }
    }

    fn push(&mut self, host: &str, routes: Vec<Route>) {
        match self.hosts.iter_mut().find(|h| h.host == host) {
            Some(h) => h.routes.extend(routes),
            None => self.hosts.push(HostRoutes {
                host: host.to_string(),
                routes,
            }),
        }
    }

    /// The routes for an authority (`host[:port]`), best host match.
    pub fn host_routes(&self, authority: &str) -> Option<&HostRoutes> {
        let host = split_host_port(authority).0.to_ascii_lowercase();
        self.hosts
            .iter()
            .filter_map(|h| host_score(&h.host, &host).map(|s| (s, h)))
            .max_by_key(|(s, _)| *s)
            .map(|(_, h)| h)
    }

    /// First matching route of the request's host. `None`: the host has
    /// routes and none matches (Envoy answers 404); a host without routes
    /// gets [`Route::default_for`] from the caller.
    pub fn select<'a>(&'a self, r: &RequestInfo<'_>) -> Option<Selected<'a>> {
        let hr = self.host_routes(r.authority)?;
        hr.routes
            .iter()
            .find_map(|route| route.matching(r).map(|matched| Selected { route, matched }))
    }
}

#[cfg(test)]
mod tests;
