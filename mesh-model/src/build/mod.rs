//! The one way to a [`ProxyState`]: from mesh-proto messages
//! (`mesh_proto::ambit::v1`), as the controller sends them and as the local
//! file mode converts its file to. Every check of what the resources mean
//! (addresses, ports, duplicates, VIP clashes, names and labels, policy
//! syntax, unsupported actions, ...) is made here, once.
//!
//! The input comes from the network: nothing in it is trusted. Each problem
//! names the entry (`workloads[2] (demo/server-1)`, `policies[1]
//! AuthorizationPolicy demo/deny-all`), the field and the reason;
//! accepted-but-surprising input is reported in [`ProxyState::warnings`].

mod certificates;
mod endpoints;
mod policy;
mod rule;

use std::collections::{BTreeMap, HashMap};

use mesh_proto::ambit::v1 as pb;

pub use certificates::{CertificatesSpec, IdentityCertSpec};
pub use policy::SECURITY_API_VERSIONS;

pub(crate) use policy::policy_entry_name;

use crate::problems::{Invalid, Problems};
use crate::state::{
    Namespace, ProxyState, DEFAULT_CLUSTER_DOMAIN, DEFAULT_ROOT_NAMESPACE, DEFAULT_TRUST_DOMAIN,
};
use crate::syntax::{check_label_name, check_labels, check_subdomain_name};

/// One security resource. Kept in one ordered list so that problems name
/// them `policies[i] Kind ns/name` whatever their kind.
#[derive(Clone, Debug, PartialEq)]
pub enum PolicyMessage {
    PeerAuthentication(pb::PeerAuthentication),
    Authorization(pb::Authorization),
}

impl PolicyMessage {
    /// The Istio kind, as problems name it.
    pub fn kind(&self) -> &'static str {
        match self {
            PolicyMessage::PeerAuthentication(_) => "PeerAuthentication",
            PolicyMessage::Authorization(_) => "AuthorizationPolicy",
        }
    }

    /// `(name, namespace, apiVersion)`
    pub fn metadata(&self) -> (&str, &str, &str) {
        match self {
            PolicyMessage::PeerAuthentication(p) => (&p.name, &p.namespace, &p.api_version),
            PolicyMessage::Authorization(p) => (&p.name, &p.namespace, &p.api_version),
        }
    }
}

/// Everything a state is built from. Lists are in the order problems
/// name them (`workloads[i]`, ...).
#[derive(Clone, Debug, PartialEq)]
pub struct Resources {
    pub trust_domain: String,
    /// Istio's root namespace: policies there apply mesh-wide.
    pub root_namespace: String,
    /// DNS suffix of service host names.
    pub cluster_domain: String,
    /// Local file mode only.
    pub certificates: Option<CertificatesSpec>,
    pub namespaces: Vec<pb::Namespace>,
    pub workloads: Vec<pb::Workload>,
    pub services: Vec<pb::Service>,
    pub policies: Vec<PolicyMessage>,
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            trust_domain: DEFAULT_TRUST_DOMAIN.to_string(),
            root_namespace: DEFAULT_ROOT_NAMESPACE.to_string(),
            cluster_domain: DEFAULT_CLUSTER_DOMAIN.to_string(),
            certificates: None,
            namespaces: Vec::new(),
            workloads: Vec::new(),
            services: Vec::new(),
            policies: Vec::new(),
        }
    }
}

impl Resources {
    /// A MeshConfig's non-empty fields over what is there (the defaults).
    pub fn apply_mesh_config(&mut self, mesh: pb::MeshConfig) {
        if !mesh.trust_domain.is_empty() {
            self.trust_domain = mesh.trust_domain;
        }
        if !mesh.root_namespace.is_empty() {
            self.root_namespace = mesh.root_namespace;
        }
        if !mesh.cluster_domain.is_empty() {
            self.cluster_domain = mesh.cluster_domain;
        }
    }

    /// Sets the namespaces: those `received`, and an unlabelled one (not in
    /// the mesh) for each that a workload, service or policy names but that
    /// was not received. Over xDS the types arrive one response at a time: a
    /// namespace may be gone a moment before the workloads in it.
    pub fn set_namespaces(&mut self, mut received: BTreeMap<String, pb::Namespace>) {
        let referenced: std::collections::BTreeSet<String> = self
            .workloads
            .iter()
            .map(|w| w.namespace.clone())
            .chain(self.services.iter().map(|s| s.namespace.clone()))
            .chain(self.policies.iter().map(|p| p.metadata().1.to_string()))
            .collect();
        for ns in referenced {
            received.entry(ns.clone()).or_insert(pb::Namespace {
                name: ns,
                labels: BTreeMap::new(),
            });
        }
        self.namespaces = received.into_values().collect();
    }
}

/// Checks `input` and builds the state, or returns every problem found.
pub fn build(input: &Resources) -> Result<ProxyState, Invalid> {
    let mut p = Problems::default();

    if input.trust_domain.is_empty() || input.trust_domain.contains('/') {
        p.err(
            "top level",
            "trustDomain",
            format!("{:?} is not a trust domain", input.trust_domain),
        );
    }
    check_label_name("top level", "rootNamespace", &input.root_namespace, &mut p);
    check_subdomain_name("top level", "clusterDomain", &input.cluster_domain, &mut p);

    let namespaces = compile_namespaces(&input.namespaces, &mut p);
    let certificates = input
        .certificates
        .as_ref()
        .map(|c| certificates::compile_certificates(c, &input.trust_domain, &mut p));
    let endpoints = endpoints::compile(input, &namespaces, &mut p);
    let policies = policy::compile(input, &namespaces, &mut p);

    if !p.errors.is_empty() {
        return Err(Invalid(p.errors));
    }
    Ok(ProxyState {
        trust_domain: input.trust_domain.clone(),
        root_namespace: input.root_namespace.clone(),
        cluster_domain: input.cluster_domain.clone(),
        namespaces,
        workloads: endpoints.workloads,
        by_ip: endpoints.by_ip,
        services: endpoints.services,
        by_vip: endpoints.by_vip,
        certificates,
        peer_authentications: policies.peer_authentications,
        authorization_policies: policies.authorization_policies,
        warnings: p.warnings,
    })
}

fn compile_namespaces(list: &[pb::Namespace], p: &mut Problems) -> BTreeMap<String, Namespace> {
    let mut namespaces = BTreeMap::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, ns) in list.iter().enumerate() {
        let entry = format!("namespaces[{i}] ({})", ns.name);
        check_label_name(&entry, "name", &ns.name, p);
        check_labels(&entry, "labels", &ns.labels, p);
        if let Some(j) = index.insert(&ns.name, i) {
            p.err(
                &entry,
                "name",
                format!("duplicate namespace {:?} (also namespaces[{j}])", ns.name),
            );
            continue;
        }
        namespaces.insert(
            ns.name.clone(),
            Namespace {
                name: ns.name.clone(),
                labels: ns.labels.clone(),
            },
        );
    }
    namespaces
}

#[cfg(test)]
mod tests;
