//! Cluster snapshot -> the xDS resources of one node.
//!
//! A node receives:
//! * its own pods, with their netns path (local mode);
//! * the other pods of ambient namespaces (or pods opted in by label),
//!   without their netns path: enough to resolve and authenticate peers;
//! * every Service of an ambient namespace;
//! * the PeerAuthentications and AuthorizationPolicies that can select one
//!   of its pods (same namespace, or the root namespace), and
//! * the namespaces all of those live in, plus the mesh settings.
//!
//! Each resource is versioned by a hash of its encoded bytes, so an
//! unchanged resource keeps its version across snapshots and restarts.

use std::collections::{BTreeMap, BTreeSet};

use mesh_node::config::{NamespaceSpec, Policy, WorkloadSpec};
use mesh_node::state::DATAPLANE_MODE_LABEL;
use mesh_node::xds::convert;
use mesh_proto::ambit::v1 as pb;
use mesh_proto::type_urls;
use prost::Message;

use crate::source::folder::service_spec;
use crate::source::{Pod, Snapshot};

/// Mesh-wide settings sent to every node.
#[derive(Clone, Debug)]
pub struct MeshSettings {
    pub trust_domain: String,
    pub root_namespace: String,
    pub cluster_domain: String,
}

impl Default for MeshSettings {
    fn default() -> Self {
        MeshSettings {
            trust_domain: "cluster.local".into(),
            root_namespace: "istio-system".into(),
            cluster_domain: "cluster.local".into(),
        }
    }
}

/// One resource as served.
#[derive(Clone, Debug, PartialEq)]
pub struct Versioned {
    pub version: String,
    pub resource: prost_types::Any,
}

/// type URL -> resource name -> resource.
pub type NodeResources = BTreeMap<&'static str, BTreeMap<String, Versioned>>;

/// FNV-1a, 64 bits: stable across runs and builds.
fn fnv64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn versioned(type_url: &str, bytes: Vec<u8>) -> Versioned {
    Versioned {
        version: format!("{:016x}", fnv64(&bytes)),
        resource: prost_types::Any {
            type_url: type_url.to_string(),
            value: bytes,
        },
    }
}

fn is_ambient(pod: &Pod, snap: &Snapshot) -> bool {
    match pod.labels.get(DATAPLANE_MODE_LABEL).map(String::as_str) {
        Some("ambient") => true,
        Some("none") => false,
        _ => namespace_is_ambient(&pod.namespace, snap),
    }
}

fn namespace_is_ambient(ns: &str, snap: &Snapshot) -> bool {
    snap.namespaces
        .get(ns)
        .and_then(|n| n.labels.get(DATAPLANE_MODE_LABEL))
        .is_some_and(|v| v == "ambient")
}

fn selects(selector: Option<&BTreeMap<String, String>>, labels: &BTreeMap<String, String>) -> bool {
    selector.is_none_or(|s| s.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

fn workload_spec(p: &Pod) -> Option<WorkloadSpec> {
    Some(WorkloadSpec {
        name: p.name.clone(),
        namespace: p.namespace.clone(),
        service_account: Some(p.service_account.clone()),
        node: p.node.clone()?,
        ip: p.ip.clone()?,
        netns: p.netns.clone(),
        labels: p.labels.clone(),
    })
}

/// The resources node `node` should hold.
pub fn for_node(snap: &Snapshot, node: &str, mesh: &MeshSettings) -> NodeResources {
    let mut out = NodeResources::new();
    let mut namespaces: BTreeSet<String> = BTreeSet::new();
    namespaces.insert(mesh.root_namespace.clone());

    let mesh_cfg = pb::MeshConfig {
        trust_domain: mesh.trust_domain.clone(),
        root_namespace: mesh.root_namespace.clone(),
        cluster_domain: mesh.cluster_domain.clone(),
    };
    out.entry(type_urls::MESH_CONFIG).or_default().insert(
        "mesh".into(),
        versioned(type_urls::MESH_CONFIG, mesh_cfg.encode_to_vec()),
    );

    // Workloads.
    let local: Vec<&Pod> = snap
        .pods
        .iter()
        .filter(|p| p.node.as_deref() == Some(node) && p.ip.is_some())
        .collect();
    let workloads = out.entry(type_urls::WORKLOAD).or_default();
    for p in &snap.pods {
        let Some(spec) = workload_spec(p) else {
            continue;
        };
        let mine = spec.node == node;
        if !mine && !is_ambient(p, snap) {
            continue;
        }
        namespaces.insert(p.namespace.clone());
        let msg = convert::workload_to_proto(&spec, &mesh.trust_domain, mine);
        workloads.insert(
            format!("{}/{}", p.namespace, p.name),
            versioned(type_urls::WORKLOAD, msg.encode_to_vec()),
        );
    }

    // Services of ambient namespaces.
    let services = out.entry(type_urls::SERVICE).or_default();
    for s in &snap.services {
        if s.addresses.is_empty() || !namespace_is_ambient(&s.namespace, snap) {
            continue;
        }
        namespaces.insert(s.namespace.clone());
        let msg = convert::service_to_proto(&service_spec(s));
        services.insert(
            format!("{}/{}", s.namespace, s.name),
            versioned(type_urls::SERVICE, msg.encode_to_vec()),
        );
    }

    // Policies that may select a local pod.
    let local_ns: BTreeSet<&str> = local.iter().map(|p| p.namespace.as_str()).collect();
    for (policy, _) in &snap.policies {
        let m = policy.metadata();
        let ns = m.namespace.as_deref().unwrap_or("default");
        let root = ns == mesh.root_namespace;
        if !root && !local_ns.contains(ns) {
            continue;
        }
        let selector = match policy {
            Policy::PeerAuthentication(p) => p.spec.selector.as_ref(),
            Policy::AuthorizationPolicy(p) => p.spec.selector.as_ref(),
        }
        .map(|s| &s.match_labels);
        let applies = local
            .iter()
            .any(|p| (root || p.namespace == ns) && selects(selector, &p.labels));
        // Root-namespace policies without a selector are mesh-wide: always sent.
        if !(applies || (root && selector.is_none())) {
            continue;
        }
        namespaces.insert(ns.to_string());
        let any = convert::policy_to_any(policy);
        let ty = match policy {
            Policy::PeerAuthentication(_) => type_urls::PEER_AUTHENTICATION,
            Policy::AuthorizationPolicy(_) => type_urls::AUTHORIZATION,
        };
        out.entry(ty)
            .or_default()
            .insert(format!("{ns}/{}", m.name), versioned(ty, any.value));
    }

    let nss = out.entry(type_urls::NAMESPACE).or_default();
    for name in namespaces {
        let labels = snap
            .namespaces
            .get(&name)
            .map(|n| n.labels.clone())
            .unwrap_or_default();
        let msg = convert::namespace_to_proto(&NamespaceSpec {
            name: name.clone(),
            labels,
        });
        nss.insert(name, versioned(type_urls::NAMESPACE, msg.encode_to_vec()));
    }
    for ty in type_urls::ALL {
        out.entry(*ty).or_default();
    }
    out
}

/// The identities (`ns`, `sa`) of the pods scheduled on `node`.
pub fn node_identities(snap: &Snapshot, node: &str) -> BTreeSet<(String, String)> {
    snap.pods
        .iter()
        .filter(|p| p.node.as_deref() == Some(node))
        .map(|p| (p.namespace.clone(), p.service_account.clone()))
        .collect()
}
