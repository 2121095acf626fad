//! What the node knows: workloads, services, certificates' locations and the
//! compiled L4 policies, built by the config compiler
//! (`crate::config::build_state`). Immutable once built (apart from the
//! per-service round-robin counters); a new config produces a new
//! `ProxyState`. This module imports neither the config model nor the
//! policy adapter: they build on it, not the reverse.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use mesh_authz::{AuthzPolicy, PeerAuthnPolicy};
use mesh_identity::Identity;

/// The trust domain when the config names none.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";
/// The namespace whose policies are mesh-wide, when the config names none.
pub const DEFAULT_ROOT_NAMESPACE: &str = mesh_api::labels::ROOT_NAMESPACE;
/// The cluster DNS domain of service hostnames, when the config names none.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

// Istio's label names and how ambient reads them are mesh-api's, the one
// model; the node and the waypoint take them from there.
pub use mesh_api::labels::{waypoint_name, DATAPLANE_MODE_LABEL, NO_WAYPOINT, USE_WAYPOINT_LABEL};

/// A pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    pub name: String,
    pub namespace: String,
    pub service_account: String,
    pub node: String,
    pub ip: IpAddr,
    /// Local mode: the pod's network namespace path.
    pub netns: Option<PathBuf>,
    pub labels: BTreeMap<String, String>,
}

impl Workload {
    pub fn identity(&self, trust_domain: &str) -> Identity {
        Identity::new(trust_domain, &self.namespace, &self.service_account)
    }

    /// `namespace/name`
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    pub name: Option<String>,
    pub port: u16,
    pub target_port: u16,
    pub protocol: Protocol,
}

#[derive(Debug)]
pub struct Service {
    pub name: String,
    pub namespace: String,
    pub addresses: Vec<IpAddr>,
    pub ports: Vec<ServicePort>,
    pub selector: BTreeMap<String, String>,
    /// The Service's own labels (`istio.io/use-waypoint`, ...).
    pub labels: BTreeMap<String, String>,
    /// `name.namespace.svc.<cluster domain>`
    pub hostname: String,
    pub(crate) endpoints: Vec<Arc<Workload>>,
    pub(crate) next: AtomicUsize,
}

impl Service {
    /// Workloads of the service's namespace that match its selector, in file order.
    pub fn endpoints(&self) -> &[Arc<Workload>] {
        &self.endpoints
    }

    /// `namespace/name`
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn pick(&self) -> Option<&Arc<Workload>> {
        if self.endpoints.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.endpoints.len();
        self.endpoints.get(i)
    }
}

/// Where an outbound connection goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    pub workload: Arc<Workload>,
    /// Endpoint `ip:targetPort` (or the pod address as dialled).
    pub target: SocketAddr,
    /// `name.ns.svc.cluster.local` when reached through a service.
    pub service_host: Option<String>,
    /// The identity the upstream must present.
    pub identity: Identity,
}

/// Certificate file locations for the identity module (nothing is loaded here).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificatePaths {
    pub roots: PathBuf,
    pub identities: Vec<IdentityCertPaths>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityCertPaths {
    pub identity: Identity,
    pub cert_chain: PathBuf,
    pub key: PathBuf,
}

impl CertificatePaths {
    pub fn for_identity(&self, id: &Identity) -> Option<&IdentityCertPaths> {
        self.identities.iter().find(|c| &c.identity == id)
    }
}

#[derive(Debug)]
pub struct ProxyState {
    pub(crate) trust_domain: String,
    pub(crate) root_namespace: String,
    pub(crate) cluster_domain: String,
    pub(crate) namespaces: BTreeMap<String, Namespace>,
    pub(crate) workloads: Vec<Arc<Workload>>,
    pub(crate) by_ip: HashMap<IpAddr, Arc<Workload>>,
    pub(crate) services: Vec<Arc<Service>>,
    /// VIP:port -> (service, index into its ports)
    pub(crate) by_vip: HashMap<SocketAddr, (Arc<Service>, usize)>,
    pub(crate) certificates: Option<CertificatePaths>,
    pub(crate) peer_authentications: Vec<PeerAuthnPolicy>,
    pub(crate) authorization_policies: Vec<AuthzPolicy>,
    pub(crate) warnings: Vec<String>,
}

