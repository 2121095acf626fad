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
//! A waypoint (node id `waypoint~<ns>~<name>`, see
//! [`mesh_proto::waypoint_id`]) receives what every node receives (the
//! ambient workloads and services of the whole mesh, the namespaces, the
//! mesh-wide policies), its own pod with its netns path, and the L7
//! resources ([`type_urls::L7_RESOURCE`]) of its namespace and of the root
//! namespace. Nodes never receive L7 resources.
//!
//! Each resource is versioned by a hash of its encoded bytes, so an
//! unchanged resource keeps its version across snapshots and restarts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use mesh_api::labels::{
    DATAPLANE_MODE_AMBIENT, DATAPLANE_MODE_LABEL, DATAPLANE_MODE_NONE, ROOT_NAMESPACE,
};
use mesh_proto::ambit::v1 as pb;
use mesh_proto::encoded::encode_resource;
use mesh_proto::envoy::service::discovery::v3::Resource;
use mesh_proto::type_urls;
use prost::Message;

use crate::source::{L7Object, Pod, Snapshot};
use crate::to_proto;

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
            root_namespace: ROOT_NAMESPACE.into(),
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

fn is_ambient(pod: &Pod, snap: &Snapshot) -> bool {
    match pod.labels.get(DATAPLANE_MODE_LABEL).map(String::as_str) {
        Some(DATAPLANE_MODE_AMBIENT) => true,
        Some(DATAPLANE_MODE_NONE) => false,
        _ => namespace_is_ambient(&pod.namespace, snap),
    }
}

fn namespace_is_ambient(ns: &str, snap: &Snapshot) -> bool {
    snap.namespaces
        .get(ns)
        .and_then(|n| n.labels.get(DATAPLANE_MODE_LABEL))
        .is_some_and(|v| v == DATAPLANE_MODE_AMBIENT)
}

fn selects(selector: Option<&BTreeMap<String, String>>, labels: &BTreeMap<String, String>) -> bool {
    selector.is_none_or(|s| s.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// One encoded resource, shared by every node (and every connection) that
/// holds it.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    /// Hash of the resource's message bytes, as sent.
    pub version: Arc<str>,
    /// The whole `Resource` (name, version, `Any`) as sent: every response
    /// that carries it refers to these bytes instead of copying them.
    pub resource: Bytes,
}

impl Entry {
    fn new(type_url: &str, name: &str, version: String, message: Vec<u8>) -> Entry {
        let resource = encode_resource(&Resource {
            version: version.clone(),
            resource: Some(prost_types::Any {
                type_url: type_url.to_string(),
                value: message,
            }),
            name: name.to_string(),
            aliases: Vec::new(),
        });
        Entry {
            version: version.into(),
            resource,
        }
    }

    /// The resource as sent, decoded (tests, tools).
    pub fn decode(&self) -> Result<Resource, prost::DecodeError> {
        Resource::decode(self.resource.clone())
    }
}

/// Resource name -> resource, sorted by name.
pub type EntryMap = BTreeMap<Arc<str>, Arc<Entry>>;

/// A node's resources of one type, sorted by name.
pub type EntryList<'a> = Vec<(&'a Arc<str>, &'a Arc<Entry>)>;

/// What only one node holds.
#[derive(Debug, Default)]
struct NodeView {
    /// Its own pods, with their netns path.
    workloads: EntryMap,
    peer_auth: EntryMap,
    authz: EntryMap,
    /// Namespaces it needs beyond [`Translated::shared_ns`].
    namespaces: BTreeSet<Arc<str>>,
}

/// One snapshot translated once for every node: the resources common to all
/// nodes are encoded once and shared, and each node only adds an index of
/// what is its own (its pods with netns, the policies that select them).
#[derive(Debug, Default)]
pub struct Translated {
    mesh: EntryMap,
    /// Pods of ambient namespaces (or opted in), without netns.
    workloads: EntryMap,
    services: EntryMap,
    /// Root-namespace policies without a selector: sent to every node.
    peer_auth: EntryMap,
    authz: EntryMap,
    /// Every namespace any node may be sent.
    namespaces: EntryMap,
    /// The namespaces every node is sent.
    shared_ns: BTreeSet<Arc<str>>,
    /// The root namespace (its L7 resources apply to every waypoint).
    mesh_root: Arc<str>,
    /// Nodes and waypoints (by node id).
    nodes: HashMap<String, NodeView>,
    /// L7 resources by namespace, for waypoints.
    l7: HashMap<Arc<str>, EntryMap>,
}

/// An L7 resource as sent (its name is `Kind/namespace/name`).
pub fn l7_to_proto(o: &L7Object) -> pb::L7Resource {
    pb::L7Resource {
        kind: o.kind.clone(),
        namespace: o.namespace.clone(),
        name: o.name.clone(),
        api_version: o.api_version.clone(),
        json: o.json.clone().into_bytes(),
    }
}

/// A new entry, or the entry of a previous translation when unchanged (so
/// names and versions stay the same `Arc`s across snapshots).
fn intern(
    prev: Option<&EntryMap>,
    type_url: &str,
    name: &str,
    message: Vec<u8>,
) -> (Arc<str>, Arc<Entry>) {
    let version = format!("{:016x}", fnv64(&message));
    match prev.and_then(|m| m.get_key_value(name)) {
        Some((k, e)) if *e.version == *version => (k.clone(), e.clone()),
        Some((k, _)) => (
            k.clone(),
            Arc::new(Entry::new(type_url, name, version, message)),
        ),
        None => (
            name.into(),
            Arc::new(Entry::new(type_url, name, version, message)),
        ),
    }
}

/// Two sorted maps as one sorted list, `over` winning on equal names.
fn merge<'a>(base: &'a EntryMap, over: Option<&'a EntryMap>) -> EntryList<'a> {
    let Some(over) = over.filter(|o| !o.is_empty()) else {
        return base.iter().collect();
    };
    let mut out = Vec::with_capacity(base.len() + over.len());
    let mut a = base.iter().peekable();
    let mut b = over.iter().peekable();
    loop {
        match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => match x.0.cmp(y.0) {
                std::cmp::Ordering::Less => out.extend(a.next()),
                std::cmp::Ordering::Greater => out.extend(b.next()),
                std::cmp::Ordering::Equal => {
                    a.next();
                    out.extend(b.next());
                }
            },
            (Some(_), None) => out.extend(a.next()),
            (None, Some(_)) => out.extend(b.next()),
            (None, None) => break,
        }
    }
    out
}

