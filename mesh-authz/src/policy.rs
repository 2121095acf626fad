//! Compiled policies: AuthorizationPolicy with its rules, and
//! PeerAuthentication. Built by mesh-model's config loader (L4) or the
//! waypoint (with the request's attributes).

use crate::attributes::Attributes;
use crate::condition::Condition;
use crate::matchers::{
    Match, OperationMatch, RequestOperationMatch, RequestSourceMatch, SourceMatch,
};
use std::collections::BTreeMap;
use std::fmt;

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

/// One `rules[i]` entry: `from` (any source) AND `to` (any operation) AND
/// every `when`. `S` and `O` are the L4 matchers (the node's) or the
/// request ones ([`RequestRule`], the waypoint's).
///
/// Evaluated without HTTP attributes (at L4), a rule that uses them never
/// matches in ALLOW and AUDIT, and in DENY it is enforced without them
/// (as ztunnel: both fail closed). A rule with an
/// [`Condition::Unsupported`] key never matches in ALLOW and AUDIT, and in
/// DENY it is enforced without that key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rule<S = SourceMatch, O = OperationMatch> {
    pub from: Option<Vec<S>>,
    pub to: Option<Vec<O>>,
    pub when: Vec<Condition>,
    /// HTTP attributes found in the rule (`methods`, `request.headers[x]`, ...)
    /// by a compiler for L4 that left them out of the matchers.
    pub http_attributes: Vec<String>,
}

/// A rule with the request's attributes (the waypoint's).
pub type RequestRule = Rule<RequestSourceMatch, RequestOperationMatch>;

impl<S: Match, O: Match> Rule<S, O> {
    /// Whether the rule needs HTTP attributes to be evaluated in full.
    fn uses_http(&self) -> bool {
        !self.http_attributes.is_empty()
            || self.from.iter().flatten().any(Match::uses_http)
            || self.to.iter().flatten().any(Match::uses_http)
            || self.when.iter().any(Match::uses_http)
    }

    fn matches(&self, action: Action, a: &Attributes) -> bool {
        if action != Action::Deny
            && ((a.http.is_none() && self.uses_http())
                || self.when.iter().any(Condition::is_unsupported))
        {
            return false;
        }
        self.from
            .as_ref()
            .is_none_or(|f| f.iter().any(|s| s.matches(a)))
            && self
                .to
                .as_ref()
                .is_none_or(|t| t.iter().any(|o| o.matches(a)))
            && self.when.iter().all(|c| c.matches(a))
    }
}

/// A validated AuthorizationPolicy (of [`RequestRule`]s: [`RequestPolicy`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthzPolicy<S = SourceMatch, O = OperationMatch> {
    pub name: String,
    pub namespace: String,
    /// `None`: every workload of the namespace (of the mesh, in the root namespace).
    pub selector: Option<BTreeMap<String, String>>,
    pub action: Action,
    pub rules: Vec<Rule<S, O>>,
    /// False for `targetRef(s)` policies: they belong to waypoints/gateways.
    pub node_enforced: bool,
}

impl<S: Match, O: Match> AuthzPolicy<S, O> {
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
    pub fn matches(&self, a: &Attributes) -> bool {
        self.rules.iter().any(|r| r.matches(self.action, a))
    }
}

/// A policy with the request's attributes (the waypoint's).
pub type RequestPolicy = AuthzPolicy<RequestSourceMatch, RequestOperationMatch>;

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
