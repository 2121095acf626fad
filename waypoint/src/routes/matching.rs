//! Request matching: what a request looks like to the matcher
//! ([`RequestInfo`]) and one `match` entry ([`RequestMatch`]) of Istio's
//! string, header, query, method, port and source-label conditions.

use http::header::{HeaderMap, HeaderName};
use http::Method;
use mesh_api::networking::{HttpMatchRequest, StringMatch};
use regex::Regex;

use crate::discovery::Labels;

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

pub(super) fn anchored(re: &str, ignore_case: bool) -> Result<Regex, String> {
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

    pub(super) fn from_istio(m: &HttpMatchRequest) -> Result<Self, String> {
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
