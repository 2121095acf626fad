//! The Kubernetes source: kube-rs watches (reflectors) on the API server,
//! turned into the same [`Snapshot`] the folder source publishes, so that
//! translation and xDS do not know where the config came from.
//!
//! Watched: Namespaces (`istio.io/dataplane-mode=ambient` opts in,
//! `istio.io/use-waypoint` is kept with the labels), Pods (`spec.nodeName`,
//! `spec.serviceAccountName`, `status.podIP`, labels, the `ambit.io/netns`
//! annotation in local mode), Services (of their labels only
//! `istio.io/use-waypoint`, which overrides the namespace's), EndpointSlices
//! (`discovery.k8s.io/v1`), and the Istio resources `security.istio.io/v1`
//! PeerAuthentication and AuthorizationPolicy (enforced by the nodes), and
//! the L7 kinds (checked and reported; they take effect through a waypoint
//! or the ingress gateway, the nodes do not act on them):
//! `networking.istio.io/v1` VirtualService, DestinationRule, Gateway and
//! ServiceEntry, `networking.istio.io/v1alpha3` EnvoyFilter (the only
//! version Istio serves), `security.istio.io/v1` RequestAuthentication,
//! `telemetry.istio.io/v1` Telemetry and `gateway.networking.k8s.io/v1`
//! HTTPRoute ([`ISTIO_KINDS`]; each needs its CRD, `deploy/crds/`).
//!
//! Every event wakes one builder, which waits [`KubeSource::DEFAULT_DEBOUNCE`]
//! so that a burst (a rollout, a `kubectl apply -f dir/`) becomes one
//! snapshot. Validation is per object: the API server hands over objects one
//! by one, so a bad object is refused alone (named with its kind, namespace,
//! name and field on the `config_errors` channel and in the log) and the
//! rest keeps serving. Policies are parsed and checked with mesh-api and
//! the node's rules ([`super::policy`]), and the whole view with
//! [`super::view`], exactly as in the folder source.
//!
//! EndpointSlices: the ready addresses of each Service are recorded in
//! [`Snapshot::endpoints`], and a pod without `status.podIP` takes its
//! address from an EndpointSlice endpoint whose `targetRef` names it (an API
//! server without kubelets, or a CNI that reports late). Endpoint changes
//! therefore publish a new snapshot; which pods serve a Service is still
//! decided by the node from the Service's selector over the pods (each
//! scale-up or scale-down is a pod event and reaches the nodes).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;
use std::hash::Hash;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace as KNamespace, Pod as KPod, Service as KService};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::Store;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::{watch, Notify};

use super::folder::{ErrorReceiver, SnapshotReceiver, NETNS_ANNOTATION};
use super::{
    policy, service_labels, view, L7Object, Namespace, Origin, Pod, Service, ServicePort, Snapshot,
};

/// The label naming a namespace's (or a Service's) waypoint; kept with the
/// namespace's labels, and the only Service label kept
/// ([`super::service_labels`]).
pub const USE_WAYPOINT_LABEL: &str = mesh_api::labels::USE_WAYPOINT_LABEL;
/// The label an EndpointSlice carries to name its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// How to reach the API server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KubeConfigSource {
    /// A kubeconfig file (its current context).
    Kubeconfig(PathBuf),
    /// The pod's service account (`KUBERNETES_SERVICE_HOST`, the mounted token).
    InCluster,
}

/// A client for `source`.
pub async fn client(source: &KubeConfigSource) -> anyhow::Result<Client> {
    let config = match source {
        KubeConfigSource::Kubeconfig(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| anyhow::anyhow!("reading kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| anyhow::anyhow!("kubeconfig {}: {e}", path.display()))?
        }
        KubeConfigSource::InCluster => kube::Config::incluster().map_err(|e| {
            anyhow::anyhow!("in-cluster config (no --folder or --kubeconfig given): {e}")
        })?,
    };
    Ok(Client::try_from(config)?)
}

/// An Istio kind the source watches.
#[derive(Clone, Copy, Debug)]
pub struct IstioKind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    /// Enforced by mesh-node (L4); else L7, checked and reported only.
    pub node: bool,
}

impl IstioKind {
    pub fn api_resource(&self) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(self.group, self.version, self.kind),
            self.plural,
        )
    }
}

/// The Istio kinds watched, at the version read (the API server converts
/// from whatever version the operator wrote).
pub const ISTIO_KINDS: &[IstioKind] = &[
    IstioKind {
        group: "security.istio.io",
        version: "v1",
        kind: "PeerAuthentication",
        plural: "peerauthentications",
        node: true,
    },
    IstioKind {
        group: "security.istio.io",
        version: "v1",
        kind: "AuthorizationPolicy",
        plural: "authorizationpolicies",
        node: true,
    },
    IstioKind {
        group: "networking.istio.io",
        version: "v1",
        kind: "VirtualService",
        plural: "virtualservices",
        node: false,
    },
    IstioKind {
        group: "networking.istio.io",
        version: "v1",
        kind: "DestinationRule",
        plural: "destinationrules",
        node: false,
    },
    IstioKind {
        group: "networking.istio.io",
        version: "v1",
        kind: "Gateway",
        plural: "gateways",
        node: false,
    },
    IstioKind {
        group: "networking.istio.io",
        version: "v1",
        kind: "ServiceEntry",
        plural: "serviceentries",
        node: false,
    },
    IstioKind {
        group: "networking.istio.io",
        version: "v1alpha3",
        kind: "EnvoyFilter",
        plural: "envoyfilters",
        node: false,
    },
    IstioKind {
        group: "security.istio.io",
        version: "v1",
        kind: "RequestAuthentication",
        plural: "requestauthentications",
        node: false,
    },
    IstioKind {
        group: "telemetry.istio.io",
        version: "v1",
        kind: "Telemetry",
        plural: "telemetries",
        node: false,
    },
    // Not Istio's, but watched the same way (a waypoint routes by it).
    IstioKind {
        group: "gateway.networking.k8s.io",
        version: "v1",
        kind: "HTTPRoute",
        plural: "httproutes",
        node: false,
    },
];

