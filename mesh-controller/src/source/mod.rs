//! Config sources: a folder of YAML ([`folder`]) and the Kubernetes API
//! ([`kube`], kube-rs watches); both publish the same [`Snapshot`].

pub mod folder;
pub mod kube;

use std::collections::BTreeMap;
use std::path::PathBuf;

use mesh_node::config::Policy;

/// Where a resource was read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    /// Index of the YAML document in the file.
    pub doc: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    /// `spec.nodeName`; `None` while unscheduled.
    pub node: Option<String>,
    pub service_account: String,
    /// `status.podIP`; `None` until the pod has one.
    pub ip: Option<String>,
    /// Local mode: the `ambit.io/netns` annotation.
    pub netns: Option<String>,
    pub origin: Origin,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    pub name: Option<String>,
    pub port: i64,
    pub target_port: Option<i64>,
    pub protocol: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub namespace: String,
    /// Cluster IPs (empty for a headless service).
    pub addresses: Vec<String>,
    pub ports: Vec<ServicePort>,
    pub selector: BTreeMap<String, String>,
    pub origin: Origin,
}

/// One validated view of the cluster.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Increases with every accepted change (restarts at 1 with the process).
    pub version: u64,
    pub namespaces: BTreeMap<String, Namespace>,
    pub pods: Vec<Pod>,
    pub services: Vec<Service>,
    pub policies: Vec<(Policy, Origin)>,
    /// Kubernetes source: the ready endpoint addresses of each Service
    /// (`ns/name`) from its EndpointSlices. Empty for the folder source.
    /// Not used by translation yet (nodes select endpoints by selector).
    pub endpoints: BTreeMap<String, Vec<String>>,
}

impl Snapshot {
    /// Node names that have at least one scheduled pod.
    pub fn nodes(&self) -> Vec<String> {
        let mut v: Vec<String> = self.pods.iter().filter_map(|p| p.node.clone()).collect();
        v.sort();
        v.dedup();
        v
    }
}
