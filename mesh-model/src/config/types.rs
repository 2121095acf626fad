//! The serde shapes of the local config file: the node's own entries
//! (namespaces, workloads, services, certificates), as written, so that the
//! checks can say exactly what is wrong with them. Its `policies` are Istio
//! resources, read by [`mesh_policy`] (mesh-api) as the controller reads
//! them; `crate::state` holds the typed, validated form.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::state::{DEFAULT_CLUSTER_DOMAIN, DEFAULT_ROOT_NAMESPACE, DEFAULT_TRUST_DOMAIN};

pub use crate::build::{CertificatesSpec, IdentityCertSpec, SECURITY_API_VERSIONS};
pub use mesh_policy::Policy;

fn default_trust_domain() -> String {
    DEFAULT_TRUST_DOMAIN.to_string()
}
fn default_root_namespace() -> String {
    DEFAULT_ROOT_NAMESPACE.to_string()
}
fn default_cluster_domain() -> String {
    DEFAULT_CLUSTER_DOMAIN.to_string()
}

/// The whole local config file. Build one with [`crate::config::parse`] or
/// [`crate::config::load`], which validate it and collect warnings.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LocalConfig {
    /// SPIFFE trust domain of the local identities (default `cluster.local`).
    pub trust_domain: String,
    /// Istio's root namespace: policies there apply mesh-wide (default `istio-system`).
    pub root_namespace: String,
    /// DNS suffix of service host names (default `cluster.local`).
    pub cluster_domain: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificates: Option<CertificatesSpec>,
    pub namespaces: Vec<NamespaceSpec>,
    pub workloads: Vec<WorkloadSpec>,
    pub services: Vec<ServiceSpec>,
    /// PeerAuthentication and AuthorizationPolicy resources, checked by
    /// [`mesh_policy::parse`].
    pub policies: Vec<Policy>,
    /// Filled by validation: things that are accepted but do not do what the
    /// operator may expect (HTTP attributes at L4, ignored policies, ...).
    #[serde(skip)]
    pub(crate) warnings: Vec<String>,
}

impl LocalConfig {
    /// Warnings found when the config was validated (empty if it was built
    /// by hand and not validated).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

impl Default for LocalConfig {
    fn default() -> Self {
        LocalConfig {
            trust_domain: default_trust_domain(),
            root_namespace: default_root_namespace(),
            cluster_domain: default_cluster_domain(),
            certificates: None,
            namespaces: Vec::new(),
            workloads: Vec::new(),
            services: Vec::new(),
            policies: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespaceSpec {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSpec {
    pub name: String,
    pub namespace: String,
    /// Defaults to `default`, as in Kubernetes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    pub node: String,
    pub ip: String,
    /// Local mode: path of the pod's network namespace (e.g. `/run/netns/x`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    pub name: String,
    pub namespace: String,
    /// Cluster IPs (VIPs).
    pub addresses: Vec<String>,
    pub ports: Vec<ServicePortSpec>,
    /// Pods (workloads) in the service's namespace with all these labels are
    /// its endpoints. Empty: no endpoints.
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    /// The Service's own labels (`metadata.labels`); `istio.io/use-waypoint`
    /// here overrides the namespace's. Not written when empty, so configs
    /// without service labels serialise as before.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePortSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub port: i64,
    /// Numeric container port; defaults to `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<i64>,
    /// `TCP` (default). Other protocols are accepted and not proxied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}
