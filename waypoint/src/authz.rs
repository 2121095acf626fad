//! Compiles AuthorizationPolicy for the waypoint into mesh-authz's engine
//! (the node's, with the request's attributes), and applies the policies
//! that target a request's destination. Istio's semantics: CUSTOM is
//! reported and ignored; then any matching DENY denies; then, if any ALLOW
//! policy applies, one must match. AUDIT policies are evaluated and logged,
//! never deny. A policy without rules (`spec: {}`) matches nothing (so ALLOW
//! denies all); a rule `{}` matches everything.
//!
//! Keys the waypoint cannot evaluate (`destination.ip`, `connection.sni`,
//! `experimental.*`) fail closed: such a rule never matches in ALLOW and
//! AUDIT and always matches in DENY (as Istio drops unsupported fields).

use std::net::IpAddr;

use http::header::HeaderName;
use ipnet::IpNet;
use mesh_api::security::{Action, AuthorizationPolicySpec, Condition, Operation, Source};
use mesh_authz::{
    Attributes, OperationMatch, Outcome, RequestOperationMatch, RequestPolicy, RequestRule,
    RequestSourceMatch, SourceMatch, StrMatch,
};

use crate::authn::RequestAuth;
use crate::issue::Issue;
use crate::security::{Scope, Target};

impl mesh_authz::Claims for RequestAuth {
    fn claim(&self, path: &[String]) -> Vec<String> {
        RequestAuth::claim(self, path)
    }
}

/// The waypoint's policies are not validated: no value is refused.
fn patterns(v: &[String]) -> Vec<StrMatch> {
    v.iter().map(|s| StrMatch::lenient(s)).collect()
}

/// Parses CIDRs (or bare addresses); bad ones were refused by validation
/// and are dropped here.
fn nets(v: &[String]) -> Vec<IpNet> {
    v.iter()
        .filter_map(|s| {
            s.parse::<IpNet>()
                .ok()
                .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
        })
        .collect()
}

fn ports<'a>(v: impl IntoIterator<Item = &'a String>) -> Vec<u16> {
    v.into_iter().filter_map(|p| p.parse().ok()).collect()
}

/// `namespace/name`. Without a `/` the namespace is empty, which no
/// peer's identity has (its SPIFFE URI was refused otherwise), so it never
/// matches.
fn service_accounts(v: &[String]) -> Vec<(String, String)> {
    v.iter()
        .map(|s| match s.split_once('/') {
            Some((ns, sa)) => (ns.to_string(), sa.to_string()),
            None => (String::new(), s.clone()),
        })
        .collect()
}

fn source(s: &Source) -> RequestSourceMatch {
    RequestSourceMatch {
        l4: SourceMatch {
            principals: patterns(&s.principals),
            not_principals: patterns(&s.not_principals),
            namespaces: patterns(&s.namespaces),
            not_namespaces: patterns(&s.not_namespaces),
            service_accounts: service_accounts(&s.service_accounts),
            not_service_accounts: service_accounts(&s.not_service_accounts),
            // `ipBlocks` and `remoteIpBlocks` alike: the waypoint's remote is
            // the caller (X-Forwarded-For is not trusted).
            ip_blocks: nets(&s.ip_blocks)
                .into_iter()
                .chain(nets(&s.remote_ip_blocks))
                .collect(),
            not_ip_blocks: nets(&s.not_ip_blocks)
                .into_iter()
                .chain(nets(&s.not_remote_ip_blocks))
                .collect(),
            remote_ip_blocks: Vec::new(),
            not_remote_ip_blocks: Vec::new(),
        },
        request_principals: patterns(&s.request_principals),
        not_request_principals: patterns(&s.not_request_principals),
    }
}