/// Every watched object at one instant (the builder's input).
#[derive(Clone, Debug, Default)]
pub struct Objects {
    pub namespaces: Vec<Arc<KNamespace>>,
    pub pods: Vec<Arc<KPod>>,
    pub services: Vec<Arc<KService>>,
    pub endpoint_slices: Vec<Arc<EndpointSlice>>,
    /// Istio resources with their kind.
    pub istio: Vec<(IstioKind, Arc<DynamicObject>)>,
}

/// What one build produced.
#[derive(Clone, Debug, Default)]
pub struct Built {
    /// The valid objects (the refused ones left out); `version` unset.
    pub snapshot: Snapshot,
    /// One line per refused object: `Kind ns/name: field f: reason`.
    pub problems: Vec<String>,
    /// L7 resources accepted: `Kind ns/name` -> resourceVersion.
    pub accepted_l7: BTreeMap<String, String>,
    /// A problem no single object could be blamed for: the whole view is
    /// refused and the last good snapshot keeps serving.
    pub fatal: bool,
}

fn ns_name<K: Resource>(o: &K) -> (String, String) {
    (
        o.meta()
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        o.meta().name.clone().unwrap_or_default(),
    )
}

/// Where an object came from, in the shape of the folder's origins: its
/// API path, document 0.
fn origin(kind: &str, ns: &str, name: &str) -> Origin {
    Origin {
        file: PathBuf::from(format!("kubernetes:{kind}/{ns}/{name}")),
        doc: 0,
    }
}

fn problem(what: &str, field: &str, reason: &str) -> String {
    if field.is_empty() {
        format!("{what}: {reason}")
    } else {
        format!("{what}: field {field}: {reason}")
    }
}

/// Pod addresses from EndpointSlices (`targetRef` kind Pod): (ns, pod) -> IP;
/// and each Service's ready addresses: `ns/service` -> IPs.
#[allow(clippy::type_complexity)]
fn slice_addresses(
    slices: &[Arc<EndpointSlice>],
) -> (
    HashMap<(String, String), String>,
    BTreeMap<String, Vec<String>>,
) {
    let mut by_pod = HashMap::new();
    let mut by_service: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in slices {
        let (ns, _) = ns_name(s.as_ref());
        let service = s.labels().get(SERVICE_NAME_LABEL).cloned();
        if let Some(svc) = &service {
            by_service.entry(format!("{ns}/{svc}")).or_default();
        }
        for ep in s.endpoints.iter().flatten() {
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if let Some(t) = &ep.target_ref {
                if t.kind.as_deref() == Some("Pod") {
                    if let (Some(name), Some(addr)) = (&t.name, ep.addresses.first()) {
                        let pns = t.namespace.clone().unwrap_or_else(|| ns.clone());
                        by_pod.insert((pns, name.clone()), addr.clone());
                    }
                }
            }
            if let (Some(svc), true) = (&service, ready) {
                by_service
                    .entry(format!("{ns}/{svc}"))
                    .or_default()
                    .extend(ep.addresses.iter().cloned());
            }
        }
    }
    (
        by_pod,
        by_service
            .into_iter()
            .map(|(k, v)| (k, v.into_iter().collect()))
            .collect(),
    )
}

fn convert_pod(p: &KPod, slice_ips: &HashMap<(String, String), String>) -> Option<Pod> {
    let (ns, name) = ns_name(p);
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded") | Some("Failed")) {
        return None; // finished: neither an endpoint nor an identity on its node
    }
    let spec = p.spec.as_ref();
    let ip = p
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .filter(|s| !s.is_empty())
        .or_else(|| slice_ips.get(&(ns.clone(), name.clone())).cloned());
    Some(Pod {
        origin: origin("Pod", &ns, &name),
        labels: p.labels().clone(),
        netns: p.annotations().get(NETNS_ANNOTATION).cloned(),
        node: spec
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty()),
        service_account: spec
            .and_then(|s| s.service_account_name.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".into()),
        ip,
        namespace: ns,
        name,
    })
}

