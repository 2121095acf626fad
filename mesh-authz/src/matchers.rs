//! A rule's `from.source` and `to.operation` matchers: the L4 ones (all the
//! node can see) and the request ones, their superset for the waypoint.

use ipnet::IpNet;

use crate::attributes::Attributes;
use crate::path::normalized_path;
use crate::strmatch::{pos_neg, StrMatch};

/// A part of a rule matched against what is being authorized.
pub trait Match {
    fn matches(&self, a: &Attributes) -> bool;
    /// Whether it needs HTTP attributes; without them it is not evaluated
    /// (see [`crate::Rule`]).
    fn uses_http(&self) -> bool {
        false
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceMatch {
    pub principals: Vec<StrMatch>,
    pub not_principals: Vec<StrMatch>,
    pub namespaces: Vec<StrMatch>,
    pub not_namespaces: Vec<StrMatch>,
    /// (namespace, service account)
    pub service_accounts: Vec<(String, String)>,
    pub not_service_accounts: Vec<(String, String)>,
    pub ip_blocks: Vec<IpNet>,
    pub not_ip_blocks: Vec<IpNet>,
    /// At L4 the remote is the direct peer: matched against the source IP.
    pub remote_ip_blocks: Vec<IpNet>,
    pub not_remote_ip_blocks: Vec<IpNet>,
}

impl Match for SourceMatch {
    fn matches(&self, a: &Attributes) -> bool {
        let p = &a.peer;
        let sa = |(ns, sa): &(String, String)| {
            p.identity
                .is_some_and(|id| &id.namespace == ns && &id.service_account == sa)
        };
        pos_neg(&self.principals, &self.not_principals, |m| {
            m.matches(&p.principal)
        }) && pos_neg(&self.namespaces, &self.not_namespaces, |m| {
            m.matches(p.namespace)
        }) && pos_neg(&self.service_accounts, &self.not_service_accounts, sa)
            && pos_neg(&self.ip_blocks, &self.not_ip_blocks, |n| {
                n.contains(&p.src_ip)
            })
            && pos_neg(&self.remote_ip_blocks, &self.not_remote_ip_blocks, |n| {
                n.contains(&p.src_ip)
            })
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OperationMatch {
    pub ports: Vec<u16>,
    pub not_ports: Vec<u16>,
}

impl Match for OperationMatch {
    fn matches(&self, a: &Attributes) -> bool {
        pos_neg(&self.ports, &self.not_ports, |port| {
            *port == a.peer.dst_port
        })
    }
}

/// A `from.source` with the request's attributes: the L4 source and the
/// token's principal (`requestPrincipals`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestSourceMatch {
    pub l4: SourceMatch,
    pub request_principals: Vec<StrMatch>,
    pub not_request_principals: Vec<StrMatch>,
}

impl Match for RequestSourceMatch {
    fn matches(&self, a: &Attributes) -> bool {
        self.l4.matches(a)
            && a.http.as_ref().is_none_or(|h| {
                pos_neg(
                    &self.request_principals,
                    &self.not_request_principals,
                    |m| m.matches(h.request_principal),
                )
            })
    }

    fn uses_http(&self) -> bool {
        !self.request_principals.is_empty() || !self.not_request_principals.is_empty()
    }
}

/// A `to.operation` with the request's attributes: the L4 operation (ports)
/// and `hosts`, `methods` and `paths`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestOperationMatch {
    pub l4: OperationMatch,
    /// Lowercased.
    pub hosts: Vec<StrMatch>,
    pub not_hosts: Vec<StrMatch>,
    pub methods: Vec<StrMatch>,
    pub not_methods: Vec<StrMatch>,
    /// Matched against the normalized path ([`normalized_path`]).
    pub paths: Vec<StrMatch>,
    pub not_paths: Vec<StrMatch>,
}

impl Match for RequestOperationMatch {
    fn matches(&self, a: &Attributes) -> bool {
        if !self.l4.matches(a) {
            return false;
        }
        let Some(h) = &a.http else {
            return true;
        };
        let host = h.host.to_ascii_lowercase();
        let host_port = format!("{host}:{}", a.peer.dst_port);
        // Port-insensitive: `example.com` matches with or without a port,
        // `example.com:8080` only with it.
        let host_hit = |m: &StrMatch| m.matches(&host) || m.matches(&host_port);
        let path = normalized_path(h.path);
        pos_neg(&self.hosts, &self.not_hosts, host_hit)
            && pos_neg(&self.methods, &self.not_methods, |m| m.matches(h.method))
            && pos_neg(&self.paths, &self.not_paths, |m| m.matches(&path))
    }

    fn uses_http(&self) -> bool {
        [
            &self.hosts,
            &self.not_hosts,
            &self.methods,
            &self.not_methods,
            &self.paths,
            &self.not_paths,
        ]
        .iter()
        .any(|v| !v.is_empty())
    }
}
