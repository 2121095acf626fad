//! Which L7 security policies (RequestAuthentication, AuthorizationPolicy)
//! apply to a request: the service it is for ([`Target`]) and each
//! policy's selection ([`Scope`]). The request path's [`authn`] and
//! [`authz`] stages use it.
//!
//! Policy selection (both kinds): a policy applies when it is in the
//! destination service's namespace or in the root namespace
//! ([`ROOT_NAMESPACE`]) and
//! - it has `targetRef(s)` naming the service (`kind: Service`) or a
//!   `Gateway` (any Gateway: the waypoint does not know its own name, and
//!   only traffic bound to it reaches it), or
//! - it has a `selector` whose labels are on at least one endpoint of the
//!   service (sidecar-era YAML that selects the server's pods), or
//! - it has neither (namespace-wide; mesh-wide in the root namespace).
//!
//! The destination namespace is read from the host (`name.ns.svc...` or
//! `name.ns`); a short host name has no namespace, so only root-namespace
//! and Gateway-targeted policies apply to it.
//!
//! [`authn`]: crate::authn
//! [`authz`]: crate::authz

use mesh_api::meta::{MatchLabelsSelector, PolicyTargetReference};

use crate::discovery::Labels;
use crate::issue::Issue;
use crate::namespace::ROOT_NAMESPACE;

/// The service a request is for.
#[derive(Clone, Debug, Default)]
pub struct Target {
    /// The host as the request names it (no port).
    pub host: String,
    /// The service's short name (first DNS label).
    pub service: String,
    pub namespace: Option<String>,
    /// Labels of the service's endpoints (for `selector` policies).
    pub endpoint_labels: Vec<Labels>,
}

impl Target {
    pub fn new(host: &str, endpoint_labels: Vec<Labels>) -> Self {
        let host = host.to_ascii_lowercase();
        let labels: Vec<&str> = host.split('.').collect();
        let namespace = match labels.as_slice() {
            [_, ns] => Some(ns.to_string()),
            [_, ns, "svc", ..] => Some(ns.to_string()),
            _ => None,
        };
        Target {
            service: labels.first().copied().unwrap_or_default().to_string(),
            namespace,
            endpoint_labels,
            host,
        }
    }
}