fn convert_service(s: &KService, problems: &mut Vec<String>) -> Option<Service> {
    let (ns, name) = ns_name(s);
    let what = format!("Service {ns}/{name}");
    let spec = s.spec.clone().unwrap_or_default();
    let mut addresses = spec.cluster_ips.clone().unwrap_or_default();
    if let Some(ip) = spec.cluster_ip.clone().filter(|ip| !ip.is_empty()) {
        if !addresses.contains(&ip) {
            addresses.insert(0, ip);
        }
    }
    addresses.retain(|a| a != "None");
    let mut ports = Vec::new();
    let mut ok = true;
    for (i, p) in spec.ports.unwrap_or_default().into_iter().enumerate() {
        let target_port = match p.target_port {
            None => None,
            Some(IntOrString::Int(n)) => Some(i64::from(n)),
            Some(IntOrString::String(s)) => match s.parse::<i64>() {
                Ok(n) => Some(n),
                Err(_) => {
                    problems.push(problem(
                        &what,
                        &format!("spec.ports[{i}].targetPort"),
                        &format!("named target ports ({s:?}) are not supported; use the container port number"),
                    ));
                    ok = false;
                    None
                }
            },
        };
        ports.push(ServicePort {
            name: p.name,
            port: i64::from(p.port),
            target_port,
            protocol: p.protocol,
        });
    }
    ok.then(|| Service {
        origin: origin("Service", &ns, &name),
        labels: service_labels(s.labels()),
        addresses,
        ports,
        selector: spec.selector.unwrap_or_default(),
        namespace: ns,
        name,
    })
}

/// The object as an operator would have written it: apiVersion, kind,
/// name/namespace/labels/annotations and the spec (no status, no
/// server-managed metadata).
fn as_written(kind: &IstioKind, o: &DynamicObject) -> serde_json::Value {
    let (ns, name) = ns_name(o);
    let mut meta = json!({"name": name, "namespace": ns});
    if !o.labels().is_empty() {
        meta["labels"] = json!(o.labels());
    }
    if !o.annotations().is_empty() {
        meta["annotations"] = json!(o.annotations());
    }
    let mut doc = json!({
        "apiVersion": format!("{}/{}", kind.group, kind.version),
        "kind": kind.kind,
        "metadata": meta,
    });
    if let Some(spec) = o.data.get("spec") {
        doc["spec"] = spec.clone();
    }
    doc
}

fn convert_istio(
    kind: &IstioKind,
    o: &DynamicObject,
    snap: &mut Snapshot,
    accepted_l7: &mut BTreeMap<String, String>,
    problems: &mut Vec<String>,
) {
    let (ns, name) = ns_name(o);
    let origin = origin(kind.kind, &ns, &name);
    let doc = as_written(kind, o);
    if kind.node {
        match policy::parse(&doc, &origin) {
            Ok(parsed) => {
                snap.policies.push((parsed.policy, origin));
                // Waypoints also receive AuthorizationPolicies (their L7
                // part).
                snap.l7.extend(parsed.l7);
            }
            Err(errors) => problems.extend(errors),
        }
        return;
    }
    match L7Object::from_document(&doc, &origin) {
        Ok(l7) => {
            accepted_l7.insert(
                format!("{} {ns}/{name}", kind.kind),
                o.resource_version().unwrap_or_default(),
            );
            snap.l7.push(l7);
        }
        Err(errors) => problems.extend(errors),
    }
}

fn remove_indexes<T>(v: &mut Vec<T>, bad: &BTreeSet<usize>) {
    let mut i = 0usize;
    v.retain(|_| {
        let keep = !bad.contains(&i);
        i += 1;
        keep
    });
}

/// The view's checks ([`view::check`]). Objects it refuses are removed
/// (with a problem naming them) and the rest checked again; returns false
/// when a problem cannot be pinned on one object.
fn validate_and_prune(snap: &mut Snapshot, problems: &mut Vec<String>) -> bool {
    for _ in 0..16 {
        let found = view::check(snap);
        if found.is_empty() {
            return true;
        }
        problems.extend(found.iter().map(|p| p.describe(snap, false)));
        let (bad_pods, bad_svcs, bad_pols, unpinned) = view::subjects(&found);
        if unpinned {
            return false;
        }
        remove_indexes(&mut snap.pods, &bad_pods);
        remove_indexes(&mut snap.services, &bad_svcs);
        remove_indexes(&mut snap.policies, &bad_pols);
    }
    problems.push("the view did not validate after removing the refused objects".into());
    false
}

/// Builds the snapshot of `objs`: each object converted and checked on its
/// own, then the whole through the node's validator. Pure (unit-testable).
pub fn build(objs: &Objects) -> Built {
    let mut out = Built::default();
    let snap = &mut out.snapshot;
    for n in &objs.namespaces {
        let name = n.name_any();
        snap.namespaces.insert(
            name.clone(),
            Namespace {
                name,
                labels: n.labels().clone(),
            },
        );
    }
    let (slice_ips, endpoints) = slice_addresses(&objs.endpoint_slices);
    snap.endpoints = endpoints;
    let mut pods: Vec<Pod> = objs
        .pods
        .iter()
        .filter_map(|p| convert_pod(p, &slice_ips))
        .collect();
    pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    snap.pods = pods;
    let mut services: Vec<Service> = objs
        .services
        .iter()
        .filter_map(|s| convert_service(s, &mut out.problems))
        .collect();
    services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    snap.services = services;
    let mut istio: Vec<&(IstioKind, Arc<DynamicObject>)> = objs.istio.iter().collect();
    istio.sort_by_key(|(k, o)| (k.kind, ns_name(o.as_ref())));
    for (kind, o) in istio {
        convert_istio(kind, o, snap, &mut out.accepted_l7, &mut out.problems);
    }
    out.fatal = !validate_and_prune(snap, &mut out.problems);
    out
}

