//! The data path: per-pod listeners and what they do with each connection.
//!
//! - [`outbound`]: 15001, connections the kernel captured from the pod's apps
//! - [`inbound`]: 15008, HBONE tunnels from other pods' proxies
//! - [`inbound_passthrough`]: 15006, plaintext steered in by sk_lookup
//! - [`delivery`]: where both inbound paths deliver in the pod (never a mesh port)
//! - [`connection_manager`]: the open inbound connections, re-authorized on
//!   every config change (those now denied are closed)
//!
//! Each pod's listeners share one [`PodContext`]: its identity, its netns
//! (every socket the proxy opens for the pod is opened there), its HBONE
//! client pool, and the node's current state.

pub mod connection_manager;
pub mod delivery;
pub mod inbound;
pub mod inbound_passthrough;
pub mod outbound;

mod copy;
mod metrics;

use std::net::IpAddr;
use std::sync::Arc;

use tokio::sync::watch;

use crate::inpod::PodNetns;
use mesh_hbone::HboneClient;
use mesh_identity::{CertStore, Identity};
use mesh_model::state::ProxyState;

pub use connection_manager::{AdmittedConnection, ConnectionManager, Transport};
pub use copy::relay;
pub use delivery::MeshPorts;
pub use metrics::{ConnectionTracker, Metrics, METRICS_CONTENT_TYPE};

/// Everything a pod's listeners need.
pub struct PodContext {
    pub name: String,
    pub namespace: String,
    pub ip: IpAddr,
    /// The ports mesh-node listens on in this pod: never delivered to.
    pub mesh_ports: MeshPorts,
    pub identity: Identity,
    pub netns: Arc<PodNetns>,
    pub hbone: HboneClient,
    pub certs: Arc<CertStore>,
    pub state: watch::Receiver<Arc<ProxyState>>,
    pub metrics: Arc<Metrics>,
    /// The node's open inbound connections, closed when a config change
    /// denies them.
    pub connections: Arc<ConnectionManager>,
    /// Becomes true when mesh-node starts draining (SIGTERM) or the pod leaves.
    pub drain: watch::Receiver<bool>,
}

impl PodContext {
    pub fn state(&self) -> Arc<ProxyState> {
        self.state.borrow().clone()
    }
}

/// The source workload's metadata for the peer's metrics, as ztunnel sends it.
pub fn baggage(ctx: &PodContext) -> String {
    format!(
        "k8s.cluster.name=Kubernetes,k8s.namespace.name={},k8s.pod.name={}",
        ctx.namespace, ctx.name
    )
}

/// Resolves once `drain` turns true (or its sender is gone).
pub async fn drained(drain: &mut watch::Receiver<bool>) {
    // The borrow guard is dropped before returning, so callers stay `Send`.
    let _ = drain.wait_for(|d| *d).await.map(|_| ());
}