impl Default for ProxyState {
    fn default() -> Self {
        ProxyState {
            trust_domain: DEFAULT_TRUST_DOMAIN.to_string(),
            root_namespace: DEFAULT_ROOT_NAMESPACE.to_string(),
            cluster_domain: DEFAULT_CLUSTER_DOMAIN.to_string(),
            namespaces: BTreeMap::new(),
            workloads: Vec::new(),
            by_ip: HashMap::new(),
            services: Vec::new(),
            by_vip: HashMap::new(),
            certificates: None,
            peer_authentications: Vec::new(),
            authorization_policies: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

impl ProxyState {
    /// An empty state: no workloads, no services, no policies.
    pub fn empty() -> ProxyState {
        ProxyState::default()
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn root_namespace(&self) -> &str {
        &self.root_namespace
    }

    pub fn cluster_domain(&self) -> &str {
        &self.cluster_domain
    }

    /// Warnings from validation (HTTP attributes at L4, ignored policies, ...).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    pub fn namespace(&self, name: &str) -> Option<&Namespace> {
        self.namespaces.get(name)
    }

    pub fn workloads(&self) -> &[Arc<Workload>] {
        &self.workloads
    }

    pub fn workload_by_ip(&self, ip: IpAddr) -> Option<&Workload> {
        self.by_ip.get(&ip).map(|w| w.as_ref())
    }

    pub fn workload_arc_by_ip(&self, ip: IpAddr) -> Option<Arc<Workload>> {
        self.by_ip.get(&ip).cloned()
    }

    pub fn workload(&self, namespace: &str, name: &str) -> Option<&Arc<Workload>> {
        self.workloads
            .iter()
            .find(|w| w.namespace == namespace && w.name == name)
    }

    /// The workloads scheduled on `node`, in file order.
    pub fn local_workloads<'a>(
        &'a self,
        node: &'a str,
    ) -> impl Iterator<Item = &'a Arc<Workload>> + 'a {
        self.workloads.iter().filter(move |w| w.node == node)
    }

    /// In the mesh: the pod's own `istio.io/dataplane-mode` label decides
    /// (`ambient` in, `none` out); otherwise its namespace's label must be
    /// `ambient`.
    pub fn is_ambient(&self, w: &Workload) -> bool {
        match w.labels.get(DATAPLANE_MODE_LABEL).map(String::as_str) {
            Some("ambient") => true,
            Some("none") => false,
            _ => self
                .namespaces
                .get(&w.namespace)
                .and_then(|ns| ns.labels.get(DATAPLANE_MODE_LABEL))
                .is_some_and(|m| m == "ambient"),
        }
    }

    pub fn identity_of(&self, w: &Workload) -> Identity {
        w.identity(&self.trust_domain)
    }

    pub fn services(&self) -> &[Arc<Service>] {
        &self.services
    }

    /// The service whose VIP:port is `dst` (even if it has no endpoints).
    pub fn service_by_vip(&self, dst: SocketAddr) -> Option<&Arc<Service>> {
        self.by_vip.get(&dst).map(|(s, _)| s)
    }

    /// Resolves an original destination: a service VIP:port picks one of its
    /// endpoints (round-robin) at the targetPort; a pod IP is that workload;
    /// anything else (or a service without endpoints) is `None`.
    pub fn resolve(&self, dst: SocketAddr) -> Option<Upstream> {
        if let Some((svc, port_idx)) = self.by_vip.get(&dst) {
            let port = svc.ports.get(*port_idx)?;
            let w = svc.pick()?;
            return Some(Upstream {
                workload: w.clone(),
                target: SocketAddr::new(w.ip, port.target_port),
                service_host: Some(svc.hostname.clone()),
                identity: w.identity(&self.trust_domain),
            });
        }
        let w = self.by_ip.get(&dst.ip())?;
        Some(Upstream {
            workload: w.clone(),
            target: dst,
            service_host: None,
            identity: w.identity(&self.trust_domain),
        })
    }

    /// The waypoint that serves `service`: the workload, in the service's
    /// namespace, that the service's or else its namespace's
    /// `istio.io/use-waypoint` label names ([`waypoint_name`]). `None` when
    /// neither is labelled, the label that decides is `none` (or empty), or
    /// the waypoint workload is unknown.
    pub fn waypoint_for(&self, service: &Service) -> Option<Arc<Workload>> {
        let ns_labels = self.namespaces.get(&service.namespace).map(|n| &n.labels);
        let name = waypoint_name(&service.labels, ns_labels)?;
        self.workload(&service.namespace, name).cloned()
    }

    pub fn certificates(&self) -> Option<&CertificatePaths> {
        self.certificates.as_ref()
    }

    pub fn authorization_policies(&self) -> &[AuthzPolicy] {
        &self.authorization_policies
    }

    pub fn peer_authentications(&self) -> &[PeerAuthnPolicy] {
        &self.peer_authentications
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod waypoint_tests {
    use super::*;

    const CFG: &str = r#"
namespaces:
- name: bookinfo
  labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint}
- name: plain
  labels: {istio.io/dataplane-mode: ambient}
- name: missing
  labels: {istio.io/use-waypoint: nobody}
- name: off
  labels: {istio.io/use-waypoint: none}
workloads:
- {name: waypoint, namespace: bookinfo, serviceAccount: waypoint, node: node-a, ip: 10.10.1.5}
- {name: reviews-v1, namespace: bookinfo, serviceAccount: reviews, node: node-b, ip: 10.10.2.2, labels: {app: reviews}}
- {name: waypoint, namespace: off, node: node-b, ip: 10.10.2.9, labels: {app: reviews}}
- {name: srv, namespace: plain, node: node-b, ip: 10.10.2.3, labels: {app: reviews}}
services:
- {name: reviews, namespace: bookinfo, addresses: [10.96.0.20], ports: [{port: 9080}], selector: {app: reviews}}
- {name: reviews, namespace: plain, addresses: [10.96.0.21], ports: [{port: 9080}], selector: {app: reviews}}
- {name: reviews, namespace: missing, addresses: [10.96.0.22], ports: [{port: 9080}], selector: {app: reviews}}
- {name: reviews, namespace: off, addresses: [10.96.0.23], ports: [{port: 9080}], selector: {app: reviews}}
"#;

    fn svc(state: &ProxyState, vip: &str) -> Arc<Service> {
        let dst: SocketAddr = vip.parse().expect("addr");
        state.service_by_vip(dst).expect("service").clone()
    }

    #[test]
    fn namespace_label_selects_the_waypoint_workload() {
        let state = crate::config::parse_state(CFG).unwrap_or_else(|e| panic!("{e}"));
        let wp = state
            .waypoint_for(&svc(&state, "10.96.0.20:9080"))
            .expect("waypoint");
        assert_eq!(wp.key(), "bookinfo/waypoint");
        assert_eq!(
            state.identity_of(&wp).to_string(),
            "spiffe://cluster.local/ns/bookinfo/sa/waypoint"
        );
        assert!(state
            .waypoint_for(&svc(&state, "10.96.0.21:9080"))
            .is_none());
        assert!(state
            .waypoint_for(&svc(&state, "10.96.0.22:9080"))
            .is_none());
        assert!(state
            .waypoint_for(&svc(&state, "10.96.0.23:9080"))
            .is_none());
    }

    /// Services carrying `istio.io/use-waypoint` themselves, in a namespace
    /// without the label (`shop`) and in one with it (`bookinfo`).
    const SERVICE_LABELS: &str = r#"
namespaces:
- name: bookinfo
  labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint}
- name: shop
  labels: {istio.io/dataplane-mode: ambient}
workloads:
- {name: waypoint, namespace: bookinfo, serviceAccount: waypoint, node: node-a, ip: 10.10.1.5}
- {name: reviews-waypoint, namespace: bookinfo, serviceAccount: rw, node: node-a, ip: 10.10.1.6}
- {name: shop-waypoint, namespace: shop, serviceAccount: sw, node: node-b, ip: 10.10.2.5}
- {name: cart-1, namespace: shop, node: node-b, ip: 10.10.2.2, labels: {app: cart}}
- {name: reviews-1, namespace: bookinfo, node: node-b, ip: 10.10.2.3, labels: {app: reviews}}
services:
- {name: cart, namespace: shop, addresses: [10.96.1.1], ports: [{port: 80}], selector: {app: cart},
   labels: {istio.io/use-waypoint: shop-waypoint}}
- {name: orders, namespace: shop, addresses: [10.96.1.2], ports: [{port: 80}], selector: {app: cart}}
- {name: ghost, namespace: shop, addresses: [10.96.1.3], ports: [{port: 80}], selector: {app: cart},
   labels: {istio.io/use-waypoint: nobody}}
- {name: ratings, namespace: bookinfo, addresses: [10.96.0.30], ports: [{port: 9080}], selector: {app: reviews},
   labels: {istio.io/use-waypoint: none}}
- {name: reviews, namespace: bookinfo, addresses: [10.96.0.31], ports: [{port: 9080}], selector: {app: reviews},
   labels: {istio.io/use-waypoint: reviews-waypoint}}
- {name: details, namespace: bookinfo, addresses: [10.96.0.32], ports: [{port: 9080}], selector: {app: reviews}}
- {name: blank, namespace: bookinfo, addresses: [10.96.0.33], ports: [{port: 9080}], selector: {app: reviews},
   labels: {istio.io/use-waypoint: ""}}
- {name: lost, namespace: bookinfo, addresses: [10.96.0.34], ports: [{port: 9080}], selector: {app: reviews},
   labels: {istio.io/use-waypoint: nobody}}
"#;

    fn waypoint_of(state: &ProxyState, vip: &str) -> Option<String> {
        state.waypoint_for(&svc(state, vip)).map(|w| w.key())
    }

    #[test]
    fn service_label_in_an_unlabelled_namespace_selects_the_waypoint() {
        let state = crate::config::parse_state(SERVICE_LABELS).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            waypoint_of(&state, "10.96.1.1:80").as_deref(),
            Some("shop/shop-waypoint")
        );
        // Its unlabelled neighbour goes direct.
        assert_eq!(waypoint_of(&state, "10.96.1.2:80"), None);
    }

    #[test]
    fn service_label_none_opts_out_of_the_namespace_waypoint() {
        let state = crate::config::parse_state(SERVICE_LABELS).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(waypoint_of(&state, "10.96.0.30:9080"), None);
        // An empty value opts out too; it does not fall back to the namespace.
        assert_eq!(waypoint_of(&state, "10.96.0.33:9080"), None);
        // The namespace's waypoint still serves the unlabelled service.
        assert_eq!(
            waypoint_of(&state, "10.96.0.32:9080").as_deref(),
            Some("bookinfo/waypoint")
        );
    }

    #[test]
    fn service_label_names_another_waypoint_than_the_namespace() {
        let state = crate::config::parse_state(SERVICE_LABELS).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            waypoint_of(&state, "10.96.0.31:9080").as_deref(),
            Some("bookinfo/reviews-waypoint")
        );
    }