/// Whether two snapshots hold the same config (versions aside).
fn same_config(a: &Snapshot, b: &Snapshot) -> bool {
    a.namespaces == b.namespaces
        && a.pods == b.pods
        && a.services == b.services
        && a.endpoints == b.endpoints
        && a.l7 == b.l7
        && format!("{:?}", a.policies) == format!("{:?}", b.policies)
}

/// The watches' stores.
struct Stores {
    namespaces: Store<KNamespace>,
    pods: Store<KPod>,
    services: Store<KService>,
    slices: Store<EndpointSlice>,
    istio: Vec<(IstioKind, Store<DynamicObject>)>,
}

impl Stores {
    fn objects(&self) -> Objects {
        Objects {
            namespaces: self.namespaces.state(),
            pods: self.pods.state(),
            services: self.services.state(),
            endpoint_slices: self.slices.state(),
            istio: self
                .istio
                .iter()
                .flat_map(|(k, s)| s.state().into_iter().map(move |o| (*k, o)))
                .collect(),
        }
    }

    /// Waits until every watch has listed once, at most `timeout`; returns
    /// the kinds that have not.
    async fn wait_ready(&self, timeout: Duration) -> Vec<String> {
        let mut pending: Vec<(String, futures::future::BoxFuture<'_, bool>)> = vec![
            ("Namespace".into(), ready(&self.namespaces)),
            ("Pod".into(), ready(&self.pods)),
            ("Service".into(), ready(&self.services)),
            ("EndpointSlice".into(), ready(&self.slices)),
        ];
        for (k, s) in &self.istio {
            pending.push((format!("{}/{}", k.group, k.kind), ready(s)));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut missing = Vec::new();
        for (what, fut) in pending {
            match tokio::time::timeout_at(deadline, fut).await {
                Ok(true) => {}
                _ => missing.push(what),
            }
        }
        missing
    }
}

fn ready<K>(s: &Store<K>) -> futures::future::BoxFuture<'_, bool>
where
    K: Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    Box::pin(async move { s.wait_until_ready().await.is_ok() })
}

/// Starts a reflector on `api`; each change (after the initial list)
/// notifies the builder. Stops when `stop`'s sender is dropped.
fn reflect<K>(
    api: Api<K>,
    dyntype: K::DynamicType,
    what: String,
    notify: Arc<Notify>,
    mut stop: watch::Receiver<()>,
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync + 'static,
{
    let writer = Writer::new(dyntype);
    let reader = writer.as_reader();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                ev = stream.next() => match ev {
                    None => return,
                    Some(Ok(Event::Init | Event::InitApply(_))) => {}
                    Some(Ok(_)) => {
                        if failing {
                            tracing::info!(kind = %what, "watch recovered");
                            failing = false;
                        }
                        notify.notify_one();
                    }
                    Some(Err(e)) => {
                        if !failing {
                            tracing::warn!(kind = %what, error = %e, "watch failed; retrying with backoff");
                            failing = true;
                        }
                    }
                },
            }
        }
    });
    reader
}

/// Like [`reflect`] for a dynamic type (its `DynamicType` has no default).
fn reflect_dynamic(
    api: Api<DynamicObject>,
    ar: ApiResource,
    what: String,
    notify: Arc<Notify>,
    mut stop: watch::Receiver<()>,
) -> Store<DynamicObject> {
    let writer = Writer::new(ar);
    let reader = writer.as_reader();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                ev = stream.next() => match ev {
                    None => return,
                    Some(Ok(Event::Init | Event::InitApply(_))) => {}
                    Some(Ok(_)) => {
                        if failing {
                            tracing::info!(kind = %what, "watch recovered");
                            failing = false;
                        }
                        notify.notify_one();
                    }
                    Some(Err(e)) => {
                        if !failing {
                            tracing::warn!(kind = %what, error = %e, "watch failed; retrying with backoff");
                            failing = true;
                        }
                    }
                },
            }
        }
    });
    reader
}

/// The Kubernetes source.
pub struct KubeSource;

impl KubeSource {
    /// Events closer than this are applied together.
    pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(50);
    /// How long the first snapshot waits for every watch's initial list.
    pub const SYNC_TIMEOUT: Duration = Duration::from_secs(15);

