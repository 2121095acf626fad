//! One compiled route: its matches, its action (forward to weighted
//! destinations, redirect, direct response) and what it does on the way
//! (rewrite, header operations, timeout, retries, fault, mirrors),
//! compiled from a VirtualService `http` route.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use mesh_api::networking::HttpRoute;
use rand::Rng;
use regex::Regex;

use super::binding::Binding;
use super::matching::{split_host_port, RequestInfo, RequestMatch, StrMatch};
use crate::destination::DestinationRef;
use crate::fault::FaultPolicy;
use crate::headers::HeaderRules;
use crate::mirror::MirrorPolicy;
use crate::resilience::{route_timeout, RetryPolicy};

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
    pub(super) fn from_istio(
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
