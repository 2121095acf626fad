//! L4 policy tables: AuthorizationPolicy decisions and PeerAuthentication
//! modes, as ztunnel enforces them, including the seed configs operators wrote.

use std::net::IpAddr;

use mesh_identity::Identity;
use mesh_model::config::{self, LocalConfig};
use mesh_model::rbac::{self, ConnectionInfo, Decision, MtlsMode, Reason};
use mesh_model::state::ProxyState;

const SEEDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/istio/");

fn seed(name: &str) -> Vec<config::Policy> {
    let text = std::fs::read_to_string(format!("{SEEDS}{name}")).expect(name);
    config::parse_policies(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The state of `base` plus `extra` policies, and its warnings.
fn state_with(base: &str, extra: Vec<config::Policy>) -> (ProxyState, Vec<String>) {
    let mut cfg: LocalConfig = config::parse(base).unwrap_or_else(|e| panic!("{e}"));
    cfg.policies.extend(extra);
    let state = config::build_state(&cfg).unwrap_or_else(|e| panic!("{e}"));
    let warnings = state.warnings().to_vec();
    (state, warnings)
}

fn id(ns: &str, sa: &str) -> Option<Identity> {
    Some(Identity::new("cluster.local", ns, sa))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const WORKLOADS: &str = r#"
namespaces:
- name: demo
  labels: {istio.io/dataplane-mode: ambient}
- name: other
- name: quarantine
- name: prod
- name: production
- name: bookinfo
workloads:
- {name: client, namespace: demo, serviceAccount: client, node: a, ip: 10.0.1.1, labels: {app: client}}
- {name: admin, namespace: demo, serviceAccount: admin, node: a, ip: 10.0.1.5, labels: {app: admin}}
- {name: server, namespace: demo, serviceAccount: server, node: b, ip: 10.0.2.1, labels: {app: server}}
- {name: db, namespace: demo, serviceAccount: db, node: b, ip: 10.0.2.2, labels: {app: db}}
- {name: cache, namespace: demo, serviceAccount: cache, node: b, ip: 10.0.2.3, labels: {app: cache}}
- {name: open, namespace: demo, node: b, ip: 10.0.2.4, labels: {app: open}}
- {name: locked, namespace: demo, node: b, ip: 10.0.2.5, labels: {app: locked}}
- {name: vault, namespace: demo, node: b, ip: 10.0.2.6, labels: {app: vault}}
- {name: metrics, namespace: demo, node: b, ip: 10.0.2.7, labels: {app: metrics}}
- {name: web, namespace: demo, node: b, ip: 10.0.2.8, labels: {app: web}}
- {name: web2, namespace: demo, node: b, ip: 10.0.2.9, labels: {app: web2}}
- {name: prefixed, namespace: demo, node: b, ip: 10.0.2.10, labels: {app: prefixed}}
- {name: intruder, namespace: other, serviceAccount: intruder, node: c, ip: 10.0.3.1, labels: {app: intruder}}
- {name: bad, namespace: quarantine, serviceAccount: bad, node: c, ip: 10.0.4.1}
- {name: myapp, namespace: production, serviceAccount: myapp, node: c, ip: 10.1.0.1, labels: {app: myapp}}
- {name: legacy, namespace: production, node: c, ip: 10.1.0.2, labels: {app: legacy-service}}
- {name: frontend, namespace: production, serviceAccount: frontend, node: c, ip: 10.1.0.3, labels: {app: frontend}}
- {name: productpage, namespace: bookinfo, serviceAccount: bookinfo-productpage, node: c, ip: 10.2.0.1, labels: {app: productpage}}
- {name: reviews, namespace: bookinfo, serviceAccount: bookinfo-reviews, node: c, ip: 10.2.0.2, labels: {app: reviews}}
"#;

const AUTHZ: &str = r#"
policies:
# Mesh-wide (root namespace): nothing from the quarantine namespace, anywhere.
- apiVersion: security.istio.io/v1
  kind: AuthorizationPolicy
  metadata: {name: mesh-deny-quarantine, namespace: istio-system}
  spec:
    action: DENY
    rules:
    - from: [{source: {namespaces: ["quarantine"]}}]
- apiVersion: security.istio.io/v1
  kind: AuthorizationPolicy
  metadata: {name: allow-server, namespace: demo}
  spec:
    selector: {matchLabels: {app: server}}
    action: ALLOW
    rules:
    - from: [{source: {principals: ["cluster.local/ns/demo/sa/client"]}}]
      to: [{operation: {ports: ["8080"]}}]
    - from: [{source: {principals: ["*/sa/admin"]}}]
    - from: [{source: {ipBlocks: ["192.168.0.0/16"]}}]
      to: [{operation: {ports: [9090]}}]
- apiVersion: security.istio.io/v1
  kind: AuthorizationPolicy
  metadata: {name: deny-debug-port, namespace: demo}
  spec:
    selector: {matchLabels: {app: server}}
    action: DENY
    rules:
    - to: [{operation: {ports: ["9999"]}}]
- apiVersion: security.istio.io/v1
  kind: AuthorizationPolicy
  metadata: {name: db-only-from-demo, namespace: demo}
  spec:
    selector: {matchLabels: {app: db}}
    action: DENY
    rules:
    - from: [{source: {notNamespaces: ["demo"]}}]
- apiVersion: security.istio.io/v1
  kind: AuthorizationPolicy
  metadata: {name: audit-db, namespace: demo}
  spec:
    selector: {matchLabels: {app: db}}
    action: AUDIT
    rules:
    - from: [{source: {principals: ["*"]}}]
- apiVersion: security.istio.io/v1
  kind: AuthorizationPolicy
  metadata: {name: cache-allow-nothing, namespace: demo}
  spec:
    selector: {matchLabels: {app: cache}}
- apiVersion: security.istio.io/v1
  kind: AuthorizationPolicy
  metadata: {name: open-allow-all, namespace: demo}
  spec:
    selector: {matchLabels: {app: open}}
    rules: [{}]
- apiVersion: security.istio.io/v1
  kind: AuthorizationPolicy
  metadata: {name: locked-deny-all, namespace: demo}
  spec:
    selector: {matchLabels: {app: locked}}
    action: DENY
    rules: [{}]
- apiVersion: security.istio.io/v1
  kind: AuthorizationPolicy
  metadata: {name: vault-only-client, namespace: demo}
  spec:
    selector: {matchLabels: {app: vault}}
    action: DENY
    rules:
    - from: [{source: {notPrincipals: ["cluster.local/ns/demo/sa/client"]}}]
- apiVersion: security.istio.io/v1
  kind: AuthorizationPolicy
  metadata: {name: metrics-scrape, namespace: demo}
  spec:
    selector: {matchLabels: {app: metrics}}
    rules:
    - when:
      - {key: source.ip, values: ["10.0.1.0/24"]}
      - {key: destination.port, values: ["15020"]}
- apiVersion: security.istio.io/v1
  kind: AuthorizationPolicy
  metadata: {name: web-get-only, namespace: demo}
  spec:
    selector: {matchLabels: {app: web}}
    rules:
    - to: [{operation: {methods: ["GET"]}}]
- apiVersion: security.istio.io/v1
  kind: AuthorizationPolicy
  metadata: {name: web2-no-posts-from-other, namespace: demo}
  spec:
    selector: {matchLabels: {app: web2}}
    action: DENY
    rules:
    - from: [{source: {namespaces: ["other"]}}]
      to: [{operation: {methods: ["POST"]}}]
- apiVersion: security.istio.io/v1
  kind: AuthorizationPolicy
  metadata: {name: prefixed, namespace: demo}
  spec:
    selector: {matchLabels: {app: prefixed}}
    rules:
    - from: [{source: {principals: ["cluster.local/ns/demo/*"]}}]
      to: [{operation: {notPorts: ["22"]}}]
- apiVersion: security.istio.io/v1beta1
  kind: AuthorizationPolicy
  metadata: {name: other-allow-nothing, namespace: other}
  spec: {}
"#;

enum Want {
    AllowedBy(&'static str),
    AllowedNoPolicy,
    DeniedBy(&'static str),
    ImplicitDeny,
}

struct Case {
    name: &'static str,
    src: Option<Identity>,
    src_ip: &'static str,
    dst: &'static str,
    port: u16,
    want: Want,
    audit: Option<&'static str>,
}

fn check(state: &ProxyState, cases: &[Case]) {
    let mut failures = Vec::new();
    for c in cases {
        let dst = state
            .workload_by_ip(ip(c.dst))
            .unwrap_or_else(|| panic!("{}: no workload {}", c.name, c.dst));
        let d: Decision = rbac::authorize(
            state,
            &ConnectionInfo {
                src_identity: c.src.clone(),
                src_ip: ip(c.src_ip),
                dst_workload: dst,
                dst_port: c.port,
            },
        );
        let ok = match (&c.want, &d.reason) {
            (Want::AllowedBy(p), Reason::AllowedBy(q)) => d.allowed && p == q,
            (Want::AllowedNoPolicy, Reason::NoPolicies) => d.allowed,
            (Want::DeniedBy(p), Reason::DeniedBy(q)) => !d.allowed && p == q,
            (Want::ImplicitDeny, Reason::NoAllowMatch(_)) => !d.allowed,
            _ => false,
        } && d.audit.as_deref() == c.audit;
        if !ok {
            failures.push(format!("{}: got {d:?}", c.name));
        }
    }
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
}

#[test]
fn authorization_table() {
    let (state, warnings) = state_with(&format!("{WORKLOADS}{AUTHZ}"), vec![]);
    let w = warnings.join("\n");
    assert!(
        w.contains("demo/web-get-only: spec.rules[0] uses HTTP attributes (methods)"),
        "{w}"
    );
    assert!(
        w.contains("demo/web2-no-posts-from-other: spec.rules[0] uses HTTP attributes (methods)"),
        "{w}"
    );

    use Want::*;
    let client = || id("demo", "client");
    let cases = [
        Case {
            name: "principal + port allowed",
            src: client(),
            src_ip: "10.0.1.1",
            dst: "10.0.2.1",
            port: 8080,
            want: AllowedBy("demo/allow-server"),
            audit: None,
        },
        Case {
            name: "principal on another port: implicit deny",
            src: client(),
            src_ip: "10.0.1.1",
            dst: "10.0.2.1",
            port: 9090,
            want: ImplicitDeny,
            audit: None,
        },
        Case {
            name: "suffix wildcard principal, any port",
            src: id("demo", "admin"),
            src_ip: "10.0.1.5",
            dst: "10.0.2.1",
            port: 1234,
            want: AllowedBy("demo/allow-server"),
            audit: None,
        },
        Case {
            name: "suffix wildcard matches other namespaces too",
            src: id("other", "admin"),
            src_ip: "10.0.3.9",
            dst: "10.0.2.1",
            port: 1234,
            want: AllowedBy("demo/allow-server"),
            audit: None,
        },
        Case {
            name: "plaintext from ipBlock on its port",
            src: None,
            src_ip: "192.168.7.7",
            dst: "10.0.2.1",
            port: 9090,
            want: AllowedBy("demo/allow-server"),
            audit: None,
        },
        Case {
            name: "plaintext from outside ipBlock",
            src: None,
            src_ip: "172.16.0.1",
            dst: "10.0.2.1",
            port: 9090,
            want: ImplicitDeny,
            audit: None,
        },
        Case {
            name: "DENY beats a matching ALLOW",
            src: id("demo", "admin"),
            src_ip: "10.0.1.5",
            dst: "10.0.2.1",
            port: 9999,
            want: DeniedBy("demo/deny-debug-port"),
            audit: None,
        },
        Case {
            name: "mesh-wide DENY from root namespace (server)",
            src: id("quarantine", "bad"),
            src_ip: "10.0.4.1",
            dst: "10.0.2.1",
            port: 8080,
            want: DeniedBy("istio-system/mesh-deny-quarantine"),
            audit: None,
        },
        Case {
            name: "mesh-wide DENY applies in every namespace",
            src: id("quarantine", "bad"),
            src_ip: "10.0.4.1",
            dst: "10.1.0.1",
            port: 8080,
            want: DeniedBy("istio-system/mesh-deny-quarantine"),
            audit: None,
        },
        Case {
            name: "no ALLOW policy selects db: allowed, audited",
            src: client(),
            src_ip: "10.0.1.1",
            dst: "10.0.2.2",
            port: 5432,
            want: AllowedNoPolicy,
            audit: Some("demo/audit-db"),
        },
        Case {
            name: "notNamespaces denies plaintext (no namespace)",
            src: None,
            src_ip: "10.0.1.1",
            dst: "10.0.2.2",
            port: 5432,
            want: DeniedBy("demo/db-only-from-demo"),
            audit: None,
        },
        Case {
            name: "notNamespaces denies other namespace, still audited",
            src: id("other", "intruder"),
            src_ip: "10.0.3.1",
            dst: "10.0.2.2",
            port: 5432,
            want: DeniedBy("demo/db-only-from-demo"),
            audit: Some("demo/audit-db"),
        },
        Case {
            name: "ALLOW policy without rules allows nothing",
            src: client(),
            src_ip: "10.0.1.1",
            dst: "10.0.2.3",
            port: 6379,
            want: ImplicitDeny,
            audit: None,
        },
        Case {
            name: "rules: [{}] ALLOW allows plaintext too",
            src: None,
            src_ip: "8.8.8.8",
            dst: "10.0.2.4",
            port: 80,
            want: AllowedBy("demo/open-allow-all"),
            audit: None,
        },
        Case {
            name: "rules: [{}] DENY denies everyone",
            src: client(),
            src_ip: "10.0.1.1",
            dst: "10.0.2.5",
            port: 80,
            want: DeniedBy("demo/locked-deny-all"),
            audit: None,
        },
        Case {
            name: "notPrincipals: the excepted principal passes",
            src: client(),
            src_ip: "10.0.1.1",
            dst: "10.0.2.6",
            port: 8200,
            want: AllowedNoPolicy,
            audit: None,
        },
        Case {
            name: "notPrincipals: another principal is denied",
            src: id("demo", "admin"),
            src_ip: "10.0.1.5",
            dst: "10.0.2.6",
            port: 8200,
            want: DeniedBy("demo/vault-only-client"),
            audit: None,
        },
        Case {
            name: "notPrincipals: plaintext is denied",
            src: None,
            src_ip: "10.0.1.1",
            dst: "10.0.2.6",
            port: 8200,
            want: DeniedBy("demo/vault-only-client"),
            audit: None,
        },
        Case {
            name: "when source.ip + destination.port match",
            src: None,
            src_ip: "10.0.1.77",
            dst: "10.0.2.7",
            port: 15020,
            want: AllowedBy("demo/metrics-scrape"),
            audit: None,
        },
        Case {
            name: "when source.ip outside",
            src: None,
            src_ip: "10.0.3.1",
            dst: "10.0.2.7",
            port: 15020,
            want: ImplicitDeny,
            audit: None,
        },
        Case {
            name: "when destination.port other",
            src: None,
            src_ip: "10.0.1.77",
            dst: "10.0.2.7",
            port: 15021,
            want: ImplicitDeny,
            audit: None,
        },
        Case {
            name: "ALLOW rule with methods never matches at L4",
            src: client(),
            src_ip: "10.0.1.1",
            dst: "10.0.2.8",
            port: 80,
            want: ImplicitDeny,
            audit: None,
        },
        Case {
            name: "DENY rule with methods denies all from its sources",
            src: id("other", "intruder"),
            src_ip: "10.0.3.1",
            dst: "10.0.2.9",
            port: 80,
            want: DeniedBy("demo/web2-no-posts-from-other"),
            audit: None,
        },
        Case {
            name: "DENY rule with methods: other sources unaffected",
            src: client(),
            src_ip: "10.0.1.1",
            dst: "10.0.2.9",
            port: 80,
            want: AllowedNoPolicy,
            audit: None,
        },
        Case {
            name: "prefix wildcard principal + notPorts",
            src: client(),
            src_ip: "10.0.1.1",
            dst: "10.0.2.10",
            port: 443,
            want: AllowedBy("demo/prefixed"),
            audit: None,
        },
        Case {
            name: "prefix wildcard: excluded port",
            src: client(),
            src_ip: "10.0.1.1",
            dst: "10.0.2.10",
            port: 22,
            want: ImplicitDeny,
            audit: None,
        },
        Case {
            name: "prefix wildcard: other namespace",
            src: id("other", "intruder"),
            src_ip: "10.0.3.1",
            dst: "10.0.2.10",
            port: 443,
            want: ImplicitDeny,
            audit: None,
        },
        Case {
            name: "namespace-wide policy (no selector) in other",
            src: client(),
            src_ip: "10.0.1.1",
            dst: "10.0.3.1",
            port: 80,
            want: ImplicitDeny,
            audit: None,
        },
        Case {
            name: "selector scope: allow-server does not select client",
            src: id("other", "intruder"),
            src_ip: "10.0.3.1",
            dst: "10.0.1.1",
            port: 80,
            want: AllowedNoPolicy,
            audit: None,
        },
    ];
    check(&state, &cases);
}

#[test]
fn decision_names_policy_and_displays() {
    let (state, _) = state_with(&format!("{WORKLOADS}{AUTHZ}"), vec![]);
    let db = state.workload_by_ip(ip("10.0.2.2")).unwrap();
    let d = rbac::authorize(
        &state,
        &ConnectionInfo {
            src_identity: id("other", "x"),
            src_ip: ip("10.0.3.1"),
            dst_workload: db,
            dst_port: 1,
        },
    );
    assert_eq!(d.policy(), Some("demo/db-only-from-demo"));
    assert_eq!(
        d.to_string(),
        "denied by DENY policy demo/db-only-from-demo (audited by demo/audit-db)"
    );
    let server = state.workload_by_ip(ip("10.0.2.1")).unwrap();
    let d = rbac::authorize(
        &state,
        &ConnectionInfo {
            src_identity: None,
            src_ip: ip("10.0.3.1"),
            dst_workload: server,
            dst_port: 1,
        },
    );
    assert_eq!(
        d.reason,
        Reason::NoAllowMatch(vec!["demo/allow-server".into()])
    );
    assert!(d.to_string().contains("no ALLOW policy matched"), "{d}");
}

#[test]
fn seed_46_myapp_authz_is_http_only_so_l4_denies() {
    let (state, warnings) = state_with(
        WORKLOADS,
        seed("46-003-authorizationpolicy-myapp-authz.yaml"),
    );
    let w = warnings.join("\n");
    assert!(w.contains("production/myapp-authz"), "{w}");
    assert!(w.contains("HTTP attributes (methods, paths)"), "{w}");
    use Want::*;
    check(
        &state,
        &[
            // Both rules use methods/paths: at L4 they never match -> implicit deny.
            Case {
                name: "frontend -> myapp",
                src: id("production", "frontend"),
                src_ip: "10.1.0.3",
                dst: "10.1.0.1",
                port: 8080,
                want: ImplicitDeny,
                audit: None,
            },
            Case {
                name: "health check (no identity) -> myapp",
                src: None,
                src_ip: "10.9.9.9",
                dst: "10.1.0.1",
                port: 8080,
                want: ImplicitDeny,
                audit: None,
            },
            // The policy selects app=myapp only.
            Case {
                name: "frontend -> legacy (not selected)",
                src: id("production", "frontend"),
                src_ip: "10.1.0.3",
                dst: "10.1.0.2",
                port: 8080,
                want: AllowedNoPolicy,
                audit: None,
            },
        ],
    );
}

#[test]
fn seed_11_bookinfo_viewers_at_l4() {
    let mut policies = seed("11-000-authorizationpolicy-authorization-policy.yaml");
    assert_eq!(policies.len(), 4);
    // The same shapes with the HTTP part removed: an L4-only variant.
    let l4 = config::parse_policies(
        &std::fs::read_to_string(format!(
            "{SEEDS}11-000-authorizationpolicy-authorization-policy.yaml"
        ))
        .unwrap()
        .replace(
            "  - to:\n    - operation:\n        methods: [\"GET\"]\n",
            "  - {}\n",
        )
        .replace(
            "    to:\n    - operation:\n        methods: [\"GET\"]\n",
            "",
        )
        .replace("reviews-viewer", "reviews-viewer-l4")
        .replace("ratings-viewer", "ratings-viewer-l4")
        .replace("details-viewer", "details-viewer-l4")
        .replace("productpage-viewer", "productpage-viewer-l4"),
    )
    .unwrap();
    policies.extend(l4);
    let (state, _) = state_with(WORKLOADS, policies);
    use Want::*;
    check(
        &state,
        &[
            Case {
                name: "productpage -> reviews via the L4 variant",
                src: id("bookinfo", "bookinfo-productpage"),
                src_ip: "10.2.0.1",
                dst: "10.2.0.2",
                port: 9080,
                want: AllowedBy("bookinfo/reviews-viewer-l4"),
                audit: None,
            },
            Case {
                name: "reviews -> reviews: no rule for it",
                src: id("bookinfo", "bookinfo-reviews"),
                src_ip: "10.2.0.2",
                dst: "10.2.0.2",
                port: 9080,
                want: ImplicitDeny,
                audit: None,
            },
            // productpage-viewer's only rule was `to: GET`; stripped it is `{}`: allow all.
            Case {
                name: "anyone -> productpage (L4 variant has an empty rule)",
                src: None,
                src_ip: "10.9.9.9",
                dst: "10.2.0.1",
                port: 9080,
                want: AllowedBy("bookinfo/productpage-viewer-l4"),
                audit: None,
            },
        ],
    );
}

#[test]
fn seed_11_alone_denies_everything_at_l4() {
    let (state, warnings) = state_with(
        WORKLOADS,
        seed("11-000-authorizationpolicy-authorization-policy.yaml"),
    );
    assert_eq!(
        warnings
            .iter()
            .filter(|w| w.contains("HTTP attributes (methods)"))
            .count(),
        4
    );
    use Want::*;
    check(
        &state,
        &[Case {
            name: "productpage -> reviews (GET-only rule)",
            src: id("bookinfo", "bookinfo-productpage"),
            src_ip: "10.2.0.1",
            dst: "10.2.0.2",
            port: 9080,
            want: ImplicitDeny,
            audit: None,
        }],
    );
}

// ------------------------------------------------------ PeerAuthentication --

fn mode(state: &ProxyState, at: &str, port: u16) -> MtlsMode {
    let w = state.workload_by_ip(ip(at)).unwrap();
    rbac::peer_authentication_mode(state, w, port)
}

#[test]
fn peer_authentication_default_is_permissive() {
    let (state, _) = state_with(WORKLOADS, vec![]);
    assert_eq!(mode(&state, "10.0.2.1", 8080), MtlsMode::Permissive);
}

#[test]
fn peer_authentication_mesh_namespace_workload_port() {
    let local = r#"
- apiVersion: security.istio.io/v1
  kind: PeerAuthentication
  metadata: {name: default, namespace: other}
  spec: {mtls: {mode: PERMISSIVE}}
- apiVersion: security.istio.io/v1
  kind: PeerAuthentication
  metadata: {name: default, namespace: quarantine}
  spec: {mtls: {mode: UNSET}}
- apiVersion: security.istio.io/v1
  kind: PeerAuthentication
  metadata: {name: server, namespace: demo}
  spec:
    selector: {matchLabels: {app: server}}
    portLevelMtls:
      9090: {mode: DISABLE}
      "8443": {mode: PERMISSIVE}
      8080: {mode: UNSET}
- apiVersion: security.istio.io/v1
  kind: PeerAuthentication
  metadata: {name: db, namespace: demo}
  spec:
    selector: {matchLabels: {app: db}}
    mtls: {mode: PERMISSIVE}
    portLevelMtls: {5432: {mode: STRICT}}
- apiVersion: security.istio.io/v1
  kind: PeerAuthentication
  metadata: {name: intruder-disable, namespace: demo}
  spec:
    selector: {matchLabels: {app: intruder}}
    mtls: {mode: DISABLE}
"#;
    let mut policies = seed("09-000-peerauthentication-default.yaml"); // mesh STRICT
    policies.extend(config::parse_policies(local).unwrap());
    let (state, _) = state_with(WORKLOADS, policies);
    use MtlsMode::*;
    let table = [
        (
            "mesh STRICT applies to a namespace without its own",
            "10.0.2.7",
            80,
            Strict,
        ),
        (
            "namespace PERMISSIVE beats mesh STRICT",
            "10.0.3.1",
            80,
            Permissive,
        ),
        (
            "namespace UNSET inherits mesh STRICT",
            "10.0.4.1",
            80,
            Strict,
        ),
        (
            "workload selector, mode UNSET: inherits mesh",
            "10.0.2.1",
            80,
            Strict,
        ),
        ("port-level DISABLE", "10.0.2.1", 9090, Disable),
        (
            "port-level key written as a string",
            "10.0.2.1",
            8443,
            Permissive,
        ),
        (
            "port-level UNSET inherits the workload's mode",
            "10.0.2.1",
            8080,
            Strict,
        ),
        (
            "workload PERMISSIVE beats mesh STRICT",
            "10.0.2.2",
            80,
            Permissive,
        ),
        (
            "port-level STRICT beats workload PERMISSIVE",
            "10.0.2.2",
            5432,
            Strict,
        ),
        (
            "a selector policy in demo does not reach other/intruder",
            "10.0.3.1",
            443,
            Permissive,
        ),
    ];
    let mut failures = Vec::new();
    for (name, at, port, want) in table {
        let got = mode(&state, at, port);
        if got != want {
            failures.push(format!("{name}: {at}:{port} got {got}, want {want}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn peer_authentication_seed_45_and_10() {
    let mut policies = seed("45-003-peerauthentication-mtls-configuration.yaml");
    policies.extend(seed("10-000-peerauthentication-default.yaml"));
    let (state, _) = state_with(WORKLOADS, policies);
    assert_eq!(
        mode(&state, "10.1.0.1", 8080),
        MtlsMode::Strict,
        "production namespace STRICT"
    );
    assert_eq!(
        mode(&state, "10.1.0.2", 8080),
        MtlsMode::Permissive,
        "legacy-service PERMISSIVE"
    );
    assert_eq!(
        mode(&state, "10.2.0.1", 9080),
        MtlsMode::Strict,
        "bookinfo STRICT"
    );
    assert_eq!(
        mode(&state, "10.0.2.1", 80),
        MtlsMode::Strict,
        "mesh STRICT from seed 45"
    );
}

#[test]
fn root_namespace_selector_peer_authentication_stays_in_root_namespace() {
    let text = r#"
- apiVersion: security.istio.io/v1
  kind: PeerAuthentication
  metadata: {name: sel, namespace: istio-system}
  spec:
    selector: {matchLabels: {app: server}}
    mtls: {mode: STRICT}
"#;
    let (state, _) = state_with(WORKLOADS, config::parse_policies(text).unwrap());
    assert!(state
        .warnings()
        .iter()
        .any(|w| w.contains("applies only to workloads of that namespace")));
    assert_eq!(mode(&state, "10.0.2.1", 80), MtlsMode::Permissive);
}

#[test]
fn custom_root_namespace_decides_mesh_scope() {
    let base = format!("rootNamespace: mesh-root\n{WORKLOADS}");
    let mut policies = seed("09-000-peerauthentication-default.yaml"); // istio-system: no longer mesh-wide
    policies.extend(
        config::parse_policies(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-all, namespace: mesh-root}\nspec: {action: DENY, rules: [{}]}\n",
        )
        .unwrap(),
    );
    let (state, _) = state_with(&base, policies);
    assert_eq!(mode(&state, "10.0.2.1", 80), MtlsMode::Permissive);
    let d = rbac::authorize(
        &state,
        &ConnectionInfo {
            src_identity: id("demo", "client"),
            src_ip: ip("10.0.1.1"),
            dst_workload: state.workload_by_ip(ip("10.0.2.1")).unwrap(),
            dst_port: 80,
        },
    );
    assert_eq!(d.reason, Reason::DeniedBy("mesh-root/deny-all".into()));
}