    /// Starts the watches, waits for their initial lists (at most
    /// [`Self::SYNC_TIMEOUT`]; a kind that is not served, e.g. a missing
    /// CRD, is logged and joins when it appears), publishes version 1 and
    /// then a new version for each burst of changes, for the life of the
    /// returned receivers. Within a Tokio runtime.
    pub async fn spawn(
        client: Client,
        debounce: Duration,
    ) -> anyhow::Result<(SnapshotReceiver, ErrorReceiver)> {
        let notify = Arc::new(Notify::new());
        let (stop_tx, stop) = watch::channel(());
        let stores = Stores {
            namespaces: reflect(
                Api::all(client.clone()),
                (),
                "Namespace".into(),
                notify.clone(),
                stop.clone(),
            ),
            pods: reflect(
                Api::all(client.clone()),
                (),
                "Pod".into(),
                notify.clone(),
                stop.clone(),
            ),
            services: reflect(
                Api::all(client.clone()),
                (),
                "Service".into(),
                notify.clone(),
                stop.clone(),
            ),
            slices: reflect(
                Api::all(client.clone()),
                (),
                "EndpointSlice".into(),
                notify.clone(),
                stop.clone(),
            ),
            istio: ISTIO_KINDS
                .iter()
                .map(|k| {
                    let ar = k.api_resource();
                    let api = Api::<DynamicObject>::all_with(client.clone(), &ar);
                    let store = reflect_dynamic(
                        api,
                        ar,
                        format!("{}/{}", k.group, k.kind),
                        notify.clone(),
                        stop.clone(),
                    );
                    (*k, store)
                })
                .collect(),
        };
        let missing = stores.wait_ready(Self::SYNC_TIMEOUT).await;
        if !missing.is_empty() {
            tracing::error!(kinds = ?missing, "not listed within {:?} (CRD missing? RBAC?); going on without them", Self::SYNC_TIMEOUT);
        }
        let mut builder = Builder::default();
        let built = build(&stores.objects());
        let first = builder.first(built);
        tracing::info!(
            pods = first.0.pods.len(),
            services = first.0.services.len(),
            policies = first.0.policies.len(),
            "config loaded from the Kubernetes API"
        );
        let (tx, rx) = watch::channel(Arc::new(first.0));
        let (etx, erx) = watch::channel(first.1);
        // Events during the initial list were already folded in.
        tokio::spawn(async move {
            let _stop = stop_tx; // dropped with this task: the watches end
            loop {
                tokio::select! {
                    _ = notify.notified() => {}
                    _ = tx.closed() => return,
                }
                tokio::time::sleep(debounce).await;
                let built = build(&stores.objects());
                builder.next(built, &tx, &etx);
            }
        });
        Ok((rx, erx))
    }
}

/// Publication state: versions, and what was logged already.
#[derive(Default)]
struct Builder {
    version: u64,
    problems: Vec<String>,
    accepted_l7: BTreeMap<String, String>,
}

impl Builder {
    fn report(&mut self, built: &Built) -> Option<String> {
        for p in &built.problems {
            if !self.problems.contains(p) {
                tracing::error!("refused, the rest keeps serving: {p}");
            }
        }
        for p in &self.problems {
            if !built.problems.contains(p) {
                tracing::info!("no longer refused: {p}");
            }
        }
        for (what, rv) in &built.accepted_l7 {
            match self.accepted_l7.get(what) {
                Some(old) if old == rv => {}
                Some(_) => {
                    tracing::info!(resource = %what, "L7 resource changed, accepted (applies through a waypoint; nodes do not act on it)")
                }
                None => {
                    tracing::info!(resource = %what, "L7 resource accepted (applies through a waypoint; nodes do not act on it)")
                }
            }
        }
        for what in self.accepted_l7.keys() {
            if !built.accepted_l7.contains_key(what) {
                tracing::info!(resource = %what, "L7 resource removed");
            }
        }
        self.problems = built.problems.clone();
        self.accepted_l7 = built.accepted_l7.clone();
        (!built.problems.is_empty()).then(|| built.problems.join("\n"))
    }

    fn first(&mut self, built: Built) -> (Snapshot, Option<String>) {
        let errors = self.report(&built);
        self.version = 1;
        let mut snap = if built.fatal {
            tracing::error!("the cluster's config is refused as a whole; serving an empty config until it is fixed");
            Snapshot::default()
        } else {
            built.snapshot
        };
        snap.version = 1;
        (snap, errors)
    }