    #[test]
    fn service_label_naming_an_unknown_workload_has_no_waypoint() {
        let state = crate::config::parse_state(SERVICE_LABELS).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(waypoint_of(&state, "10.96.1.3:80"), None);
        // Not the namespace's waypoint either: the service asked for another.
        assert_eq!(waypoint_of(&state, "10.96.0.34:9080"), None);
    }

    #[test]
    fn waypoint_name_service_first_then_namespace() {
        let labels = |v: &[(&str, &str)]| -> BTreeMap<String, String> {
            v.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let ns = labels(&[(USE_WAYPOINT_LABEL, "ns-wp")]);
        let none = BTreeMap::new();
        assert_eq!(waypoint_name(&none, Some(&ns)), Some("ns-wp"));
        assert_eq!(waypoint_name(&none, None), None);
        assert_eq!(waypoint_name(&none, Some(&none)), None);
        let own = labels(&[(USE_WAYPOINT_LABEL, "svc-wp")]);
        assert_eq!(waypoint_name(&own, Some(&ns)), Some("svc-wp"));
        assert_eq!(waypoint_name(&own, None), Some("svc-wp"));
        let off = labels(&[(USE_WAYPOINT_LABEL, NO_WAYPOINT)]);
        assert_eq!(waypoint_name(&off, Some(&ns)), None);
        let blank = labels(&[(USE_WAYPOINT_LABEL, "")]);
        assert_eq!(waypoint_name(&blank, Some(&ns)), None);
        let ns_off = labels(&[(USE_WAYPOINT_LABEL, NO_WAYPOINT)]);
        assert_eq!(waypoint_name(&own, Some(&ns_off)), Some("svc-wp"));
    }
}