fn ns_arc(names: &mut BTreeSet<Arc<str>>, ns: &str) -> Arc<str> {
    if let Some(a) = names.get(ns) {
        return a.clone();
    }
    let a: Arc<str> = ns.into();
    names.insert(a.clone());
    a
}

impl Translated {
    /// Translates `snap` for every node, reusing the unchanged entries of
    /// `prev`.
    pub fn new(snap: &Snapshot, mesh: &MeshSettings, prev: Option<&Translated>) -> Translated {
        let mut t = Translated::default();
        let mut all_ns: BTreeSet<Arc<str>> = BTreeSet::new();
        let root = ns_arc(&mut all_ns, &mesh.root_namespace);
        t.shared_ns.insert(root.clone());
        t.mesh_root = root.clone();

        let mesh_cfg = pb::MeshConfig {
            trust_domain: mesh.trust_domain.clone(),
            root_namespace: mesh.root_namespace.clone(),
            cluster_domain: mesh.cluster_domain.clone(),
        };
        let (k, e) = intern(
            prev.map(|p| &p.mesh),
            type_urls::MESH_CONFIG,
            "mesh",
            mesh_cfg.encode_to_vec(),
        );
        t.mesh.insert(k, e);

        // Workloads: every node's own pods (with netns), and the pods every
        // node sees (without).
        for p in &snap.pods {
            let Some(node) = p.node.as_deref().filter(|_| p.ip.is_some()) else {
                continue; // not scheduled or no IP yet: not part of the data plane
            };
            let name = format!("{}/{}", p.namespace, p.name);
            let ns = ns_arc(&mut all_ns, &p.namespace);
            let prev_view = prev.and_then(|t| t.nodes.get(node));
            let msg = to_proto::workload(p, &mesh.trust_domain, true);
            let (k, e) = intern(
                prev_view.map(|v| &v.workloads),
                type_urls::WORKLOAD,
                &name,
                msg.encode_to_vec(),
            );
            let view = t.nodes.entry(node.to_string()).or_default();
            view.workloads.insert(k, e);
            view.namespaces.insert(ns.clone());
            if is_ambient(p, snap) {
                t.shared_ns.insert(ns);
                let msg = to_proto::workload(p, &mesh.trust_domain, false);
                let (k, e) = intern(
                    prev.map(|p| &p.workloads),
                    type_urls::WORKLOAD,
                    &name,
                    msg.encode_to_vec(),
                );
                t.workloads.insert(k, e);
            }
        }

        // Waypoints: their own pod (with netns), as a node's.
        for wp in snap.waypoints() {
            let Some(pod) = snap
                .pods
                .iter()
                .find(|p| p.namespace == wp.namespace && p.name == wp.name)
                .filter(|p| p.node.is_some() && p.ip.is_some())
            else {
                continue;
            };
            let id = wp.node_id();
            let name = format!("{}/{}", wp.namespace, wp.name);
            let ns = ns_arc(&mut all_ns, &wp.namespace);
            let prev_view = prev.and_then(|t| t.nodes.get(&id));
            let msg = to_proto::workload(pod, &mesh.trust_domain, true);
            let (k, e) = intern(
                prev_view.map(|v| &v.workloads),
                type_urls::WORKLOAD,
                &name,
                msg.encode_to_vec(),
            );
            let view = t.nodes.entry(id).or_default();
            view.workloads.insert(k, e);
            view.namespaces.insert(ns.clone());
            // Every node must find the waypoint to tunnel to it
            // (`ProxyState::waypoint_for`), even when its pod is not
            // enrolled (`istio.io/dataplane-mode: none`, as waypoints are).
            let msg = to_proto::workload(pod, &mesh.trust_domain, false);
            let (k, e) = intern(
                prev.map(|p| &p.workloads),
                type_urls::WORKLOAD,
                &name,
                msg.encode_to_vec(),
            );
            t.workloads.insert(k, e);
            t.shared_ns.insert(ns);
        }

        // L7 resources, by namespace (for waypoints).
        for o in &snap.l7 {
            let ns = ns_arc(&mut all_ns, &o.namespace);
            let name = format!("{}/{}/{}", o.kind, o.namespace, o.name);
            let prev_map = prev.and_then(|p| p.l7.get(&ns));
            let (k, e) = intern(
                prev_map,
                type_urls::L7_RESOURCE,
                &name,
                l7_to_proto(o).encode_to_vec(),
            );
            t.l7.entry(ns).or_default().insert(k, e);
        }

        // Services of ambient namespaces.
        for s in &snap.services {
            if s.addresses.is_empty() || !namespace_is_ambient(&s.namespace, snap) {
                continue;
            }
            t.shared_ns.insert(ns_arc(&mut all_ns, &s.namespace));
            let msg = to_proto::service(s);
            let (k, e) = intern(
                prev.map(|p| &p.services),
                type_urls::SERVICE,
                &format!("{}/{}", s.namespace, s.name),
                msg.encode_to_vec(),
            );
            t.services.insert(k, e);
        }

        // Policies: those that may select a pod of a node go to that node.
        // Local pods by namespace: (node, labels).
        type Local<'a> = Vec<(&'a str, &'a BTreeMap<String, String>)>;
        let mut local_by_ns: HashMap<&str, Local<'_>> = HashMap::new();
        let mut local_all: Local<'_> = Vec::new();
        for p in &snap.pods {
            if let (Some(node), Some(_)) = (p.node.as_deref(), &p.ip) {
                local_by_ns
                    .entry(p.namespace.as_str())
                    .or_default()
                    .push((node, &p.labels));
                local_all.push((node, &p.labels));
            }
        }
        for (policy, _) in &snap.policies {
            let ns = policy.namespace();
            let root_policy = ns == mesh.root_namespace;
            let selector = policy.selector();
            let peer_auth = matches!(policy, crate::source::Policy::PeerAuthentication(_));
            let name = format!("{ns}/{}", policy.name());
            let prost_types::Any {
                type_url: policy_type,
                value: bytes,
            } = mesh_policy::to_proto::policy(policy);
            let ns_a = ns_arc(&mut all_ns, ns);
            if root_policy && selector.is_none() {
                // Mesh-wide: always sent.
                let (map, prev_map) = if peer_auth {
                    (&mut t.peer_auth, prev.map(|p| &p.peer_auth))
                } else {
                    (&mut t.authz, prev.map(|p| &p.authz))
                };
                let (k, e) = intern(prev_map, &policy_type, &name, bytes);
                map.insert(k, e);
                continue;
            }
            let candidates: &[(&str, &BTreeMap<String, String>)] = if root_policy {
                &local_all
            } else {
                local_by_ns.get(ns).map(Vec::as_slice).unwrap_or(&[])
            };
            let mut nodes: BTreeSet<&str> = BTreeSet::new();
            for (node, labels) in candidates {
                if !nodes.contains(node) && selects(selector, labels) {
                    nodes.insert(node);
                }
            }
            if nodes.is_empty() {
                continue;
            }
            // Encoded once: the entry is shared by the nodes it applies to.
            let prev_entry = prev.and_then(|p| {
                nodes.iter().find_map(|n| {
                    let v = p.nodes.get(*n)?;
                    if peer_auth {
                        Some(&v.peer_auth)
                    } else {
                        Some(&v.authz)
                    }
                })
            });
            let (k, e) = intern(prev_entry, &policy_type, &name, bytes);
            for node in nodes {
                let view = t.nodes.entry(node.to_string()).or_default();
                view.namespaces.insert(ns_a.clone());
                let map = if peer_auth {
                    &mut view.peer_auth
                } else {
                    &mut view.authz
                };
                map.insert(k.clone(), e.clone());
            }
        }

        // Namespaces: every one a node may need, encoded once.
        for name in snap.namespaces.keys() {
            ns_arc(&mut all_ns, name);
        }
        for name in all_ns {
            let labels = snap
                .namespaces
                .get(&*name)
                .map(|n| n.labels.clone())
                .unwrap_or_default();
            let msg = pb::Namespace {
                name: name.to_string(),
                labels,
            };
            let (_, e) = intern(
                prev.map(|p| &p.namespaces),
                type_urls::NAMESPACE,
                &name,
                msg.encode_to_vec(),
            );
            t.namespaces.insert(name, e);
        }
        // A node's extra namespaces: only those not sent to every node.
        for view in t.nodes.values_mut() {
            view.namespaces.retain(|n| !t.shared_ns.contains(n));
        }
        t
    }

