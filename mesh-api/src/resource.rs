//! [`Resource`]: the one enum of every resource kind Ambit reads, with
//! what is common to all of them (kind, metadata, self-validation).

use serde::Serialize;

use crate::core::CoreObject;
use crate::diag::Findings;
use crate::gateway_api::HttpRouteSpec;
use crate::kinds::Kind;
use crate::meta::{Object, ObjectMeta};
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
