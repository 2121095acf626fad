//! Ambit's config model: the Istio and Gateway API resources an operator
//! already has, typed with serde, and validated with diagnostics that name
//! the resource, the field and the reason.
//!
//! ```
//! let yaml = "apiVersion: networking.istio.io/v1beta1
//! kind: VirtualService
//! metadata: {name: unreliable}
//! spec:
//!   host: unreliable-service
//!   http:
//!   - route:
//!     - destination: {host: unreliable-service}
//! ";
//! let docs = mesh_api::parse_documents(yaml, "vs.yaml");
//! let diags = mesh_api::analyze(&docs);
//! assert_eq!(
//!     diags[0].to_string(),
//!     "VirtualService default/unreliable: field spec.host: unknown field; did you mean spec.hosts?"
//! );
//! assert_eq!(diags[0].code.as_str(), "AMB0003");
//! ```
//!
//! * [`parse_documents`] reads one source (multi-document YAML) into
//!   [`ParsedDocument`]s, each with its typed [`Resource`] and the
//!   diagnostics of that document alone (shape, values, unimplemented
//!   fields).
//! * [`analyze`] adds the checks across a set (references to subsets and
//!   gateways, duplicates, conflicting DestinationRules, telemetry
//!   providers) and returns every diagnostic in source order.
//!
//! Severity model: see [`Severity`]; codes: see [`Code`].

pub mod analyze;
pub mod core;
pub mod diag;
pub mod gateway_api;
pub mod kinds;
pub mod labels;
pub mod lenient;
pub mod meta;
pub mod networking;
pub mod parse;
pub mod resource;
pub mod security;
pub mod telemetry;
pub mod util;

pub use analyze::analyze;
pub use diag::{Code, Diagnostic, ObjectRef, Severity, SourceRef};
pub use kinds::Kind;
pub use meta::{Object, ObjectMeta};
pub use parse::{parse_documents, ParsedDocument};
pub use resource::Resource;

/// Parses and analyzes one text: `analyze(&parse_documents(text, source))`.
pub fn analyze_text(text: &str, source_name: &str) -> Vec<Diagnostic> {
    analyze(&parse_documents(text, source_name))
}

#[cfg(test)]
mod testing;
