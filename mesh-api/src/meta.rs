//! Object metadata and the generic object wrapper.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_yaml::Value;

/// Kubernetes object metadata. Server-populated fields (as in `kubectl get
/// -o yaml`) are accepted and ignored; anything else is an unknown field.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Absent: `default`, as `kubectl apply` would do in the default context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing)]
    pub generate_name: Option<Value>,
    #[serde(default, skip_serializing)]
    pub uid: Option<Value>,
    #[serde(default, skip_serializing)]
    pub resource_version: Option<Value>,
    #[serde(default, skip_serializing)]
    pub generation: Option<Value>,
    #[serde(default, skip_serializing)]
    pub creation_timestamp: Option<Value>,
    #[serde(default, skip_serializing)]
    pub deletion_timestamp: Option<Value>,
    #[serde(default, skip_serializing)]
    pub deletion_grace_period_seconds: Option<Value>,
    #[serde(default, skip_serializing)]
    pub managed_fields: Option<Value>,
    #[serde(default, skip_serializing)]
    pub owner_references: Option<Value>,
    #[serde(default, skip_serializing)]
    pub finalizers: Option<Value>,
    #[serde(default, skip_serializing)]
    pub self_link: Option<Value>,
}

pub const DEFAULT_NAMESPACE: &str = "default";

impl ObjectMeta {
    /// The namespace, `default` when absent.
    pub fn namespace_or_default(&self) -> &str {
        self.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE)
    }
}

/// A typed Istio / Gateway API object.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Object<S> {
    pub api_version: String,
    pub metadata: ObjectMeta,
    pub spec: S,
}

impl<S> Object<S> {
    pub fn name(&self) -> Option<&str> {
        self.metadata.name.as_deref()
    }
    pub fn namespace(&self) -> &str {
        self.metadata.namespace_or_default()
    }
}

/// Istio `WorkloadSelector` (`matchLabels`), as PeerAuthentication,
/// AuthorizationPolicy, RequestAuthentication and Telemetry write it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MatchLabelsSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

/// Istio `WorkloadSelector` (`labels`), as Sidecar, EnvoyFilter,
/// ServiceEntry and DestinationRule write it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelsSelector {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// `targetRef` / `targetRefs` (policy attachment).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyTargetReference {
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
}
