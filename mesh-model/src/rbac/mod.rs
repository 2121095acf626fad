//! L4 policy as ztunnel enforces it: PeerAuthentication (which mTLS mode a
//! workload port requires) and AuthorizationPolicy (may this peer connect).
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
use std::net::IpAddr;

pub(crate) use policy::{labels_match, Condition, OperationMatch, Rule, SourceMatch, StrMatch};
pub use policy::{Action, AuthzPolicy, MtlsMode, PeerAuthnPolicy};

use crate::state::{ProxyState, Workload};
use mesh_identity::Identity;

/// The mTLS mode required on `port` (the workload's own port, i.e. a
/// service's targetPort) of `workload`.
///
/// Precedence: a workload-selector policy in the workload's namespace, then
/// the namespace-wide policy, then the mesh-wide policy (root namespace, no
/// selector). UNSET inherits from the next level; nothing set is PERMISSIVE.
/// `portLevelMtls` of the selector policy overrides per port (UNSET there
/// inherits the workload's mode). Where several policies compete at one
/// level the first in the file wins (Istio: the oldest).
pub fn peer_authentication_mode(state: &ProxyState, workload: &Workload, port: u16) -> MtlsMode {
    let root = state.root_namespace();
    let pas = state.peer_authentications();
    let workload_level = pas.iter().find(|p| {
        p.namespace == workload.namespace
            && p.selector
                .as_ref()
                .is_some_and(|s| labels_match(s, &workload.labels))
    });
    let namespace_level = pas
        .iter()
        .find(|p| p.namespace == workload.namespace && p.selector.is_none());
    let mesh_level = pas
        .iter()
        .find(|p| p.namespace == root && p.selector.is_none());

    let inherited = [namespace_level, mesh_level]
        .into_iter()
        .flatten()
        .find_map(|p| p.mode)
        .unwrap_or(MtlsMode::Permissive);
    let workload_mode = workload_level.and_then(|p| p.mode).unwrap_or(inherited);
    workload_level
        .and_then(|p| p.port_level.get(&port).copied().flatten())
        .unwrap_or(workload_mode)
}

/// The connection being authorized, on the destination's node.
#[derive(Clone, Debug)]
pub struct ConnectionInfo<'a> {
    /// The peer's SPIFFE identity (from its mTLS certificate); `None` for plaintext.
    pub src_identity: Option<Identity>,
    pub src_ip: IpAddr,
    pub dst_workload: &'a Workload,
    /// The workload port connected to (a service's targetPort).
    pub dst_port: u16,
}

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

/// Decides whether `conn` may reach its destination workload.
pub fn authorize(state: &ProxyState, conn: &ConnectionInfo) -> Decision {
    let peer = policy::Peer {
        identity: conn.src_identity.as_ref(),
        principal: conn
            .src_identity
            .as_ref()
            .map(|i| i.principal())
            .unwrap_or_default(),
        namespace: conn
            .src_identity
            .as_ref()
            .map(|i| i.namespace.as_str())
            .unwrap_or_default(),
        src_ip: conn.src_ip,
        dst_ip: conn.dst_workload.ip,
        dst_port: conn.dst_port,
    };
    let root = state.root_namespace();
    let applicable: Vec<&AuthzPolicy> = state
        .authorization_policies()
        .iter()
        .filter(|p| p.applies_to(conn.dst_workload, root))
        .collect();

    let audit = applicable
        .iter()
        .find(|p| p.action == Action::Audit && p.matches(&peer))
        .map(|p| p.key());

    if let Some(deny) = applicable
        .iter()
        .find(|p| p.action == Action::Deny && p.matches(&peer))
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
    match allows.iter().find(|p| p.matches(&peer)) {
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
