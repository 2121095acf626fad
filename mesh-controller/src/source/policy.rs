//! The Istio security resources the nodes enforce, as the sources read
//! them: mesh-api's reading of the document, once ([`L7Object::check`]),
//! held to the node's rules by [`mesh_policy`].

pub use mesh_policy::{Policy, NODE_KINDS};

use super::{L7Object, Origin};

/// What one node-policy document yields: the policy, and for an
/// AuthorizationPolicy its L7 form for the waypoints (which enforce its
/// HTTP rules and `targetRefs`).
#[derive(Debug)]
pub struct Parsed {
    pub policy: Policy,
    pub l7: Option<L7Object>,
}

/// Parses `doc` (one object) with mesh-api, once, and checks it: mesh-api's
/// errors, and the node's rules at the fields mesh-api found no fault
/// with. Problems read `Kind ns/name: field f: reason`.
pub fn parse(doc: &serde_json::Value, origin: &Origin) -> Result<Parsed, Vec<String>> {
    let checked = L7Object::check(doc, origin)?;
    let policy = mesh_policy::from_reading(checked.resource, checked.errors, doc)
        .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    let l7 = matches!(policy, Policy::AuthorizationPolicy(_)).then_some(checked.l7);
    Ok(Parsed { policy, l7 })
}
