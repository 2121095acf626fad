//! A rule's `when` conditions.

use http::header::HeaderName;
use ipnet::IpNet;

use crate::attributes::Attributes;
use crate::matchers::Match;
use crate::strmatch::{pos_neg, StrMatch};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    /// `source.ip` and `remote.ip`
    SourceIp {
        values: Vec<IpNet>,
        not: Vec<IpNet>,
    },
    DestinationIp {
        values: Vec<IpNet>,
        not: Vec<IpNet>,
    },
    DestinationPort {
        values: Vec<u16>,
        not: Vec<u16>,
    },
    SourceNamespace {
        values: Vec<StrMatch>,
        not: Vec<StrMatch>,
    },
    SourcePrincipal {
        values: Vec<StrMatch>,
        not: Vec<StrMatch>,
    },
    /// An HTTP (or otherwise non-L4) key compiled for L4 only: only
    /// reachable in DENY rules, where it is treated as matching (fail closed).
    NotL4,
    /// `request.headers[name]`: repeated headers joined with commas, as Envoy does.
    RequestHeader {
        name: HeaderName,
        values: Vec<StrMatch>,
        not: Vec<StrMatch>,
    },
    /// `request.auth.principal`
    RequestPrincipal {
        values: Vec<StrMatch>,
        not: Vec<StrMatch>,
    },
    /// `request.auth.claims[a][b]` (path `["a", "b"]`);
    /// `request.auth.audiences` is `["aud"]`, `request.auth.presenter` `["azp"]`.
    RequestClaim {
        path: Vec<String>,
        values: Vec<StrMatch>,
        not: Vec<StrMatch>,
    },
    /// A key the engine cannot evaluate (`connection.sni`, ...): its rule
    /// never matches in ALLOW and AUDIT, and in DENY it holds (fail closed).
    Unsupported {
        key: String,
    },
}

impl Condition {
    pub fn is_unsupported(&self) -> bool {
        matches!(self, Condition::Unsupported { .. })
    }
}

impl Match for Condition {
    fn matches(&self, a: &Attributes) -> bool {
        let p = &a.peer;
        match self {
            Condition::SourceIp { values, not } => pos_neg(values, not, |n| n.contains(&p.src_ip)),
            Condition::DestinationIp { values, not } => {
                pos_neg(values, not, |n| n.contains(&p.dst_ip))
            }
            Condition::DestinationPort { values, not } => {
                pos_neg(values, not, |port| *port == p.dst_port)
            }
            Condition::SourceNamespace { values, not } => {
                pos_neg(values, not, |m| m.matches(p.namespace))
            }
            Condition::SourcePrincipal { values, not } => {
                pos_neg(values, not, |m| m.matches(&p.principal))
            }
            Condition::NotL4 | Condition::Unsupported { .. } => true,
            // Without HTTP attributes they are not evaluated (see `Rule`).
            Condition::RequestHeader { name, values, not } => a.http.as_ref().is_none_or(|h| {
                let all: Vec<&str> = h
                    .headers
                    .get_all(name)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect();
                let joined = (!all.is_empty()).then(|| all.join(","));
                pos_neg(values, not, |m| {
                    joined.as_deref().is_some_and(|v| m.matches(v))
                })
            }),
            Condition::RequestPrincipal { values, not } => a
                .http
                .as_ref()
                .is_none_or(|h| pos_neg(values, not, |m| m.matches(h.request_principal))),
            Condition::RequestClaim { path, values, not } => a.http.as_ref().is_none_or(|h| {
                let got = h.claims.claim(path);
                pos_neg(values, not, |m| got.iter().any(|v| m.matches(v)))
            }),
        }
    }

    fn uses_http(&self) -> bool {
        matches!(
            self,
            Condition::RequestHeader { .. }
                | Condition::RequestPrincipal { .. }
                | Condition::RequestClaim { .. }
        )
    }
}
