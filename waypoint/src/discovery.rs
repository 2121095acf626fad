//! Where the endpoints of a destination host come from, and who a caller is.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::RwLock;

/// Labels of a workload (`version: v1`, `app: reviews`, …).
pub type Labels = BTreeMap<String, String>;

/// A workload's name, namespace and SPIFFE principal, when discovery
/// knows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadInfo {
    pub name: String,
    pub namespace: String,
    /// `spiffe://…`, as Istio's `*_principal` labels.
    pub principal: String,
}

/// One backend of a destination host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub labels: Labels,
}

impl Endpoint {
    pub fn new(addr: SocketAddr, labels: &[(&str, &str)]) -> Self {
        Endpoint {
            addr,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// Every label of `selector` is on this endpoint (an empty selector
    /// selects everything), as DestinationRule subsets select.
    pub fn matches(&self, selector: &Labels) -> bool {
        selector.iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }
}

/// The waypoint's view of the mesh: endpoints by destination host and the
/// labels of a calling workload (for `sourceLabels` matches).
pub trait Discovery: Send + Sync + 'static {
    /// The endpoints of `host` (as a route's destination names it). `port`
    /// is the destination's port when the route or the request gave one;
    /// implementations may use it to choose the target port.
    fn endpoints(&self, host: &str, port: Option<u16>) -> Vec<Endpoint>;

    /// The labels of the workload at `ip` (empty when unknown).
    fn source_labels(&self, _ip: IpAddr) -> Labels {
        Labels::new()
    }

    /// The name, namespace and principal of the workload at `ip`, for
    /// metrics labels (`None` when unknown).
    fn workload(&self, _ip: IpAddr) -> Option<std::sync::Arc<WorkloadInfo>> {
        None
    }
}

/// A fixed table, changeable at run time; for tests and the local mode.
#[derive(Default)]
pub struct StaticDiscovery {
    hosts: RwLock<HashMap<String, Vec<Endpoint>>>,
    sources: RwLock<HashMap<IpAddr, Labels>>,
}

impl StaticDiscovery {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the endpoints of `host`.
    pub fn set(&self, host: &str, endpoints: Vec<Endpoint>) {
        let mut h = self.hosts.write().unwrap_or_else(|e| e.into_inner());
        h.insert(host.to_string(), endpoints);
    }

    /// Builder form of [`StaticDiscovery::set`].
    pub fn with(self, host: &str, endpoints: Vec<Endpoint>) -> Self {
        self.set(host, endpoints);
        self
    }

    /// Declares the labels of the workload calling from `ip`.
    pub fn set_source(&self, ip: IpAddr, labels: Labels) {
        let mut s = self.sources.write().unwrap_or_else(|e| e.into_inner());
        s.insert(ip, labels);
    }
}

impl Discovery for StaticDiscovery {
    fn endpoints(&self, host: &str, _port: Option<u16>) -> Vec<Endpoint> {
        let h = self.hosts.read().unwrap_or_else(|e| e.into_inner());
        h.get(host).cloned().unwrap_or_default()
    }

    fn source_labels(&self, ip: IpAddr) -> Labels {
        let s = self.sources.read().unwrap_or_else(|e| e.into_inner());
        s.get(&ip).cloned().unwrap_or_default()
    }
}
