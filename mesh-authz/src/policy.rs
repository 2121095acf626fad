//! Compiled (validated) policies and the L4 matching rules ztunnel applies.
//! Built by mesh-model's config loader (or from mesh-proto messages).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use mesh_identity::Identity;

/// The effective mTLS mode of a workload port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MtlsMode {
    Strict,
    Permissive,
    Disable,
}

impl fmt::Display for MtlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MtlsMode::Strict => "STRICT",
            MtlsMode::Permissive => "PERMISSIVE",
            MtlsMode::Disable => "DISABLE",
        })
    }
}

/// AuthorizationPolicy action as enforced by the node (CUSTOM is refused at
/// load time).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Allow,
    Deny,
    Audit,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Allow => "ALLOW",
            Action::Deny => "DENY",
            Action::Audit => "AUDIT",
        })
    }
}

/// Istio's string match: `*` alone (any non-empty value), `*suffix`,
/// `prefix*`, or exact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StrMatch {
    Any,
    Prefix(String),
    Suffix(String),
    Exact(String),
}

impl StrMatch {
    /// Parses Istio's wildcard syntax; a `*` anywhere but at one end is refused.
    pub fn parse(s: &str) -> Result<StrMatch, String> {
        if s.is_empty() {
            return Err("empty value is not allowed".into());
        }
        if s == "*" {
            return Ok(StrMatch::Any);
        }
        let (m, rest) = if let Some(rest) = s.strip_prefix('*') {
            (StrMatch::Suffix(rest.to_string()), rest)
        } else if let Some(rest) = s.strip_suffix('*') {
            (StrMatch::Prefix(rest.to_string()), rest)
        } else {
            (StrMatch::Exact(s.to_string()), s)
        };
        if rest.contains('*') {
            return Err(format!(
                "{s:?}: a wildcard `*` is only allowed alone, at the start or at the end"
            ));
        }
        Ok(m)
    }

    pub fn matches(&self, v: &str) -> bool {
        match self {
            StrMatch::Any => !v.is_empty(),
            StrMatch::Prefix(p) => !v.is_empty() && v.starts_with(p.as_str()),
            StrMatch::Suffix(p) => !v.is_empty() && v.ends_with(p.as_str()),
            StrMatch::Exact(e) => v == e,
        }
    }
}

/// The L4 attributes of a connection that a rule is evaluated against.
pub struct Peer<'a> {
    pub identity: Option<&'a Identity>,
    /// `td/ns/x/sa/y`, empty for plaintext.
    pub principal: String,
    /// The identity's namespace, empty for plaintext.
    pub namespace: &'a str,
    pub src_ip: IpAddr,
    pub dst_ip: IpAddr,
    pub dst_port: u16,
}

/// Positive list must contain a match (if not empty) and the negative list
/// must not (if not empty). Plaintext peers match no principal or namespace,
/// so a `not...` list with them matches (as in ztunnel).
fn pos_neg<T>(pos: &[T], neg: &[T], mut f: impl FnMut(&T) -> bool) -> bool {
    (pos.is_empty() || pos.iter().any(&mut f)) && (neg.is_empty() || !neg.iter().any(&mut f))
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

impl SourceMatch {
    fn matches(&self, p: &Peer) -> bool {
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

impl OperationMatch {
    fn matches(&self, p: &Peer) -> bool {
        pos_neg(&self.ports, &self.not_ports, |port| *port == p.dst_port)
    }
}

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
    /// An HTTP (or otherwise non-L4) key: only reachable in DENY rules,
    /// where it is treated as matching (fail closed).
    NotL4,
}

impl Condition {
    fn matches(&self, p: &Peer) -> bool {
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
            Condition::NotL4 => true,
        }
    }
}

/// One `rules[i]` entry: `from` (any source) AND `to` (any operation) AND
/// every `when`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    pub from: Option<Vec<SourceMatch>>,
    pub to: Option<Vec<OperationMatch>>,
    pub when: Vec<Condition>,
    /// HTTP attributes found in the rule (`methods`, `request.headers[x]`, ...).
    pub http_attributes: Vec<String>,
}

impl Rule {
    fn matches(&self, action: Action, p: &Peer) -> bool {
        if !self.http_attributes.is_empty() && action != Action::Deny {
            // ztunnel: within an ALLOW policy a rule with HTTP attributes never
            // matches; in DENY the HTTP attributes are dropped (fail closed).
            return false;
        }
        self.from
            .as_ref()
            .is_none_or(|f| f.iter().any(|s| s.matches(p)))
            && self
                .to
                .as_ref()
                .is_none_or(|t| t.iter().any(|o| o.matches(p)))
            && self.when.iter().all(|c| c.matches(p))
    }
}

/// A validated AuthorizationPolicy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthzPolicy {
    pub name: String,
    pub namespace: String,
    /// `None`: every workload of the namespace (of the mesh, in the root namespace).
    pub selector: Option<BTreeMap<String, String>>,
    pub action: Action,
    pub rules: Vec<Rule>,
    /// False for `targetRef(s)` policies: they belong to waypoints/gateways.
    pub node_enforced: bool,
}

impl AuthzPolicy {
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn namespace(&self) -> &str {
        &self.namespace
    }
    pub fn action(&self) -> Action {
        self.action
    }
    /// The workload labels it selects; `None`: every workload of its namespace.
    pub fn selector(&self) -> Option<&BTreeMap<String, String>> {
        self.selector.as_ref()
    }
    /// `namespace/name`
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Whether the node enforces it on a workload of `namespace` with `labels`.
    pub fn applies_to(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
        root_namespace: &str,
    ) -> bool {
        self.node_enforced
            && (self.namespace == root_namespace || self.namespace == namespace)
            && self
                .selector
                .as_ref()
                .is_none_or(|sel| labels_match(sel, labels))
    }

    /// No rules: never matches (for ALLOW that makes it allow-nothing).
    pub fn matches(&self, p: &Peer) -> bool {
        self.rules.iter().any(|r| r.matches(self.action, p))
    }
}

/// A validated PeerAuthentication. `None` modes are UNSET (inherit).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerAuthnPolicy {
    pub name: String,
    pub namespace: String,
    pub selector: Option<BTreeMap<String, String>>,
    pub mode: Option<MtlsMode>,
    pub port_level: BTreeMap<u16, Option<MtlsMode>>,
}

impl PeerAuthnPolicy {
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The workload labels it selects; `None`: every workload of its namespace.
    pub fn selector(&self) -> Option<&BTreeMap<String, String>> {
        self.selector.as_ref()
    }
    /// The workload-wide mode; `None` is UNSET (inherited).
    pub fn mode(&self) -> Option<MtlsMode> {
        self.mode
    }
    pub fn namespace(&self) -> &str {
        &self.namespace
    }
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Every selector label is present with the same value.
pub fn labels_match(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}
