//! Namespaces as Istio policy selection sees them: the root namespace,
//! whose policies apply mesh-wide, and the namespace a service host names.

/// Istio's root namespace: AuthorizationPolicies, RequestAuthentications,
/// EnvoyFilters and Telemetry there apply mesh-wide.
pub const ROOT_NAMESPACE: &str = "istio-system";

/// The namespace of a service host (`name.ns`, `name.ns.svc`,
/// `name.ns.svc.cluster.local`); `None` for a bare name.
pub fn host_namespace(host: &str) -> Option<&str> {
    let mut parts = host.split('.');
    let _name = parts.next()?;
    parts.next().filter(|ns| !ns.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_namespaces() {
        assert_eq!(host_namespace("a.b.svc.cluster.local"), Some("b"));
        assert_eq!(host_namespace("a.b"), Some("b"));
        assert_eq!(host_namespace("a"), None);
    }
}
