//! The kinds Ambit knows and the apiVersions under which each is served.

use std::fmt;

/// Every kind Ambit recognises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    // networking.istio.io
    VirtualService,
    DestinationRule,
    Gateway,
    ServiceEntry,
    Sidecar,
    EnvoyFilter,
    // security.istio.io
    PeerAuthentication,
    AuthorizationPolicy,
    RequestAuthentication,
    // telemetry.istio.io
    Telemetry,
    // gateway.networking.k8s.io
    HttpRoute,
    // core Kubernetes, accepted as non-mesh resources
    Namespace,
    Service,
    ServiceAccount,
    Deployment,
    ConfigMap,
    // install.istio.io
    IstioOperator,
}

pub const NETWORKING_ISTIO: &str = "networking.istio.io";
pub const SECURITY_ISTIO: &str = "security.istio.io";
pub const TELEMETRY_ISTIO: &str = "telemetry.istio.io";
pub const GATEWAY_API: &str = "gateway.networking.k8s.io";
pub const INSTALL_ISTIO: &str = "install.istio.io";

impl Kind {
    pub const ALL: &'static [Kind] = &[
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::Gateway,
        Kind::ServiceEntry,
        Kind::Sidecar,
        Kind::EnvoyFilter,
        Kind::PeerAuthentication,
        Kind::AuthorizationPolicy,
        Kind::RequestAuthentication,
        Kind::Telemetry,
        Kind::HttpRoute,
        Kind::Namespace,
        Kind::Service,
        Kind::ServiceAccount,
        Kind::Deployment,
        Kind::ConfigMap,
        Kind::IstioOperator,
    ];

    /// The `kind:` string.
    pub fn name(self) -> &'static str {
        match self {
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::Gateway => "Gateway",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::Sidecar => "Sidecar",
            Kind::EnvoyFilter => "EnvoyFilter",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::RequestAuthentication => "RequestAuthentication",
            Kind::Telemetry => "Telemetry",
            Kind::HttpRoute => "HTTPRoute",
            Kind::Namespace => "Namespace",
            Kind::Service => "Service",
            Kind::ServiceAccount => "ServiceAccount",
            Kind::Deployment => "Deployment",
            Kind::ConfigMap => "ConfigMap",
            Kind::IstioOperator => "IstioOperator",
        }
    }

    /// The API group (`""` for the core group).
    pub fn group(self) -> &'static str {
        match self {
            Kind::VirtualService
            | Kind::DestinationRule
            | Kind::Gateway
            | Kind::ServiceEntry
            | Kind::Sidecar
            | Kind::EnvoyFilter => NETWORKING_ISTIO,
            Kind::PeerAuthentication | Kind::AuthorizationPolicy | Kind::RequestAuthentication => {
                SECURITY_ISTIO
            }
            Kind::Telemetry => TELEMETRY_ISTIO,
            Kind::HttpRoute => GATEWAY_API,
            Kind::Namespace | Kind::Service | Kind::ServiceAccount | Kind::ConfigMap => "",
            Kind::Deployment => "apps",
            Kind::IstioOperator => INSTALL_ISTIO,
        }
    }

    /// The versions under which the kind is served, as Istio's CRDs (and
    /// Kubernetes) serve them.
    pub fn served_versions(self) -> &'static [&'static str] {
        match self {
            Kind::VirtualService
            | Kind::DestinationRule
            | Kind::Gateway
            | Kind::ServiceEntry
            | Kind::Sidecar => &["v1", "v1beta1", "v1alpha3"],
            // Istio serves EnvoyFilter only as v1alpha3.
            Kind::EnvoyFilter => &["v1alpha3"],
            Kind::PeerAuthentication | Kind::AuthorizationPolicy | Kind::RequestAuthentication => {
                &["v1", "v1beta1"]
            }
            Kind::Telemetry => &["v1", "v1alpha1"],
            Kind::HttpRoute => &["v1", "v1beta1"],
            Kind::Namespace
            | Kind::Service
            | Kind::ServiceAccount
            | Kind::ConfigMap
            | Kind::Deployment => &["v1"],
            Kind::IstioOperator => &["v1alpha1"],
        }
    }

    /// The accepted `apiVersion` strings.
    pub fn api_versions(self) -> Vec<String> {
        self.served_versions()
            .iter()
            .map(|v| {
                if self.group().is_empty() {
                    v.to_string()
                } else {
                    format!("{}/{v}", self.group())
                }
            })
            .collect()
    }

    /// Whether Ambit applies resources of this kind to the mesh (as opposed
    /// to recognising them as neighbours of the mesh config).
    pub fn is_mesh_config(self) -> bool {
        !matches!(
            self,
            Kind::Namespace
                | Kind::Service
                | Kind::ServiceAccount
                | Kind::Deployment
                | Kind::ConfigMap
                | Kind::IstioOperator
        )
    }

    /// Splits `group/version` (or a bare core `version`).
    pub fn split_api_version(api_version: &str) -> (&str, &str) {
        match api_version.rsplit_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        }
    }

    /// Resolves `kind` under `apiVersion`.
    pub fn resolve(api_version: &str, kind: &str) -> Resolution {
        let (group, version) = Kind::split_api_version(api_version);
        let candidates: Vec<Kind> = Kind::ALL
            .iter()
            .copied()
            .filter(|k| k.name() == kind)
            .collect();
        if let Some(k) = candidates.iter().copied().find(|k| k.group() == group) {
            if k.served_versions().contains(&version) {
                return Resolution::Known(k);
            }
            return Resolution::WrongVersion(k);
        }
        match candidates.first() {
            // Gateway API kinds that share a name with an Istio kind (Gateway)
            // or other groups: not ours.
            Some(&k) if !KNOWN_FOREIGN_GROUPS.contains(&group) => Resolution::WrongVersion(k),
            _ => Resolution::Unknown,
        }
    }
}

