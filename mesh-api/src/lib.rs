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
pub mod meta;
pub mod networking;
pub mod parse;
pub mod security;
pub mod telemetry;
pub mod util;

pub use analyze::analyze;
pub use diag::{Code, Diagnostic, ObjectRef, Severity, SourceRef};
pub use kinds::Kind;
pub use meta::{Object, ObjectMeta};
pub use parse::{parse_documents, ParsedDocument};

use serde::Serialize;

use crate::core::CoreObject;
use crate::diag::Findings;
use crate::gateway_api::HttpRouteSpec;
use crate::networking::{
    DestinationRuleSpec, EnvoyFilterSpec, GatewaySpec, ServiceEntrySpec, SidecarSpec,
    VirtualServiceSpec,
};
use crate::security::{AuthorizationPolicySpec, PeerAuthenticationSpec, RequestAuthenticationSpec};
use crate::telemetry::TelemetrySpec;

/// Every resource Ambit reads.
// Config objects are few and long-lived; boxing the larger specs would buy
// nothing but noisier matching.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind")]
pub enum Resource {
    VirtualService(Object<VirtualServiceSpec>),
    DestinationRule(Object<DestinationRuleSpec>),
    Gateway(Object<GatewaySpec>),
    ServiceEntry(Object<ServiceEntrySpec>),
    Sidecar(Object<SidecarSpec>),
    /// Only the local-rate-limit form is implemented; see
    /// [`EnvoyFilterSpec::local_rate_limits`].
    EnvoyFilter(Object<EnvoyFilterSpec>),
    PeerAuthentication(Object<PeerAuthenticationSpec>),
    AuthorizationPolicy(Object<AuthorizationPolicySpec>),
    RequestAuthentication(Object<RequestAuthenticationSpec>),
    Telemetry(Object<TelemetrySpec>),
    #[serde(rename = "HTTPRoute")]
    HttpRoute(Object<HttpRouteSpec>),
    /// Namespace, Service, ServiceAccount, Deployment, ConfigMap, IstioOperator.
    Core(CoreObject),
}

macro_rules! each_object {
    ($self:ident, $o:ident => $e:expr, core $c:ident => $ce:expr) => {
        match $self {
            Resource::VirtualService($o) => $e,
            Resource::DestinationRule($o) => $e,
            Resource::Gateway($o) => $e,
            Resource::ServiceEntry($o) => $e,
            Resource::Sidecar($o) => $e,
            Resource::EnvoyFilter($o) => $e,
            Resource::PeerAuthentication($o) => $e,
            Resource::AuthorizationPolicy($o) => $e,
            Resource::RequestAuthentication($o) => $e,
            Resource::Telemetry($o) => $e,
            Resource::HttpRoute($o) => $e,
            Resource::Core($c) => $ce,
        }
    };
}

impl Resource {
    pub fn kind(&self) -> Kind {
        match self {
            Resource::VirtualService(_) => Kind::VirtualService,
            Resource::DestinationRule(_) => Kind::DestinationRule,
            Resource::Gateway(_) => Kind::Gateway,
            Resource::ServiceEntry(_) => Kind::ServiceEntry,
            Resource::Sidecar(_) => Kind::Sidecar,
            Resource::EnvoyFilter(_) => Kind::EnvoyFilter,
            Resource::PeerAuthentication(_) => Kind::PeerAuthentication,
            Resource::AuthorizationPolicy(_) => Kind::AuthorizationPolicy,
            Resource::RequestAuthentication(_) => Kind::RequestAuthentication,
            Resource::Telemetry(_) => Kind::Telemetry,
            Resource::HttpRoute(_) => Kind::HttpRoute,
            Resource::Core(c) => c.kind,
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        each_object!(self, o => &o.metadata, core c => &c.metadata)
    }

    pub fn api_version(&self) -> &str {
        each_object!(self, o => &o.api_version, core c => &c.api_version)
    }

    pub fn name(&self) -> Option<&str> {
        self.metadata().name.as_deref()
    }

    /// The namespace, `default` when the document does not say.
    pub fn namespace(&self) -> &str {
        self.metadata().namespace_or_default()
    }

    /// Checks of this resource on its own (values, combinations,
    /// unimplemented fields). Field paths are absolute (`spec....`).
    pub fn validate(&self, f: &mut Findings) {
        match self {
            Resource::VirtualService(o) => o.spec.validate(f),
            Resource::DestinationRule(o) => o.spec.validate(f),
            Resource::Gateway(o) => o.spec.validate(f),
            Resource::ServiceEntry(o) => o.spec.validate(f),
            Resource::Sidecar(o) => o.spec.validate(f),
            Resource::EnvoyFilter(o) => o.spec.validate(f),
            Resource::PeerAuthentication(o) => o.spec.validate(f),
            Resource::AuthorizationPolicy(o) => o.spec.validate(f),
            Resource::RequestAuthentication(o) => o.spec.validate(f),
            Resource::Telemetry(o) => o.spec.validate(f),
            Resource::HttpRoute(o) => o.spec.validate(f),
            Resource::Core(c) => c.validate(f),
        }
    }
}

/// Parses and analyzes one text: `analyze(&parse_documents(text, source))`.
pub fn analyze_text(text: &str, source_name: &str) -> Vec<Diagnostic> {
    analyze(&parse_documents(text, source_name))
}

#[cfg(test)]
mod tests;