    /// The resources of type `ty` node `node` should hold, sorted by name.
    pub fn entries<'a>(&'a self, node: &str, ty: &str) -> EntryList<'a> {
        let view = self.nodes.get(node);
        match ty {
            type_urls::MESH_CONFIG => self.mesh.iter().collect(),
            type_urls::WORKLOAD => merge(&self.workloads, view.map(|v| &v.workloads)),
            type_urls::SERVICE => self.services.iter().collect(),
            type_urls::PEER_AUTHENTICATION => merge(&self.peer_auth, view.map(|v| &v.peer_auth)),
            type_urls::AUTHORIZATION => merge(&self.authz, view.map(|v| &v.authz)),
            type_urls::L7_RESOURCE => {
                let Some((ns, _)) = mesh_proto::waypoint_id::parse(node) else {
                    return Vec::new(); // nodes never receive L7 resources
                };
                let root = self.l7.get(&*self.mesh_root);
                let own = self.l7.get(ns).filter(|_| ns != &*self.mesh_root);
                match (root, own) {
                    (Some(r), o) => merge(r, o),
                    (None, Some(o)) => o.iter().collect(),
                    (None, None) => Vec::new(),
                }
            }
            type_urls::NAMESPACE => {
                let mut names: Vec<&Arc<str>> = self.shared_ns.iter().collect();
                if let Some(v) = view.filter(|v| !v.namespaces.is_empty()) {
                    names.extend(v.namespaces.iter());
                    names.sort();
                }
                names
                    .into_iter()
                    .filter_map(|n| self.namespaces.get_key_value(&**n))
                    .collect()
            }
            _ => Vec::new(),
        }
    }
}