fn operation(o: &Operation) -> RequestOperationMatch {
    let lower = |v: &[String]| {
        v.iter()
            .map(|s| StrMatch::lenient(&s.to_ascii_lowercase()))
            .collect()
    };
    RequestOperationMatch {
        l4: OperationMatch {
            ports: ports(o.ports.iter().map(|p| &p.0)),
            not_ports: ports(o.not_ports.iter().map(|p| &p.0)),
        },
        hosts: lower(&o.hosts),
        not_hosts: lower(&o.not_hosts),
        methods: patterns(&o.methods),
        not_methods: patterns(&o.not_methods),
        paths: patterns(&o.paths),
        not_paths: patterns(&o.not_paths),
    }
}

/// `request.auth.claims[a][b]` → `["a", "b"]`.
fn claim_path(rest: &str) -> Option<Vec<String>> {
    let inner = rest.strip_prefix('[')?.strip_suffix(']')?;
    let parts: Vec<String> = inner.split("][").map(str::to_string).collect();
    (!parts.iter().any(String::is_empty)).then_some(parts)
}

/// `None`: a key the waypoint cannot evaluate.
fn condition(c: &Condition) -> Option<mesh_authz::Condition> {
    use mesh_authz::Condition as C;
    let text = |v: &[mesh_api::security::PortKey]| -> Vec<String> {
        v.iter().map(|p| p.0.clone()).collect()
    };
    let (pos, neg) = (text(&c.values), text(&c.not_values));
    let (values, not) = (patterns(&pos), patterns(&neg));
    let claim = |path: &[&str]| C::RequestClaim {
        path: path.iter().map(|s| s.to_string()).collect(),
        values: values.clone(),
        not: not.clone(),
    };
    Some(match c.key.as_deref().unwrap_or("") {
        "source.ip" | "remote.ip" => C::SourceIp {
            values: nets(&pos),
            not: nets(&neg),
        },
        "destination.port" => C::DestinationPort {
            values: ports(&pos),
            not: ports(&neg),
        },
        "source.namespace" => C::SourceNamespace { values, not },
        "source.principal" => C::SourcePrincipal { values, not },
        "request.auth.principal" => C::RequestPrincipal { values, not },
        "request.auth.audiences" => claim(&["aud"]),
        "request.auth.presenter" => claim(&["azp"]),
        k => {
            if let Some(name) = k
                .strip_prefix("request.headers[")
                .and_then(|r| r.strip_suffix(']'))
            {
                C::RequestHeader {
                    name: HeaderName::from_bytes(name.as_bytes()).ok()?,
                    values,
                    not,
                }
            } else {
                C::RequestClaim {
                    path: claim_path(k.strip_prefix("request.auth.claims")?)?,
                    values,
                    not,
                }
            }
        }
    })
}

/// One compiled AuthorizationPolicy (ALLOW, DENY or AUDIT) with the
/// destinations it targets.
#[derive(Clone, Debug)]
pub struct AuthzPolicy {
    pub resource: String,
    pub scope: Scope,
    /// Named by `resource`.
    pub policy: RequestPolicy,
}

impl mesh_authz::Policy for AuthzPolicy {
    fn action(&self) -> mesh_authz::Action {
        self.policy.action
    }
    fn matches(&self, a: &Attributes) -> bool {
        self.policy.matches(a)
    }
}

/// The verdict on one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// `policy` is the denying policy, or `""` for "no ALLOW matched".
    Deny {
        policy: String,
    },
}

/// All AuthorizationPolicies of the config.
#[derive(Clone, Debug, Default)]
pub struct Authorizer {
    pub policies: Vec<AuthzPolicy>,
}

