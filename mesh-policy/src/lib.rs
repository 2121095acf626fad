//! The Istio security resources the nodes enforce (PeerAuthentication,
//! AuthorizationPolicy), one way for every source: read with mesh-api (the
//! one Istio model), held to the node's narrower rules ([`node_rules`]),
//! which refuse what mesh-api accepts but a node cannot enforce as written,
//! and written as the mesh-proto messages the nodes receive ([`to_proto`]).
//!
//! The controller's sources (a folder, the Kubernetes API) and the node's
//! local file read policies through here, so they accept and refuse the
//! same documents with the same words.

pub mod node_rules;
pub mod to_proto;

use std::collections::BTreeMap;

use mesh_api::security::{AuthorizationPolicySpec, PeerAuthenticationSpec};
use mesh_api::{Code, Diagnostic, Object, ObjectMeta, ObjectRef, Resource, Severity};

/// The kinds the nodes enforce.
pub const NODE_KINDS: &[&str] = &["PeerAuthentication", "AuthorizationPolicy"];

/// A validated node policy.
#[derive(Clone, Debug, PartialEq)]
pub enum Policy {
    PeerAuthentication(Object<PeerAuthenticationSpec>),
    AuthorizationPolicy(Object<AuthorizationPolicySpec>),
}

impl Policy {
    pub fn kind(&self) -> &'static str {
        match self {
            Policy::PeerAuthentication(_) => "PeerAuthentication",
            Policy::AuthorizationPolicy(_) => "AuthorizationPolicy",
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Policy::PeerAuthentication(p) => &p.metadata,
            Policy::AuthorizationPolicy(p) => &p.metadata,
        }
    }

    /// `default` when the object does not say.
    pub fn namespace(&self) -> &str {
        self.metadata().namespace_or_default()
    }

    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or_default()
    }

    /// `spec.selector.matchLabels`, when a selector is written.
    pub fn selector(&self) -> Option<&BTreeMap<String, String>> {
        match self {
            Policy::PeerAuthentication(p) => p.spec.selector.as_ref(),
            Policy::AuthorizationPolicy(p) => p.spec.selector.as_ref(),
        }
        .map(|s| &s.match_labels)
    }

    /// `Kind ns/name`, as problems name it.
    pub fn describe(&self) -> String {
        format!("{} {}/{}", self.kind(), self.namespace(), self.name())
    }

    fn object_ref(&self) -> ObjectRef {
        ObjectRef {
            kind: self.kind().to_string(),
            namespace: self.namespace().to_string(),
            name: Some(self.name().to_string()),
        }
    }
}

/// As written: `apiVersion`, `kind`, `metadata`, `spec` (mesh-api's
/// objects leave the kind to their type).
impl serde::Serialize for Policy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(4))?;
        match self {
            Policy::PeerAuthentication(o) => {
                m.serialize_entry("apiVersion", &o.api_version)?;
                m.serialize_entry("kind", self.kind())?;
                m.serialize_entry("metadata", &o.metadata)?;
                m.serialize_entry("spec", &o.spec)?;
            }
            Policy::AuthorizationPolicy(o) => {
                m.serialize_entry("apiVersion", &o.api_version)?;
                m.serialize_entry("kind", self.kind())?;
                m.serialize_entry("metadata", &o.metadata)?;
                m.serialize_entry("spec", &o.spec)?;
            }
        }
        m.end()
    }
}

/// Reads one document (`raw`, as written) with mesh-api and holds it to the
/// node's rules: [`from_reading`] of mesh-api's reading. `source_name`
/// names the file (or the API) in diagnostics' locations.
pub fn parse(raw: &serde_json::Value, source_name: &str) -> Result<Policy, Vec<Diagnostic>> {
    let json = serde_json::to_string(raw).map_err(|e| {
        vec![error(
            object_ref_of(raw),
            Code::YamlSyntax,
            String::new(),
            e.to_string(),
        )]
    })?;
    let docs = mesh_api::parse_documents(&json, source_name);
    let errors: Vec<Diagnostic> = docs
        .iter()
        .flat_map(|d| d.diagnostics.iter())
        .filter(|d| d.is_error())
        .cloned()
        .collect();
    let resource = docs.into_iter().next().and_then(|d| d.resource);
    from_reading(resource, errors, raw)
}

/// Holds mesh-api's reading of `raw` (its typed `resource` and its
/// error-level diagnostics) to the node's rules. The rules look at `raw`
/// too, for what the typed form loses (`from: []`, metadata fields).
/// Errors: mesh-api's, then the node's at the fields mesh-api found no
/// fault with; `Kind ns/name: field f: reason` when displayed.
pub fn from_reading(
    resource: Option<Resource>,
    mut errors: Vec<Diagnostic>,
    raw: &serde_json::Value,
) -> Result<Policy, Vec<Diagnostic>> {
    let policy = match resource {
        Some(Resource::PeerAuthentication(o)) => Policy::PeerAuthentication(o),
        Some(Resource::AuthorizationPolicy(o)) => Policy::AuthorizationPolicy(o),
        _ => {
            if errors.is_empty() {
                errors.push(error(
                    object_ref_of(raw),
                    Code::InvalidObjectMeta,
                    String::new(),
                    "not a PeerAuthentication or AuthorizationPolicy".into(),
                ));
            }
            return Err(errors);
        }
    };
    let mut node_errors = Vec::new();
    for (field, reason) in node_rules::check(&policy, raw) {
        if errors.iter().any(|d| d.field == field) {
            continue; // mesh-api's word on this field stands
        }
        node_errors.push(error(
            Some(policy.object_ref()),
            Code::InvalidValue,
            field,
            reason,
        ));
    }
    errors.extend(node_errors);
    if errors.is_empty() {
        Ok(policy)
    } else {
        Err(errors)
    }
}

fn error(object: Option<ObjectRef>, code: Code, field: String, message: String) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        code,
        object,
        location: None,
        field,
        message,
    }
}

/// `Kind ns/name` of a document mesh-api could not type.
fn object_ref_of(raw: &serde_json::Value) -> Option<ObjectRef> {
    let text = |p: &str| raw.pointer(p).and_then(|v| v.as_str());
    Some(ObjectRef {
        kind: text("/kind").unwrap_or_default().to_string(),
        namespace: text("/metadata/namespace")
            .filter(|n| !n.is_empty())
            .unwrap_or(mesh_api::meta::DEFAULT_NAMESPACE)
            .to_string(),
        name: Some(text("/metadata/name").unwrap_or_default().to_string()),
    })
}

#[cfg(test)]
mod tests;