/// The resources node `node` should hold.
pub fn for_node(snap: &Snapshot, node: &str, mesh: &MeshSettings) -> NodeResources {
    let t = Translated::new(snap, mesh, None);
    let mut out = NodeResources::new();
    let types = if mesh_proto::waypoint_id::parse(node).is_some() {
        type_urls::WAYPOINT
    } else {
        type_urls::ALL
    };
    for ty in types {
        let map = out.entry(*ty).or_default();
        for (name, e) in t.entries(node, ty) {
            // Encoded by this process a moment ago: it decodes.
            let Some(resource) = e.decode().ok().and_then(|r| r.resource) else {
                continue;
            };
            map.insert(
                name.to_string(),
                Versioned {
                    version: e.version.to_string(),
                    resource,
                },
            );
        }
    }
    out
}

/// The translation of the latest snapshot, shared by every connection: the
/// first connection to see a new snapshot translates it, the others reuse it.
pub struct TranslateCache {
    mesh: MeshSettings,
    current: Mutex<Option<(Weak<Snapshot>, Arc<Translated>)>>,
}

impl TranslateCache {
    pub fn new(mesh: MeshSettings) -> Self {
        TranslateCache {
            mesh,
            current: Mutex::new(None),
        }
    }

    /// `snap` translated (once per snapshot).
    pub fn get(&self, snap: &Arc<Snapshot>) -> Arc<Translated> {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((weak, t)) = cur.as_ref() {
            if weak.upgrade().is_some_and(|s| Arc::ptr_eq(&s, snap)) {
                return t.clone();
            }
        }
        let prev = cur.take().map(|(_, t)| t);
        let t = Arc::new(Translated::new(snap, &self.mesh, prev.as_deref()));
        *cur = Some((Arc::downgrade(snap), t.clone()));
        t
    }
}

/// The identities (`ns`, `sa`) of the pods scheduled on `node`; for a
/// waypoint's node id, the waypoint's own identity only.
pub fn node_identities(snap: &Snapshot, node: &str) -> BTreeSet<(String, String)> {
    if mesh_proto::waypoint_id::parse(node).is_some() {
        return snap
            .waypoint(node)
            .map(|w| (w.namespace, w.service_account))
            .into_iter()
            .collect();
    }
    snap.pods
        .iter()
        .filter(|p| p.node.as_deref() == Some(node))
        .map(|p| (p.namespace.clone(), p.service_account.clone()))
        .collect()
}
