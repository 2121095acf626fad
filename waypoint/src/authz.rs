//! L7 AuthorizationPolicy with Istio's semantics: CUSTOM is reported and
//! ignored; then any matching DENY denies; then, if any ALLOW policy
//! applies, one must match. AUDIT policies are evaluated and logged, never
//! deny. A policy without rules (`spec: {}`) matches nothing (so ALLOW
//! denies all); a rule `{}` matches everything.
//!
//! Keys the waypoint cannot evaluate (`destination.ip`, `connection.sni`,
//! `experimental.*`) fail closed: such a rule never matches in ALLOW and
//! AUDIT and always matches in DENY (as Istio drops unsupported fields).

use std::net::IpAddr;

use http::header::{HeaderMap, HeaderName};
use ipnet::IpNet;
use mesh_api::security::{Action, AuthorizationPolicySpec, Condition, Operation, Source};
use mesh_identity::Identity;

use crate::authn::RequestAuth;
use crate::issue::Issue;
use crate::security::{Scope, Target};

/// Istio's value match: `*` (any non-empty value), `prefix*`, `*suffix`,
/// or exact (mesh-node's L4 engine matches the same way).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pattern {
    Any,
    Prefix(String),
    Suffix(String),
    Exact(String),
}

impl Pattern {
    pub fn new(s: &str) -> Self {
        match (s.strip_suffix('*'), s.strip_prefix('*')) {
            _ if s == "*" => Pattern::Any,
            (Some(p), _) => Pattern::Prefix(p.to_string()),
            (_, Some(p)) => Pattern::Suffix(p.to_string()),
            _ => Pattern::Exact(s.to_string()),
        }
    }

    fn lowercase(s: &str) -> Self {
        Pattern::new(&s.to_ascii_lowercase())
    }

    pub fn matches(&self, v: &str) -> bool {
        match self {
            Pattern::Any => !v.is_empty(),
            Pattern::Prefix(p) => v.starts_with(p.as_str()),
            Pattern::Suffix(p) => v.ends_with(p.as_str()),
            Pattern::Exact(e) => v == e,
        }
    }
}

/// Positive list (when set) has a hit and negative list (when set) none.
fn pos_neg<T>(pos: &[T], neg: &[T], mut hit: impl FnMut(&T) -> bool) -> bool {
    (pos.is_empty() || pos.iter().any(&mut hit)) && (neg.is_empty() || !neg.iter().any(&mut hit))
}

/// The path as Istio's default normalization (`BASE`) presents it to
/// RBAC: backslashes as `/`, percent-encoded unreserved characters decoded, dot
/// segments removed. Without it `/public/../admin` would slip past a DENY
/// on `/admin*`.
pub fn normalized_path(path: &str) -> String {
    let mut decoded = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(c) = rest.chars().next() {
        let escape = rest
            .get(1..3)
            .filter(|h| c == '%' && h.bytes().all(|b| b.is_ascii_hexdigit()));
        if let Some(hex) = escape {
            match u8::from_str_radix(hex, 16) {
                Ok(v) if v.is_ascii_alphanumeric() || b"-._~".contains(&v) => {
                    decoded.push(v as char)
                }
                _ => {
                    decoded.push('%');
                    decoded.push_str(&hex.to_ascii_uppercase());
                }
            }
            rest = &rest[3..];
            continue;
        }
        decoded.push(if c == '\\' { '/' } else { c });
        rest = &rest[c.len_utf8()..];
    }
    if !decoded.starts_with('/') {
        return decoded;
    }
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = decoded.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (n, seg) in segments.iter().enumerate() {
        match *seg {
            "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
        // `/a/..` and `/a/.` end in a directory.
        if n == last && (*seg == "." || *seg == "..") {
            out.push("");
        }
    }
    format!("/{}", out.join("/"))
}

/// What a request is evaluated against.
pub struct RequestAttributes<'a> {
    pub method: &'a str,
    /// Without the query.
    pub path: &'a str,
    /// The host the request names, without port.
    pub host: &'a str,
    pub port: u16,
    pub headers: &'a HeaderMap,
    pub source_ip: IpAddr,
    /// The caller's SPIFFE identity (HBONE); `None` in plaintext.
    pub identity: Option<&'a Identity>,
    pub auth: &'a RequestAuth,
}

impl RequestAttributes<'_> {
    /// `td/ns/x/sa/y`, empty in plaintext.
    fn principal(&self) -> String {
        self.identity.map_or_else(String::new, |i| {
            format!(
                "{}/ns/{}/sa/{}",
                i.trust_domain, i.namespace, i.service_account
            )
        })
    }

    fn source_namespace(&self) -> &str {
        self.identity.map_or("", |i| i.namespace.as_str())
    }

    fn request_principal(&self) -> &str {
        self.auth.principal.as_deref().unwrap_or("")
    }
}