/// Which services a policy applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every service of the namespace (of the mesh, in the root namespace).
    Namespace,
    /// Services with an endpoint carrying all these labels.
    Selector(Labels),
    /// `targetRef(s)`.
    Targets(Vec<TargetRef>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetRef {
    Service {
        namespace: String,
        name: String,
    },
    /// A Gateway (the waypoint itself) or GatewayClass: all its traffic.
    Gateway,
}

impl Scope {
    /// Compiles `selector` / `targetRef(s)`; unknown target kinds are
    /// reported and match nothing.
    pub fn compile(
        resource: &str,
        namespace: &str,
        selector: &Option<MatchLabelsSelector>,
        target_ref: &Option<PolicyTargetReference>,
        target_refs: &[PolicyTargetReference],
        issues: &mut Vec<Issue>,
    ) -> Scope {
        let refs: Vec<(String, &PolicyTargetReference)> = target_ref
            .iter()
            .map(|t| ("spec.targetRef".to_string(), t))
            .chain(
                target_refs
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (format!("spec.targetRefs[{i}]"), t)),
            )
            .collect();
        if !refs.is_empty() {
            let mut out = Vec::new();
            for (path, t) in refs {
                match t.kind.as_deref().unwrap_or("") {
                    "Service" => out.push(TargetRef::Service {
                        namespace: t.namespace.clone().unwrap_or_else(|| namespace.to_string()),
                        name: t.name.clone().unwrap_or_default().to_ascii_lowercase(),
                    }),
                    "Gateway" | "GatewayClass" => out.push(TargetRef::Gateway),
                    other => issues.push(Issue::new(
                        resource,
                        &format!("{path}.kind"),
                        format!("target kind {other:?} is not supported by the waypoint (Service or Gateway); this reference matches nothing"),
                    )),
                }
            }
            return Scope::Targets(out);
        }
        match selector {
            Some(s) if !s.match_labels.is_empty() => Scope::Selector(s.match_labels.clone()),
            _ => Scope::Namespace,
        }
    }

    pub fn needs_endpoint_labels(&self) -> bool {
        matches!(self, Scope::Selector(_))
    }

    /// Does a policy of `namespace` with this scope apply to `t`?
    pub fn applies(&self, namespace: &str, t: &Target) -> bool {
        let in_namespace = namespace == ROOT_NAMESPACE || t.namespace.as_deref() == Some(namespace);
        match self {
            Scope::Namespace => in_namespace,
            Scope::Selector(sel) => {
                in_namespace
                    && t.endpoint_labels
                        .iter()
                        .any(|l| sel.iter().all(|(k, v)| l.get(k) == Some(v)))
            }
            Scope::Targets(refs) => refs.iter().any(|r| match r {
                TargetRef::Gateway => true,
                TargetRef::Service { namespace, name } => {
                    t.namespace.as_deref() == Some(namespace.as_str()) && &t.service == name
                }
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(kv: &[(&str, &str)]) -> Labels {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn target_namespace_comes_from_the_host() {
        let t = Target::new("MyApp.Production.svc.cluster.local", vec![]);
        assert_eq!(t.service, "myapp");
        assert_eq!(t.namespace.as_deref(), Some("production"));
        assert_eq!(Target::new("a.b", vec![]).namespace.as_deref(), Some("b"));
        assert_eq!(Target::new("myapp", vec![]).namespace, None);
        assert_eq!(Target::new("www.example.com", vec![]).namespace, None);
    }

    #[test]
    fn scopes() {
        let t = Target::new(
            "myapp.production.svc.cluster.local",
            vec![labels(&[("app", "myapp"), ("version", "v1")])],
        );
        assert!(Scope::Namespace.applies("production", &t));
        assert!(Scope::Namespace.applies(ROOT_NAMESPACE, &t));
        assert!(!Scope::Namespace.applies("staging", &t));
        assert!(Scope::Selector(labels(&[("app", "myapp")])).applies("production", &t));
        assert!(!Scope::Selector(labels(&[("app", "other")])).applies("production", &t));
        assert!(!Scope::Selector(labels(&[("app", "myapp")])).applies("staging", &t));
        let svc = |ns: &str, n: &str| {
            Scope::Targets(vec![TargetRef::Service {
                namespace: ns.into(),
                name: n.into(),
            }])
        };
        assert!(svc("production", "myapp").applies("production", &t));
        assert!(!svc("production", "other").applies("production", &t));
        assert!(!svc("staging", "myapp").applies("staging", &t));
        assert!(Scope::Targets(vec![TargetRef::Gateway]).applies("anywhere", &t));
        assert!(!Scope::Targets(vec![]).applies("production", &t));
    }

    #[test]
    fn config_compiles_both_kinds_and_reports_custom() {
        use crate::Config;
        let yaml = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext, namespace: ns}
spec:
  action: CUSTOM
  provider: {name: opa}
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow, namespace: ns}
spec: {}
---
apiVersion: security.istio.io/v1beta1
kind: RequestAuthentication
metadata: {name: jwt, namespace: ns}
spec:
  jwtRules:
  - issuer: i
    jwks: '{"keys": []}'
"#;
        let (cfg, issues) = Config::from_yaml(yaml, "t.yaml");
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].path, "spec.action");
        assert!(issues[0].resource.contains("ns/ext"), "{}", issues[0]);
        assert_eq!(cfg.authz.policies.len(), 1, "CUSTOM is not compiled");
        assert_eq!(cfg.authn.policies.len(), 1);
    }

    #[test]
    fn unknown_target_kinds_are_reported() {
        let mut issues = Vec::new();
        let r = PolicyTargetReference {
            kind: Some("ServiceEntry".into()),
            name: Some("x".into()),
            ..Default::default()
        };
        let s = Scope::compile("p", "ns", &None, &None, &[r], &mut issues);
        assert_eq!(s, Scope::Targets(vec![]));
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].path, "spec.targetRefs[0].kind");
    }
}