impl Authorizer {
    pub fn add(
        &mut self,
        resource: &str,
        namespace: &str,
        spec: &AuthorizationPolicySpec,
        issues: &mut Vec<Issue>,
    ) {
        let action = match spec.action() {
            Action::Allow => mesh_authz::Action::Allow,
            Action::Deny => mesh_authz::Action::Deny,
            Action::Audit => mesh_authz::Action::Audit,
            Action::Custom => {
                issues.push(Issue::new(
                    resource,
                    "spec.action",
                    "CUSTOM (external authorization) is not supported by the waypoint; this policy is ignored",
                ));
                return;
            }
        };
        let scope = Scope::compile(
            resource,
            namespace,
            &spec.selector,
            &spec.target_ref,
            &spec.target_refs,
            issues,
        );
        let mut rules = Vec::new();
        for (i, r) in spec.rules.iter().flatten().enumerate() {
            // Absent or empty `from`/`to` match everything.
            let from: Vec<RequestSourceMatch> = r
                .from
                .iter()
                .filter_map(|f| f.source.as_ref().map(source))
                .collect();
            let to: Vec<RequestOperationMatch> =
                r.to.iter()
                    .filter_map(|t| t.operation.as_ref().map(operation))
                    .collect();
            let mut rule = RequestRule {
                from: (!from.is_empty()).then_some(from),
                to: (!to.is_empty()).then_some(to),
                ..Default::default()
            };
            for (j, c) in r.when.iter().enumerate() {
                let key = c.key.as_deref().unwrap_or("");
                match condition(c) {
                    Some(m) => rule.when.push(m),
                    None => {
                        rule.when.push(mesh_authz::Condition::Unsupported {
                            key: key.to_string(),
                        });
                        issues.push(Issue::new(
                            resource,
                            &format!("spec.rules[{i}].when[{j}].key"),
                            format!(
                                "{key:?} cannot be evaluated by the waypoint; the rule {}",
                                if action == mesh_authz::Action::Deny {
                                    "always matches (fail closed)"
                                } else {
                                    "never matches"
                                }
                            ),
                        ));
                    }
                }
            }
            rules.push(rule);
        }
        self.policies.push(AuthzPolicy {
            resource: resource.to_string(),
            scope,
            policy: RequestPolicy {
                name: resource.to_string(),
                namespace: namespace.to_string(),
                // Targeting is the waypoint's own (`scope`).
                selector: None,
                action,
                rules,
                node_enforced: false,
            },
        });
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    pub fn needs_endpoint_labels(&self) -> bool {
        self.policies
            .iter()
            .any(|p| p.scope.needs_endpoint_labels())
    }

    /// DENY, then ALLOW; AUDIT is only logged.
    pub fn check(&self, target: &Target, a: &Attributes) -> Decision {
        let applicable = self
            .policies
            .iter()
            .filter(|p| p.scope.applies(&p.policy.namespace, target));
        let verdict = mesh_authz::decide(applicable, a);
        let path = a.http.as_ref().map_or("", |h| h.path);
        for p in &verdict.audits {
            tracing::info!(policy = %p.resource, path, "AUDIT policy matched");
        }
        match verdict.outcome {
            Outcome::NoPolicies | Outcome::AllowedBy(_) => Decision::Allow,
            Outcome::DeniedBy(p) => Decision::Deny {
                policy: p.resource.clone(),
            },
            Outcome::NoAllowMatch(_) => Decision::Deny {
                policy: String::new(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};
    use mesh_identity::Identity;
    use serde_json::json;

    fn authorizer(policies: &[(&str, Value)]) -> Authorizer {
        let mut z = Authorizer::default();
        for (ns, spec) in policies {
            let spec: AuthorizationPolicySpec = serde_json::from_value(spec.clone()).expect("spec");
            let mut issues = Vec::new();
            z.add("AuthorizationPolicy t", ns, &spec, &mut issues);
        }
        z
    }
    use serde_json::Value;

    struct Req {
        method: &'static str,
        path: &'static str,
        headers: HeaderMap,
        identity: Option<Identity>,
        auth: RequestAuth,
        ip: &'static str,
    }

    fn req(method: &'static str, path: &'static str) -> Req {
        Req {
            method,
            path,
            headers: HeaderMap::new(),
            identity: None,
            auth: RequestAuth::default(),
            ip: "10.0.0.1",
        }
    }

    fn decide(z: &Authorizer, r: &Req) -> bool {
        let t = Target::new("myapp.production.svc.cluster.local", vec![]);
        let a = Attributes {
            peer: mesh_authz::Peer::new(
                r.identity.as_ref(),
                r.ip.parse().expect("ip"),
                IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                8080,
            ),
            http: Some(mesh_authz::HttpAttributes {
                method: r.method,
                path: r.path,
                host: "MyApp.production.svc.cluster.local",
                headers: &r.headers,
                request_principal: r.auth.principal.as_deref().unwrap_or(""),
                claims: &r.auth,
            }),
        };
        z.check(&t, &a) == Decision::Allow
    }

    fn sa(ns: &str, sa: &str) -> Option<Identity> {
        Some(Identity {
            trust_domain: "cluster.local".into(),
            namespace: ns.into(),
            service_account: sa.into(),
        })
    }

    #[test]
    fn paths_are_normalized_for_matching() {
        let deny = authorizer(&[(
            "production",
            json!({"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin*"]}}]}]}),
        )]);
        assert!(!decide(&deny, &req("GET", "/public/../admin/users")));
        assert!(!decide(&deny, &req("GET", "/%61dmin")));
    }

    #[test]
    fn empty_policy_denies_and_empty_rule_allows() {
        let deny_all = authorizer(&[("production", json!({}))]);
        assert!(!decide(&deny_all, &req("GET", "/")));
        let allow_all = authorizer(&[("production", json!({"rules": [{}]}))]);
        assert!(decide(&allow_all, &req("GET", "/")));
        // Other namespaces' policies do not apply; the root namespace's do.
        assert!(decide(
            &authorizer(&[("staging", json!({}))]),
            &req("GET", "/")
        ));
        assert!(!decide(
            &authorizer(&[("istio-system", json!({}))]),
            &req("GET", "/")
        ));
        // DENY without rules denies nothing; CUSTOM is ignored.
        assert!(decide(
            &authorizer(&[("production", json!({"action": "DENY"}))]),
            &req("GET", "/")
        ));
        assert!(decide(
            &authorizer(&[(
                "production",
                json!({"action": "CUSTOM", "provider": {"name": "x"}})
            )]),
            &req("GET", "/")
        ));
    }

    #[test]
    fn conditions_and_sources() {
        let z = authorizer(&[(
            "production",
            json!({"rules": [{
            "from": [{"source": {"namespaces": ["prod*"], "notPrincipals": ["*/sa/evil"]}}],
            "when": [
                {"key": "request.headers[x-tenant]", "values": ["t-*"]},
                {"key": "request.auth.claims[org][team]", "values": ["blue"]},
                {"key": "source.ip", "notValues": ["10.9.0.0/16"]},
                {"key": "destination.port", "values": ["8080"]}
            ]}]}),
        )]);
        let mut r = req("GET", "/");
        r.identity = sa("production", "web");
        r.headers
            .insert("x-tenant", HeaderValue::from_static("t-1"));
        r.auth.claims = json!({"org": {"team": "blue"}});
        assert!(decide(&z, &r));
        r.identity = sa("production", "evil");
        assert!(!decide(&z, &r), "notPrincipals");
        r.identity = sa("staging", "web");
        assert!(!decide(&z, &r), "namespaces");
        r.identity = sa("production", "web");
        r.ip = "10.9.1.1";
        assert!(!decide(&z, &r), "source.ip notValues");
        r.ip = "10.0.0.1";
        r.auth.claims = json!({"org": {"team": "red"}});
        assert!(!decide(&z, &r), "nested claim");
        r.auth.claims = json!({"org": {"team": "blue"}});
        r.headers
            .insert("x-tenant", HeaderValue::from_static("other"));
        assert!(!decide(&z, &r), "header");
        r.headers
            .insert("x-tenant", HeaderValue::from_static("t-2"));
        r.identity = None;
        assert!(!decide(&z, &r), "plaintext has no namespace");
    }

    #[test]
    fn unsupported_keys_fail_closed() {
        let rule = json!([{"when": [{"key": "connection.sni", "values": ["x"]}]}]);
        let allow = authorizer(&[("production", json!({"rules": rule}))]);
        assert!(!decide(&allow, &req("GET", "/")));
        let deny = authorizer(&[("production", json!({"action": "DENY", "rules": rule}))]);
        assert!(!decide(&deny, &req("GET", "/")));
    }
}