fn patterns(v: &[String]) -> Vec<Pattern> {
    v.iter().map(|s| Pattern::new(s)).collect()
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

#[derive(Clone, Debug, Default)]
struct SourceMatch {
    principals: Vec<Pattern>,
    not_principals: Vec<Pattern>,
    request_principals: Vec<Pattern>,
    not_request_principals: Vec<Pattern>,
    namespaces: Vec<Pattern>,
    not_namespaces: Vec<Pattern>,
    /// `namespace/name`
    service_accounts: Vec<String>,
    not_service_accounts: Vec<String>,
    /// `ipBlocks` and `remoteIpBlocks` alike: the waypoint's remote is the
    /// caller (X-Forwarded-For is not trusted).
    ip_blocks: Vec<IpNet>,
    not_ip_blocks: Vec<IpNet>,
}

impl SourceMatch {
    fn compile(s: &Source) -> Self {
        SourceMatch {
            principals: patterns(&s.principals),
            not_principals: patterns(&s.not_principals),
            request_principals: patterns(&s.request_principals),
            not_request_principals: patterns(&s.not_request_principals),
            namespaces: patterns(&s.namespaces),
            not_namespaces: patterns(&s.not_namespaces),
            service_accounts: s.service_accounts.clone(),
            not_service_accounts: s.not_service_accounts.clone(),
            ip_blocks: nets(&s.ip_blocks)
                .into_iter()
                .chain(nets(&s.remote_ip_blocks))
                .collect(),
            not_ip_blocks: nets(&s.not_ip_blocks)
                .into_iter()
                .chain(nets(&s.not_remote_ip_blocks))
                .collect(),
        }
    }

    fn matches(&self, a: &RequestAttributes) -> bool {
        let principal = a.principal();
        let sa = a
            .identity
            .map(|i| format!("{}/{}", i.namespace, i.service_account));
        pos_neg(&self.principals, &self.not_principals, |p| {
            p.matches(&principal)
        }) && pos_neg(
            &self.request_principals,
            &self.not_request_principals,
            |p| p.matches(a.request_principal()),
        ) && pos_neg(&self.namespaces, &self.not_namespaces, |p| {
            p.matches(a.source_namespace())
        }) && pos_neg(&self.service_accounts, &self.not_service_accounts, |s| {
            sa.as_deref() == Some(s.as_str())
        }) && pos_neg(&self.ip_blocks, &self.not_ip_blocks, |n| {
            n.contains(&a.source_ip)
        })
    }
}

#[derive(Clone, Debug, Default)]
struct OperationMatch {
    /// Lowercased.
    hosts: Vec<Pattern>,
    not_hosts: Vec<Pattern>,
    ports: Vec<u16>,
    not_ports: Vec<u16>,
    methods: Vec<Pattern>,
    not_methods: Vec<Pattern>,
    paths: Vec<Pattern>,
    not_paths: Vec<Pattern>,
}

impl OperationMatch {
    fn compile(o: &Operation) -> Self {
        let lower = |v: &[String]| v.iter().map(|s| Pattern::lowercase(s)).collect();
        OperationMatch {
            hosts: lower(&o.hosts),
            not_hosts: lower(&o.not_hosts),
            ports: ports(o.ports.iter().map(|p| &p.0)),
            not_ports: ports(o.not_ports.iter().map(|p| &p.0)),
            methods: patterns(&o.methods),
            not_methods: patterns(&o.not_methods),
            paths: patterns(&o.paths),
            not_paths: patterns(&o.not_paths),
        }
    }

    fn matches(&self, a: &RequestAttributes) -> bool {
        let host = a.host.to_ascii_lowercase();
        let host_port = format!("{host}:{}", a.port);
        // Port-insensitive: `example.com` matches with or without a port,
        // `example.com:8080` only with it.
        let host_hit = |p: &Pattern| p.matches(&host) || p.matches(&host_port);
        let path = normalized_path(a.path);
        pos_neg(&self.hosts, &self.not_hosts, host_hit)
            && pos_neg(&self.ports, &self.not_ports, |p| *p == a.port)
            && pos_neg(&self.methods, &self.not_methods, |p| p.matches(a.method))
            && pos_neg(&self.paths, &self.not_paths, |p| p.matches(&path))
    }
}

#[derive(Clone, Debug)]
enum ConditionKey {
    Header(HeaderName),
    SourceIp,
    SourceNamespace,
    SourcePrincipal,
    AuthPrincipal,
    AuthAudiences,
    AuthPresenter,
    AuthClaim(Vec<String>),
    DestinationPort,
}

#[derive(Clone, Debug)]
enum Values {
    Patterns(Vec<Pattern>, Vec<Pattern>),
    Nets(Vec<IpNet>, Vec<IpNet>),
    Ports(Vec<u16>, Vec<u16>),
}

#[derive(Clone, Debug)]
struct ConditionMatch {
    key: ConditionKey,
    values: Values,
}

/// `request.auth.claims[a][b]` → `["a", "b"]`.
fn claim_path(rest: &str) -> Option<Vec<String>> {
    let inner = rest.strip_prefix('[')?.strip_suffix(']')?;
    let parts: Vec<String> = inner.split("][").map(str::to_string).collect();
    (!parts.iter().any(String::is_empty)).then_some(parts)
}

impl ConditionMatch {
    /// `None`: a key the waypoint cannot evaluate.
    fn compile(c: &Condition) -> Option<Self> {
        let key_text = c.key.as_deref().unwrap_or("");
        let key = match key_text {
            "source.ip" | "remote.ip" => ConditionKey::SourceIp,
            "source.namespace" => ConditionKey::SourceNamespace,
            "source.principal" => ConditionKey::SourcePrincipal,
            "request.auth.principal" => ConditionKey::AuthPrincipal,
            "request.auth.audiences" => ConditionKey::AuthAudiences,
            "request.auth.presenter" => ConditionKey::AuthPresenter,
            "destination.port" => ConditionKey::DestinationPort,
            k => {
                if let Some(name) = k
                    .strip_prefix("request.headers[")
                    .and_then(|r| r.strip_suffix(']'))
                {
                    ConditionKey::Header(HeaderName::from_bytes(name.as_bytes()).ok()?)
                } else {
                    ConditionKey::AuthClaim(claim_path(k.strip_prefix("request.auth.claims")?)?)
                }
            }
        };
        let text = |v: &[mesh_api::security::PortKey]| -> Vec<String> {
            v.iter().map(|p| p.0.clone()).collect()
        };
        let (pos, neg) = (text(&c.values), text(&c.not_values));
        let values = match key {
            ConditionKey::SourceIp => Values::Nets(nets(&pos), nets(&neg)),
            ConditionKey::DestinationPort => Values::Ports(ports(&pos), ports(&neg)),
            _ => Values::Patterns(patterns(&pos), patterns(&neg)),
        };
        Some(ConditionMatch { key, values })
    }

    fn matches(&self, a: &RequestAttributes) -> bool {
        let strings: Vec<String> = match &self.key {
            ConditionKey::Header(h) => {
                let all: Vec<&str> = a
                    .headers
                    .get_all(h)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect();
                // Envoy joins repeated headers with commas.
                if all.is_empty() {
                    Vec::new()
                } else {
                    vec![all.join(",")]
                }
            }
            ConditionKey::SourceNamespace => vec![a.source_namespace().to_string()],
            ConditionKey::SourcePrincipal => vec![a.principal()],
            ConditionKey::AuthPrincipal => vec![a.request_principal().to_string()],
            ConditionKey::AuthAudiences => a.auth.audiences(),
            ConditionKey::AuthPresenter => a.auth.presenter(),
            ConditionKey::AuthClaim(path) => a.auth.claim(path),
            ConditionKey::SourceIp | ConditionKey::DestinationPort => Vec::new(),
        };
        match &self.values {
            Values::Nets(pos, neg) => pos_neg(pos, neg, |n| n.contains(&a.source_ip)),
            Values::Ports(pos, neg) => pos_neg(pos, neg, |p| *p == a.port),
            Values::Patterns(pos, neg) => {
                pos_neg(pos, neg, |p| strings.iter().any(|s| p.matches(s)))
            }
        }
    }
}

/// One `rules[i]`: any `from` AND any `to` AND every `when`.
#[derive(Clone, Debug, Default)]
struct RuleMatch {
    from: Vec<SourceMatch>,
    to: Vec<OperationMatch>,
    when: Vec<ConditionMatch>,
    /// Has a condition the waypoint cannot evaluate.
    unsupported: bool,
}

impl RuleMatch {
    fn matches(&self, action: Action, a: &RequestAttributes) -> bool {
        if self.unsupported && action != Action::Deny {
            return false;
        }
        (self.from.is_empty() || self.from.iter().any(|s| s.matches(a)))
            && (self.to.is_empty() || self.to.iter().any(|o| o.matches(a)))
            && self.when.iter().all(|c| c.matches(a))
    }
}

/// One compiled AuthorizationPolicy (ALLOW, DENY or AUDIT).
#[derive(Clone, Debug)]
pub struct AuthzPolicy {
    pub resource: String,
    pub namespace: String,
    pub scope: Scope,
    pub action: Action,
    rules: Vec<RuleMatch>,
}

impl AuthzPolicy {
    fn matches(&self, a: &RequestAttributes) -> bool {
        self.rules.iter().any(|r| r.matches(self.action, a))
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
        let action = spec.action();
        if action == Action::Custom {
            issues.push(Issue::new(
                resource,
                "spec.action",
                "CUSTOM (external authorization) is not supported by the waypoint; this policy is ignored",
            ));
            return;
        }
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
            let mut rule = RuleMatch {
                from: r
                    .from
                    .iter()
                    .filter_map(|f| f.source.as_ref().map(SourceMatch::compile))
                    .collect(),
                to: r
                    .to
                    .iter()
                    .filter_map(|t| t.operation.as_ref().map(OperationMatch::compile))
                    .collect(),
                ..Default::default()
            };
            for (j, c) in r.when.iter().enumerate() {
                match ConditionMatch::compile(c) {
                    Some(m) => rule.when.push(m),
                    None => {
                        rule.unsupported = true;
                        issues.push(Issue::new(
                            resource,
                            &format!("spec.rules[{i}].when[{j}].key"),
                            format!(
                                "{:?} cannot be evaluated by the waypoint; the rule {}",
                                c.key.as_deref().unwrap_or(""),
                                if action == Action::Deny {
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
            namespace: namespace.to_string(),
            scope,
            action,
            rules,
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
    pub fn check(&self, target: &Target, a: &RequestAttributes) -> Decision {
        let applicable = || {
            self.policies
                .iter()
                .filter(|p| p.scope.applies(&p.namespace, target))
        };
        for p in applicable().filter(|p| p.action == Action::Audit) {
            if p.matches(a) {
                tracing::info!(policy = %p.resource, path = a.path, "AUDIT policy matched");
            }
        }
        if let Some(p) = applicable().find(|p| p.action == Action::Deny && p.matches(a)) {
            return Decision::Deny {
                policy: p.resource.clone(),
            };
        }
        let mut allows = applicable()
            .filter(|p| p.action == Action::Allow)
            .peekable();
        if allows.peek().is_none() {
            return Decision::Allow;
        }
        if allows.any(|p| p.matches(a)) {
            Decision::Allow
        } else {
            Decision::Deny {
                policy: String::new(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
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
        let a = RequestAttributes {
            method: r.method,
            path: r.path,
            host: "MyApp.production.svc.cluster.local",
            port: 8080,
            headers: &r.headers,
            source_ip: r.ip.parse().expect("ip"),
            identity: r.identity.as_ref(),
            auth: &r.auth,
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
        assert_eq!(normalized_path("/public/../admin"), "/admin");
        assert_eq!(normalized_path("/a/./b"), "/a/b");
        assert_eq!(normalized_path("/%61dmin/x"), "/admin/x");
        assert_eq!(normalized_path("/a%2fb"), "/a%2Fb");
        assert_eq!(normalized_path("/a\\..\\admin"), "/admin");
        assert_eq!(normalized_path("/../../x"), "/x");
        assert_eq!(normalized_path("/a/.."), "/");
        assert_eq!(normalized_path("/"), "/");
        assert_eq!(normalized_path("/a//b"), "/a//b");
        assert_eq!(normalized_path("/x%"), "/x%");
        assert_eq!(normalized_path("/x%+1"), "/x%+1");
        assert_eq!(normalized_path("*"), "*");
        let deny = authorizer(&[(
            "production",
            json!({"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin*"]}}]}]}),
        )]);
        assert!(!decide(&deny, &req("GET", "/public/../admin/users")));
        assert!(!decide(&deny, &req("GET", "/%61dmin")));
    }

    #[test]
    fn patterns_follow_istio() {
        assert!(Pattern::new("*").matches("x"));
        assert!(!Pattern::new("*").matches(""));
        assert!(Pattern::new("/api/*").matches("/api/v1"));
        assert!(!Pattern::new("/api/*").matches("/apix"));
        assert!(Pattern::new("*.png").matches("/a/b.png"));
        assert!(Pattern::new("/x").matches("/x"));
        assert!(!Pattern::new("/x").matches("/x/"));
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
