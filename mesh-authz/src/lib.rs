//! The one authorization engine: compiled PeerAuthentication and
//! AuthorizationPolicy, their matchers, and the DENY → ALLOW → implicit-deny
//! order (with AUDIT), as ztunnel enforces them.
//!
//! AuthorizationPolicy semantics (Istio):
//! - A policy applies to a workload if it is in the workload's namespace, or
//!   in the root namespace (mesh-wide), and its `selector.matchLabels` (if
//!   any) are all among the workload's labels. `targetRef(s)` policies belong
//!   to waypoints/gateways and are not enforced here.
//! - Evaluation: any matching DENY policy denies; otherwise, if any ALLOW
//!   policy applies, one of them must match (else implicit deny); otherwise
//!   allow. AUDIT policies never change the decision; the first one that
//!   matches is reported in [`Decision::audit`]. CUSTOM is refused at load.
//! - A rule matches if any `from.source` matches, any `to.operation` matches
//!   and every `when` condition holds; absent parts match everything. A
//!   policy without rules matches nothing (`spec: {}` is allow-nothing).
//! - Plaintext peers carry no identity: positive `principals`/`namespaces`
//!   never match them, negative ones (`notPrincipals`, ...) do.
//! - HTTP attributes (`methods`, `paths`, `hosts`, `requestPrincipals`,
//!   `request.*` conditions, ...) cannot be seen at L4: an ALLOW (or AUDIT)
//!   rule that uses them never matches; a DENY rule is enforced without them
//!   (both more restrictive than requested, as in ztunnel). The config loader
//!   reports a warning for each such rule.
//! - `remoteIpBlocks`/`remote.ip` are matched against the connection's source
//!   address (at L4 the direct peer is the remote).

mod policy;

use std::fmt;

pub use policy::{
    labels_match, Action, AuthzPolicy, Condition, MtlsMode, OperationMatch, Peer, PeerAuthnPolicy,
    Rule, SourceMatch, StrMatch,
};

/// Why a connection was allowed or denied. Policies are named `namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// No ALLOW or DENY policy applies to the destination.
    NoPolicies,
    /// This ALLOW policy matched.
    AllowedBy(String),
    /// This DENY policy matched.
    DeniedBy(String),
    /// ALLOW policies apply (listed) and none matched: implicit deny.
    NoAllowMatch(Vec<String>),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NoPolicies => write!(f, "allowed: no authorization policy applies"),
            Reason::AllowedBy(p) => write!(f, "allowed by ALLOW policy {p}"),
            Reason::DeniedBy(p) => write!(f, "denied by DENY policy {p}"),
            Reason::NoAllowMatch(ps) => write!(
                f,
                "denied: no ALLOW policy matched (applicable: {})",
                ps.join(", ")
            ),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: Reason,
    /// The first AUDIT policy (`namespace/name`) that matched, to be logged.
    pub audit: Option<String>,
}

impl Decision {
    /// The policy that decided (`namespace/name`), if one did.
    pub fn policy(&self) -> Option<&str> {
        match &self.reason {
            Reason::AllowedBy(p) | Reason::DeniedBy(p) => Some(p),
            _ => None,
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.reason)?;
        if let Some(a) = &self.audit {
            write!(f, " (audited by {a})")?;
        }
        Ok(())
    }
}

/// Decides a connection with attributes `peer` against the policies that
/// apply to its destination: any matching DENY denies; else, if ALLOW
/// policies apply, one must match; else allow. AUDIT never decides.
pub fn evaluate<'p>(
    applicable: impl IntoIterator<Item = &'p AuthzPolicy>,
    peer: &Peer,
) -> Decision {
    let applicable: Vec<&AuthzPolicy> = applicable.into_iter().collect();
    let audit = applicable
        .iter()
        .find(|p| p.action == Action::Audit && p.matches(peer))
        .map(|p| p.key());

    if let Some(deny) = applicable
        .iter()
        .find(|p| p.action == Action::Deny && p.matches(peer))
    {
        return Decision {
            allowed: false,
            reason: Reason::DeniedBy(deny.key()),
            audit,
        };
    }

    let allows: Vec<&&AuthzPolicy> = applicable
        .iter()
        .filter(|p| p.action == Action::Allow)
        .collect();
    if allows.is_empty() {
        return Decision {
            allowed: true,
            reason: Reason::NoPolicies,
            audit,
        };
    }
    match allows.iter().find(|p| p.matches(peer)) {
        Some(p) => Decision {
            allowed: true,
            reason: Reason::AllowedBy(p.key()),
            audit,
        },
        None => Decision {
            allowed: false,
            reason: Reason::NoAllowMatch(allows.iter().map(|p| p.key()).collect()),
            audit,
        },
    }
}

#[cfg(test)]
mod tests;
