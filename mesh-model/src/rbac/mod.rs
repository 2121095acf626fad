//! L4 policy on the node: which mTLS mode a workload port requires, and
//! whether a connection may reach its workload. The matchers and the
//! decision order are mesh-authz's; this module supplies the node's
//! attributes (no HTTP fields) and the policies that apply.

use std::net::IpAddr;

use mesh_authz::labels_match;
pub use mesh_authz::{Action, AuthzPolicy, Decision, MtlsMode, PeerAuthnPolicy, Reason};

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

/// Decides whether `conn` may reach its destination workload.
pub fn authorize(state: &ProxyState, conn: &ConnectionInfo) -> Decision {
    let peer = mesh_authz::Peer {
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
        .filter(|p| {
            p.applies_to(
                &conn.dst_workload.namespace,
                &conn.dst_workload.labels,
                root,
            )
        })
        .collect();

    mesh_authz::evaluate(applicable, &peer.into())
}
