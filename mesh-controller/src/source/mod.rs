//! Config sources: a folder of YAML ([`folder`]) and the Kubernetes API
//! ([`kube`], kube-rs watches); both publish the same [`Snapshot`].

pub mod folder;
pub mod kube;
pub mod policy;
pub mod view;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use mesh_api::labels::{waypoint_name, USE_WAYPOINT_LABEL};

pub use policy::Policy;

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
    /// Of `metadata.labels`, only those the data plane acts on
    /// ([`service_labels`]): the snapshot is cloned per build and per
    /// translation, and a cluster's Services carry many labels nobody here
    /// reads.
    pub labels: BTreeMap<String, String>,
    pub origin: Origin,
}

/// The labels of a Service's `metadata.labels` the controller keeps and
/// sends to the nodes: `istio.io/use-waypoint` only.
pub fn service_labels(all: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    all.get_key_value(USE_WAYPOINT_LABEL)
        .map(|(k, v)| (k.clone(), v.clone()))
        .into_iter()
        .collect()
}

/// The kinds kept for waypoints (checked by mesh-api, sent as written).
/// AuthorizationPolicy is also a node kind: a waypoint receives it too (its
/// L7 rules and `targetRefs` are the waypoint's to enforce).
pub const L7_KINDS: &[&str] = &[
    "VirtualService",
    "DestinationRule",
    "HTTPRoute",
    "Gateway",
    "ServiceEntry",
    "RequestAuthentication",
    "AuthorizationPolicy",
    "EnvoyFilter",
    "Telemetry",
];

/// An L7 resource for the waypoints, validated, kept as the operator wrote
/// it (`mesh_api::Resource` is not deserializable, and the waypoint types
/// it again with mesh-api, so the JSON is the faithful form).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L7Object {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub api_version: String,
    /// The object as JSON: apiVersion, kind, metadata, spec.
    pub json: String,
    pub origin: Origin,
}

/// mesh-api's reading of one object.
#[derive(Debug)]
pub struct Checked {
    /// The object as kept for the waypoints.
    pub l7: L7Object,
    /// The typed resource, when mesh-api could type it.
    pub resource: Option<mesh_api::Resource>,
    /// Its error-level diagnostics (empty: the object is valid).
    pub errors: Vec<mesh_api::Diagnostic>,
}

impl L7Object {
    /// Checks `doc` with mesh-api (shape, values, unimplemented fields of
    /// this resource alone). Errors are `Kind ns/name: field f: reason`.
    pub fn from_document(
        doc: &serde_json::Value,
        origin: &Origin,
    ) -> Result<L7Object, Vec<String>> {
        let c = Self::check(doc, origin)?;
        if c.errors.is_empty() {
            Ok(c.l7)
        } else {
            Err(c.errors.iter().map(ToString::to_string).collect())
        }
    }

    /// Parses `doc` with mesh-api, once; fails only when `doc` cannot be
    /// written as JSON.
    pub fn check(doc: &serde_json::Value, origin: &Origin) -> Result<Checked, Vec<String>> {
        let str_of = |a: &str, b: Option<&str>| {
            let v = doc.get(a);
            let v = match b {
                Some(b) => v.and_then(|m| m.get(b)),
                None => v,
            };
            v.and_then(|s| s.as_str()).unwrap_or_default().to_string()
        };
        let kind = str_of("kind", None);
        let name = str_of("metadata", Some("name"));
        let mut namespace = str_of("metadata", Some("namespace"));
        if namespace.is_empty() {
            namespace = mesh_api::meta::DEFAULT_NAMESPACE.into();
        }
        let json = serde_json::to_string(doc)
            .map_err(|e| vec![format!("{kind} {namespace}/{name}: {e}")])?;
        let source = origin.file.display().to_string();
        let docs = mesh_api::parse_documents(&json, &source);
        let errors: Vec<mesh_api::Diagnostic> = docs
            .iter()
            .flat_map(|d| d.diagnostics.iter())
            .filter(|d| d.is_error())
            .cloned()
            .collect();
        let resource = docs.into_iter().next().and_then(|d| d.resource);
        Ok(Checked {
            l7: L7Object {
                api_version: str_of("apiVersion", None),
                kind,
                namespace,
                name,
                json,
                origin: origin.clone(),
            },
            resource,
            errors,
        })
    }
}

/// A waypoint the cluster declares: a namespace or a Service labelled
/// `istio.io/use-waypoint: <name>` and a pod of that name in its namespace
/// (as mesh-node's `ProxyState::waypoint_for` finds it).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct WaypointRef {
    pub namespace: String,
    pub name: String,
    pub service_account: String,
}

impl WaypointRef {
    /// Its xDS node id (see [`mesh_proto::waypoint_id`]).
    pub fn node_id(&self) -> String {
        mesh_proto::waypoint_id::format(&self.namespace, &self.name)
    }
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
    /// L7 resources ([`L7_KINDS`]), for the waypoints.
    pub l7: Vec<L7Object>,
}

impl Snapshot {
    /// Node names that have at least one scheduled pod.
    pub fn nodes(&self) -> Vec<String> {
        let mut v: Vec<String> = self.pods.iter().filter_map(|p| p.node.clone()).collect();
        v.sort();
        v.dedup();
        v
    }

    /// The waypoints the cluster declares, sorted, each once: those named
    /// by a namespace's label and those named by a Service's own label
    /// (`mesh_api::labels::waypoint_name`), whose pod exists. A namespace's
    /// waypoint counts even when every Service of it opts out: pods and
    /// later Services may still use it.
    pub fn waypoints(&self) -> Vec<WaypointRef> {
        let unlabelled = BTreeMap::new();
        let by_namespace = self
            .namespaces
            .values()
            .filter_map(|ns| Some((&ns.name, waypoint_name(&unlabelled, Some(&ns.labels))?)));
        let by_service = self
            .services
            .iter()
            .filter_map(|s| Some((&s.namespace, waypoint_name(&s.labels, None)?)));
        let named: BTreeSet<(&String, &str)> = by_namespace.chain(by_service).collect();
        named
            .into_iter()
            .filter_map(|(ns, name)| {
                let pod = self
                    .pods
                    .iter()
                    .find(|p| &p.namespace == ns && p.name == name)?;
                Some(WaypointRef {
                    namespace: ns.clone(),
                    name: name.to_string(),
                    service_account: pod.service_account.clone(),
                })
            })
            .collect()
    }

    /// The waypoint of xDS node id `id`, if the cluster declares it.
    pub fn waypoint(&self, id: &str) -> Option<WaypointRef> {
        let (ns, name) = mesh_proto::waypoint_id::parse(id)?;
        self.waypoints()
            .into_iter()
            .find(|w| w.namespace == ns && w.name == name)
    }
}