/// Groups whose kinds are known not to be Ambit's, even when a kind name
/// matches one of ours (e.g. Gateway API `Gateway`).
const KNOWN_FOREIGN_GROUPS: &[&str] = &[GATEWAY_API, "networking.k8s.io"];

/// What [`Kind::resolve`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    Known(Kind),
    /// The kind is known but not under this apiVersion.
    WrongVersion(Kind),
    Unknown,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_versions_as_istio_serves_them() {
        use Resolution::*;
        assert_eq!(
            Kind::resolve("networking.istio.io/v1alpha3", "VirtualService"),
            Known(Kind::VirtualService)
        );
        assert_eq!(
            Kind::resolve("networking.istio.io/v1", "DestinationRule"),
            Known(Kind::DestinationRule)
        );
        assert_eq!(
            Kind::resolve("networking.istio.io/v1beta1", "EnvoyFilter"),
            WrongVersion(Kind::EnvoyFilter)
        );
        assert_eq!(
            Kind::resolve("security.istio.io/v1alpha3", "PeerAuthentication"),
            WrongVersion(Kind::PeerAuthentication)
        );
        assert_eq!(
            Kind::resolve("telemetry.istio.io/v1alpha1", "Telemetry"),
            Known(Kind::Telemetry)
        );
        assert_eq!(
            Kind::resolve("gateway.networking.k8s.io/v1beta1", "HTTPRoute"),
            Known(Kind::HttpRoute)
        );
        assert_eq!(
            Kind::resolve("gateway.networking.k8s.io/v1", "Gateway"),
            Unknown
        );
        assert_eq!(
            Kind::resolve("apps/v1", "Deployment"),
            Known(Kind::Deployment)
        );
        assert_eq!(
            Kind::resolve("linkerd.io/v1alpha2", "ServiceProfile"),
            Unknown
        );
    }
}
