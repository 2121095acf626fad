//! Gateway API HTTPRoute rules compiled into routes: one route per match,
//! ordered by Gateway API precedence, filters applied.

use bytes::Bytes;
use http::header::HeaderName;
use http::StatusCode;
use mesh_api::gateway_api::{
    HeaderMatchType, HttpHeaderMatch, HttpRouteFilter, HttpRouteSpec, PathMatchType,
};
use serde_yaml::Value;

use super::matching::{anchored, RequestMatch, StrMatch};
use super::route::{Action, PathRewrite, Redirect, Rewrite, Route, WeightedDestination};
use crate::destination::DestinationRef;
use crate::headers::{HeaderOps, HeaderRules};
use crate::issue::Issue;
use crate::mirror::MirrorPolicy;
use crate::resilience::{route_timeout, RetryPolicy};

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
pub(super) fn compile_http_route(
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