    fn next(
        &mut self,
        built: Built,
        tx: &watch::Sender<Arc<Snapshot>>,
        etx: &watch::Sender<Option<String>>,
    ) {
        let errors = self.report(&built);
        if *etx.borrow() != errors {
            etx.send_replace(errors);
        }
        if built.fatal {
            tracing::error!("config refused as a whole, keeping the last good config");
            return;
        }
        if same_config(&tx.borrow(), &built.snapshot) {
            return;
        }
        self.version += 1;
        let mut snap = built.snapshot;
        snap.version = self.version;
        tracing::info!(
            version = self.version,
            pods = snap.pods.len(),
            services = snap.services.len(),
            policies = snap.policies.len(),
            "config updated from the Kubernetes API"
        );
        tx.send_replace(Arc::new(snap));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;

    fn ap(name: &str, spec: serde_json::Value) -> (IstioKind, Arc<DynamicObject>) {
        let kind = ISTIO_KINDS[1];
        let mut o = DynamicObject::new(name, &kind.api_resource()).within("demo");
        o.data = json!({ "spec": spec });
        (kind, Arc::new(o))
    }

    fn pod(name: &str, ip: Option<&str>) -> Arc<KPod> {
        let mut p = KPod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("demo".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        p.spec = Some(k8s_openapi::api::core::v1::PodSpec {
            node_name: Some("node-a".into()),
            service_account_name: Some("sa".into()),
            ..Default::default()
        });
        p.status = ip.map(|ip| k8s_openapi::api::core::v1::PodStatus {
            pod_ip: Some(ip.into()),
            ..Default::default()
        });
        Arc::new(p)
    }

    #[test]
    fn bad_policy_refused_alone() {
        let objs = Objects {
            pods: vec![pod("a", Some("10.0.0.1"))],
            istio: vec![
                ap("good", json!({"action": "DENY", "rules": [{}]})),
                ap("bad", json!({"action": "DENYY", "rules": [{}]})),
            ],
            ..Default::default()
        };
        let b = build(&objs);
        assert!(!b.fatal);
        assert_eq!(b.snapshot.policies.len(), 1, "{:?}", b.problems);
        assert_eq!(b.problems.len(), 1, "{:?}", b.problems);
        assert!(
            b.problems[0].starts_with("AuthorizationPolicy demo/bad: field spec.action"),
            "{:?}",
            b.problems
        );
    }

    #[test]
    fn l7_resources_kept_for_waypoints_and_a_bad_one_refused_alone() {
        let vs = |name: &str, spec: serde_json::Value| {
            let kind = ISTIO_KINDS[2];
            let mut o = DynamicObject::new(name, &kind.api_resource()).within("demo");
            o.data = json!({ "spec": spec });
            (kind, Arc::new(o))
        };
        let route = json!([{"route": [{"destination": {"host": "reviews"}}]}]);
        let objs = Objects {
            istio: vec![
                vs("good", json!({"hosts": ["reviews"], "http": route})),
                vs(
                    "bad",
                    json!({"hosts": ["reviews"], "http": [{"timeout": "soon", "route": route[0]["route"]}]}),
                ),
                ap("allow", json!({"action": "ALLOW", "rules": [{}]})),
            ],
            ..Default::default()
        };
        let b = build(&objs);
        assert!(!b.fatal);
        let kept: Vec<String> = b
            .snapshot
            .l7
            .iter()
            .map(|o| format!("{} {}/{}", o.kind, o.namespace, o.name))
            .collect();
        assert_eq!(
            kept,
            ["AuthorizationPolicy demo/allow", "VirtualService demo/good"]
        );
        let good = &b.snapshot.l7[1];
        let doc: serde_json::Value = serde_json::from_str(&good.json).expect("json");
        assert_eq!(doc["spec"]["hosts"][0], "reviews");
        assert_eq!(doc["apiVersion"], "networking.istio.io/v1");
        assert_eq!(b.problems.len(), 1, "{:?}", b.problems);
        assert!(
            b.problems[0].starts_with("VirtualService demo/bad: field spec.http[0].timeout"),
            "{:?}",
            b.problems
        );
    }

    fn kind(name: &str) -> IstioKind {
        *ISTIO_KINDS
            .iter()
            .find(|k| k.kind == name)
            .unwrap_or_else(|| panic!("{name} is not watched"))
    }

    fn obj(
        kind_name: &str,
        name: &str,
        spec: serde_json::Value,
    ) -> (IstioKind, Arc<DynamicObject>) {
        let k = kind(kind_name);
        let mut o = DynamicObject::new(name, &k.api_resource()).within("demo");
        o.data = json!({ "spec": spec });
        (k, Arc::new(o))
    }

    /// A valid object of each L7 kind watched besides VirtualService and
    /// DestinationRule, and a broken twin with the field that breaks it.
    #[allow(clippy::type_complexity)]
    fn new_l7_kinds() -> Vec<(
        &'static str,
        serde_json::Value,
        serde_json::Value,
        &'static str,
    )> {
        vec![
            (
                "Gateway",
                json!({"selector": {"istio": "ingressgateway"}, "servers": [
                    {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]}),
                json!({"selector": {"istio": "ingressgateway"}, "servers": [
                    {"port": {"number": 70000, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]}),
                "spec.servers[0].port.number",
            ),
            (
                "ServiceEntry",
                json!({"hosts": ["api.example.com"], "ports": [{"number": 443, "name": "https", "protocol": "TLS"}],
                    "resolution": "DNS"}),
                json!({"hosts": ["api.example.com"], "ports": [{"number": 443, "name": "https", "protocol": "TLS"}],
                    "resolution": "SOMETIMES"}),
                "spec.resolution",
            ),
            (
                "EnvoyFilter",
                json!({"configPatches": [{"applyTo": "HTTP_FILTER",
                    "match": {"context": "SIDECAR_INBOUND"},
                    "patch": {"operation": "INSERT_BEFORE", "value": {
                        "name": "envoy.filters.http.local_ratelimit",
                        "typed_config": {
                            "@type": "type.googleapis.com/udpa.type.v1.TypedStruct",
                            "type_url": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
                            "value": {"stat_prefix": "rl", "token_bucket": {
                                "max_tokens": 10, "tokens_per_fill": 10, "fill_interval": "60s"}}}}}}]}),
                json!({"configPatches": [{"applyTo": "HTTP_FILTER",
                    "match": {"context": "SIDECAR_INBOUND"},
                    "patch": {"operation": "INSERT_BEFORE", "value": {
                        "name": "envoy.filters.http.local_ratelimit",
                        "typed_config": {
                            "@type": "type.googleapis.com/udpa.type.v1.TypedStruct",
                            "type_url": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
                            "value": {"stat_prefix": "rl", "token_bucket": {
                                "max_tokens": 0, "fill_interval": "60s"}}}}}}]}),
                "token_bucket.max_tokens",
            ),
            (
                "RequestAuthentication",
                json!({"jwtRules": [{"issuer": "testing@secure.istio.io",
                    "jwksUri": "https://keys.example.com/jwks.json"}]}),
                json!({"jwtRules": [{"issuer": "testing@secure.istio.io",
                    "jwksUri": "keys.example.com/jwks.json"}]}),
                "spec.jwtRules[0].jwksUri",
            ),
            (
                "Telemetry",
                json!({"tracing": [{"randomSamplingPercentage": 10}]}),
                json!({"tracing": [{"randomSamplingPercentage": 150}]}),
                "spec.tracing[0].randomSamplingPercentage",
            ),
            (
                "HTTPRoute",
                json!({"parentRefs": [{"name": "reviews", "kind": "Service", "group": ""}],
                    "rules": [{"backendRefs": [{"name": "reviews", "port": 9080}]}]}),
                json!({"parentRefs": [{"name": "reviews", "kind": "Service", "group": ""}],
                    "rules": [{"backendRefs": [{"name": "reviews", "port": 0}]}]}),
                "spec.rules[0].backendRefs[0].port",
            ),
        ]
    }

    #[test]
    fn every_l7_kind_is_watched() {
        for k in super::super::L7_KINDS {
            assert!(
                ISTIO_KINDS.iter().any(|w| w.kind == *k),
                "{k} is kept for waypoints but not watched"
            );
        }
    }

    /// Each watched kind has a CRD in deploy/crds/ that serves it at the
    /// version the watch reads (else the watch never lists).
    #[test]
    fn every_watched_kind_has_a_crd_serving_its_version() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds");
        let mut served = BTreeSet::new();
        for e in std::fs::read_dir(&dir).expect("deploy/crds") {
            let text = std::fs::read_to_string(e.expect("entry").path()).expect("read");
            for doc in serde_yaml::Deserializer::from_str(&text) {
                let v: serde_json::Value = serde::Deserialize::deserialize(doc).expect("CRD YAML");
                let spec = &v["spec"];
                for ver in spec["versions"].as_array().into_iter().flatten() {
                    if ver["served"] == true {
                        served.insert(format!(
                            "{}/{}/{}/{}",
                            spec["group"].as_str().unwrap_or(""),
                            ver["name"].as_str().unwrap_or(""),
                            spec["names"]["kind"].as_str().unwrap_or(""),
                            spec["names"]["plural"].as_str().unwrap_or(""),
                        ));
                    }
                }
            }
        }
        for k in ISTIO_KINDS {
            let want = format!("{}/{}/{}/{}", k.group, k.version, k.kind, k.plural);
            assert!(
                served.contains(&want),
                "no CRD serves {want}; served: {served:#?}"
            );
        }
    }

    #[test]
    fn new_l7_kinds_kept_and_a_bad_one_of_each_refused_alone() {
        let mut istio = Vec::new();
        for (k, good, bad, _) in new_l7_kinds() {
            istio.push(obj(k, &format!("good-{}", k.to_lowercase()), good));
            istio.push(obj(k, &format!("bad-{}", k.to_lowercase()), bad));
        }
        let b = build(&Objects {
            istio,
            ..Default::default()
        });
        assert!(!b.fatal, "{:?}", b.problems);
        let kept: BTreeSet<String> = b
            .snapshot
            .l7
            .iter()
            .map(|o| format!("{} {}/{}", o.kind, o.namespace, o.name))
            .collect();
        let want: BTreeSet<String> = new_l7_kinds()
            .iter()
            .map(|(k, ..)| format!("{k} demo/good-{}", k.to_lowercase()))
            .collect();
        assert_eq!(kept, want, "{:?}", b.problems);
        for (k, _, _, field) in new_l7_kinds() {
            let name = format!("{k} demo/bad-{}", k.to_lowercase());
            assert!(
                b.problems
                    .iter()
                    .any(|p| p.starts_with(&format!("{name}: field ")) && p.contains(field)),
                "{name} not refused at {field}: {:#?}",
                b.problems
            );
        }
        // The versions as read: EnvoyFilter is only served as v1alpha3.
        let ef = b
            .snapshot
            .l7
            .iter()
            .find(|o| o.kind == "EnvoyFilter")
            .expect("EnvoyFilter kept");
        assert_eq!(ef.api_version, "networking.istio.io/v1alpha3");
    }

    #[test]
    fn bad_pod_ip_refused_alone() {
        let objs = Objects {
            pods: vec![pod("a", Some("10.0.0.1")), pod("b", Some("10.0.0.300"))],
            ..Default::default()
        };
        let b = build(&objs);
        assert!(!b.fatal, "{:?}", b.problems);
        assert_eq!(b.snapshot.pods.len(), 1);
        assert!(
            b.problems[0].contains("Pod demo/b") && b.problems[0].contains("status.podIP"),
            "{:?}",
            b.problems
        );
    }

    #[test]
    fn pod_ip_from_endpoint_slice() {
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "srv-1", "namespace": "demo",
                "labels": {SERVICE_NAME_LABEL: "srv"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.0.0.7"], "targetRef": {"kind": "Pod", "name": "a"}},
                {"addresses": ["10.0.0.8"], "conditions": {"ready": false}},
            ],
        }))
        .expect("slice");
        let objs = Objects {
            pods: vec![pod("a", None)],
            endpoint_slices: vec![Arc::new(slice)],
            ..Default::default()
        };
        let b = build(&objs);
        assert_eq!(b.snapshot.pods[0].ip.as_deref(), Some("10.0.0.7"));
        assert_eq!(
            b.snapshot.endpoints.get("demo/srv"),
            Some(&vec!["10.0.0.7".to_string()])
        );
    }

    fn namespace(name: &str, labels: serde_json::Value) -> Arc<KNamespace> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}))
                .expect("namespace"),
        )
    }

    fn service(ns: &str, name: &str, vip: &str, labels: serde_json::Value) -> Arc<KService> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": ns, "labels": labels},
                "spec": {"clusterIP": vip, "selector": {"app": name},
                    "ports": [{"port": 9080, "protocol": "TCP"}]},
            }))
            .expect("service"),
        )
    }

    fn pod_in(ns: &str, name: &str, ip: &str) -> Arc<KPod> {
        let mut p = (*pod(name, Some(ip))).clone();
        p.metadata.namespace = Some(ns.into());
        p.spec
            .get_or_insert_with(Default::default)
            .service_account_name = Some(name.into());
        Arc::new(p)
    }

    /// Namespace `demo` names no waypoint and `shop` names `shop-wp`; the
    /// Services' own `istio.io/use-waypoint` labels add or override.
    fn service_waypoints() -> Built {
        let ambient = json!({"istio.io/dataplane-mode": "ambient"});
        // Not enrolled, as waypoints are: nodes learn it only as a waypoint.
        let mut reviews_wp = (*pod_in("demo", "reviews-wp", "10.0.0.5")).clone();
        reviews_wp.metadata.labels = Some(BTreeMap::from([(
            mesh_api::labels::DATAPLANE_MODE_LABEL.to_string(),
            "none".to_string(),
        )]));
        let objs = Objects {
            namespaces: vec![
                namespace("demo", ambient.clone()),
                namespace(
                    "shop",
                    json!({"istio.io/dataplane-mode": "ambient", USE_WAYPOINT_LABEL: "shop-wp"}),
                ),
            ],
            pods: vec![
                Arc::new(reviews_wp),
                pod_in("shop", "shop-wp", "10.0.1.5"),
                pod_in("shop", "orders-wp", "10.0.1.6"),
            ],
            services: vec![
                service(
                    "demo",
                    "reviews",
                    "10.96.0.1",
                    json!({USE_WAYPOINT_LABEL: "reviews-wp", "app": "reviews", "team": "books"}),
                ),
                service("demo", "details", "10.96.0.2", json!({"app": "details"})),
                // Names a waypoint no pod is: declares nothing.
                service(
                    "demo",
                    "ghost",
                    "10.96.0.3",
                    json!({USE_WAYPOINT_LABEL: "nobody"}),
                ),
                service(
                    "shop",
                    "cart",
                    "10.96.1.1",
                    json!({USE_WAYPOINT_LABEL: "none"}),
                ),
                service(
                    "shop",
                    "orders",
                    "10.96.1.2",
                    json!({USE_WAYPOINT_LABEL: "orders-wp"}),
                ),
            ],
            ..Default::default()
        };
        let b = build(&objs);
        assert!(!b.fatal && b.problems.is_empty(), "{:?}", b.problems);
        b
    }

    #[test]
    fn service_keeps_only_its_use_waypoint_label() {
        let b = service_waypoints();
        let labels_of = |name: &str| {
            b.snapshot
                .services
                .iter()
                .find(|s| s.name == name)
                .map(|s| s.labels.clone())
                .expect("service kept")
        };
        assert_eq!(
            labels_of("reviews"),
            BTreeMap::from([(USE_WAYPOINT_LABEL.to_string(), "reviews-wp".to_string())])
        );
        assert!(labels_of("details").is_empty());
        // And the node receives it.
        let node = crate::translate::for_node(
            &b.snapshot,
            "node-a",
            &crate::translate::MeshSettings::default(),
        );
        let sent = node
            .get(mesh_proto::type_urls::SERVICE)
            .and_then(|m| m.get("demo/reviews"))
            .expect("demo/reviews sent");
        let msg = <mesh_proto::ambit::v1::Service as prost::Message>::decode(
            sent.resource.value.as_slice(),
        )
        .expect("decode");
        assert_eq!(
            msg.labels.get(USE_WAYPOINT_LABEL).map(String::as_str),
            Some("reviews-wp")
        );
        assert_eq!(msg.labels.len(), 1, "{:?}", msg.labels);
    }

    #[test]
    fn waypoints_named_by_service_labels_are_declared() {
        let b = service_waypoints();
        let declared: Vec<String> = b
            .snapshot
            .waypoints()
            .iter()
            .map(|w| format!("{}/{} sa={}", w.namespace, w.name, w.service_account))
            .collect();
        assert_eq!(
            declared,
            [
                "demo/reviews-wp sa=reviews-wp",
                "shop/orders-wp sa=orders-wp",
                "shop/shop-wp sa=shop-wp",
            ]
        );
        // A waypoint named by a Service only gets its own identity signed.
        let id = mesh_proto::waypoint_id::format("demo", "reviews-wp");
        assert_eq!(
            crate::translate::node_identities(&b.snapshot, &id),
            BTreeSet::from([("demo".to_string(), "reviews-wp".to_string())])
        );
        // And every node learns its workload, to tunnel to it.
        let node = crate::translate::for_node(
            &b.snapshot,
            "node-b",
            &crate::translate::MeshSettings::default(),
        );
        assert!(node
            .get(mesh_proto::type_urls::WORKLOAD)
            .is_some_and(|m| m.contains_key("demo/reviews-wp")));
    }
}
