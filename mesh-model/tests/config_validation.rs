//! The local config file: every refusal names the entry, the field and why;
//! the watcher swaps in good files and keeps the last good state on bad ones.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use mesh_model::config::{self, ConfigError, ConfigWatcher};

const BASE: &str = r#"
trustDomain: cluster.local
certificates:
  roots: certs/root-cert.pem
  identities:
  - identity: spiffe://cluster.local/ns/demo/sa/client
    certChain: certs/client.pem
    key: /abs/client-key.pem
namespaces:
- name: demo
  labels: {istio.io/dataplane-mode: ambient}
- name: legacy
workloads:
- name: client-7d9
  namespace: demo
  serviceAccount: client
  node: node-a
  ip: 10.10.1.2
  netns: /run/netns/ambit-x-client
  labels: {app: client}
- name: server-1
  namespace: demo
  serviceAccount: server
  node: node-b
  ip: 10.10.2.2
  labels: {app: server}
services:
- name: server
  namespace: demo
  addresses: [10.96.0.10]
  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]
  selector: {app: server}
policies:
- apiVersion: security.istio.io/v1
  kind: PeerAuthentication
  metadata: {name: default, namespace: istio-system}
  spec: {mtls: {mode: STRICT}}
- apiVersion: security.istio.io/v1beta1
  kind: AuthorizationPolicy
  metadata: {name: allow-client, namespace: demo}
  spec:
    selector: {matchLabels: {app: server}}
    action: ALLOW
    rules:
    - from:
      - source:
          principals: ["cluster.local/ns/demo/sa/client"]
      to:
      - operation:
          ports: ["8080"]
"#;

/// Replaces the first occurrence of `from` in BASE (which must exist).
fn variant(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "BASE lacks {from:?}");
    BASE.replacen(from, to, 1)
}

fn error_of(text: &str) -> String {
    match config::parse(text) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[track_caller]
fn assert_error(text: &str, needles: &[&str]) {
    let msg = error_of(text);
    for n in needles {
        assert!(msg.contains(n), "error {msg:?} lacks {n:?}");
    }
}

#[test]
fn base_config_is_valid() {
    let cfg = config::parse(BASE).expect("valid");
    assert_eq!(cfg.workloads.len(), 2);
    assert_eq!(cfg.root_namespace, "istio-system");
    assert!(cfg.warnings().is_empty(), "{:?}", cfg.warnings());
    let state = config::parse_state(BASE).expect("valid");
    assert_eq!(state.workloads().len(), 2);
    assert_eq!(state.authorization_policies().len(), 1);
}

#[test]
fn empty_file_is_an_empty_config() {
    let cfg = config::parse("# nothing yet\n").expect("valid");
    assert!(cfg.workloads.is_empty());
    assert_eq!(cfg.trust_domain, "cluster.local");
}

#[test]
fn not_yaml() {
    let e = config::parse("workloads: [ {name: a\n").unwrap_err();
    assert!(matches!(e, ConfigError::Syntax(_)), "{e}");
}

#[test]
fn bad_workload_ip_names_entry_and_field() {
    assert_error(
        &variant("ip: 10.10.2.2", "ip: 10.0.0.300"),
        &[
            "workloads[1] (demo/server-1)",
            "field ip",
            "\"10.0.0.300\" is not an IP address",
        ],
    );
}

#[test]
fn unknown_top_level_field() {
    assert_error(
        &format!("{BASE}\nworkload: []\n"),
        &["top level", "unknown field `workload`"],
    );
}

#[test]
fn unknown_workload_field() {
    assert_error(
        &variant("  node: node-b\n", "  node: node-b\n  nodeName: x\n"),
        &["workloads[1] (demo/server-1)", "unknown field `nodeName`"],
    );
}

#[test]
fn unknown_field_deep_in_a_policy() {
    assert_error(
        &variant(
            "principals: [\"cluster.local/ns/demo/sa/client\"]",
            "principal: [\"cluster.local/ns/demo/sa/client\"]",
        ),
        &[
            "policies[1] AuthorizationPolicy demo/allow-client",
            "field spec.rules[0].from[0].source.principal:",
            "unknown field; did you mean spec.rules[0].from[0].source.principals?",
        ],
    );
}

#[test]
fn missing_required_field() {
    assert_error(
        &variant("  node: node-b\n", ""),
        &["workloads[1] (demo/server-1)", "missing field `node`"],
    );
}

#[test]
fn target_port_out_of_range() {
    assert_error(
        &variant("targetPort: 8080", "targetPort: 0"),
        &[
            "services[0] (demo/server)",
            "ports[0].targetPort",
            "0 is out of range",
        ],
    );
    assert_error(
        &variant("port: 80,", "port: 70000,"),
        &[
            "services[0] (demo/server)",
            "ports[0].port",
            "70000 is out of range",
        ],
    );
}

#[test]
fn bad_service_address() {
    assert_error(
        &variant("addresses: [10.96.0.10]", "addresses: [10.96.0.10, nope]"),
        &[
            "services[0] (demo/server)",
            "addresses[1]",
            "\"nope\" is not an IP address",
        ],
    );
}

#[test]
fn duplicate_workload_ip_and_name() {
    assert_error(
        &variant("ip: 10.10.2.2", "ip: 10.10.1.2"),
        &[
            "workloads[1] (demo/server-1)",
            "field ip",
            "10.10.1.2 is already the address of workloads[0] (demo/client-7d9)",
        ],
    );
    assert_error(
        &variant("name: server-1", "name: client-7d9"),
        &[
            "workloads[1] (demo/client-7d9)",
            "field name",
            "duplicate workload demo/client-7d9 (also workloads[0])",
        ],
    );
}

#[test]
fn workload_in_unlisted_namespace() {
    assert_error(
        &variant(
            "  namespace: demo\n  serviceAccount: server",
            "  namespace: prod\n  serviceAccount: server",
        ),
        &[
            "workloads[1] (prod/server-1)",
            "field namespace",
            "\"prod\" is not listed under namespaces",
        ],
    );
}

#[test]
fn bad_principal_names_its_index() {
    assert_error(
        &variant(
            "principals: [\"cluster.local/ns/demo/sa/client\"]",
            "principals: [\"cluster.local/ns/demo/sa/client\", \"spiffe://cluster.local/ns/demo/sa/x\"]",
        ),
        &[
            "policies[1] AuthorizationPolicy demo/allow-client",
            "spec.rules[0].from[0].source.principals[1]",
            "without the spiffe:// scheme",
        ],
    );
    assert_error(
        &variant(
            "principals: [\"cluster.local/ns/demo/sa/client\"]",
            "principals: [\"cluster.local/ns/*/sa/client\"]",
        ),
        &["source.principals[0]", "wildcard"],
    );
}

#[test]
fn bad_ip_block_and_port() {
    assert_error(
        &variant(
            "principals: [\"cluster.local/ns/demo/sa/client\"]",
            "ipBlocks: [\"10.0.0.0/33\"]",
        ),
        &["spec.rules[0].from[0].source.ipBlocks[0]", "10.0.0.0/33"],
    );
    assert_error(
        &variant("ports: [\"8080\"]", "ports: [\"http\"]"),
        &[
            "spec.rules[0].to[0].operation.ports[0]",
            "\"http\" is not a port number",
        ],
    );
}

#[test]
fn custom_action_is_refused_clearly() {
    assert_error(
        &variant("action: ALLOW", "action: CUSTOM"),
        &[
            "policies[1] AuthorizationPolicy demo/allow-client",
            "field spec.action",
            "CUSTOM is not supported",
        ],
    );
    assert_error(
        &variant("action: ALLOW", "action: PERMIT"),
        &[
            "field spec.action",
            "\"PERMIT\" is not one of ALLOW, DENY, AUDIT, CUSTOM",
        ],
    );
}

#[test]
fn peer_authentication_port_level_needs_selector() {
    assert_error(
        &variant(
            "spec: {mtls: {mode: STRICT}}",
            "spec: {mtls: {mode: STRICT}, portLevelMtls: {8080: {mode: DISABLE}}}",
        ),
        &[
            "policies[0] PeerAuthentication istio-system/default",
            "field spec.selector",
            "portLevelMtls needs a selector",
        ],
    );
    // An empty matchLabels selects the whole namespace: no per-port modes.
    assert_error(
        &variant(
            "spec: {mtls: {mode: STRICT}}",
            "spec: {selector: {matchLabels: {}}, portLevelMtls: {8080: {mode: DISABLE}}}",
        ),
        &[
            "policies[0] PeerAuthentication istio-system/default",
            "field spec.portLevelMtls",
            "requires a workload selector",
        ],
    );
    assert_error(
        &variant("mode: STRICT", "mode: STRICKT"),
        &[
            "policies[0] PeerAuthentication",
            "spec.mtls.mode",
            "STRICKT",
        ],
    );
}

#[test]
fn unsupported_kind_and_api_version() {
    assert_error(
        &variant("kind: PeerAuthentication", "kind: VirtualService"),
        &[
            "policies[0] VirtualService istio-system/default",
            "field kind",
            "not supported",
        ],
    );
    assert_error(
        &variant(
            "apiVersion: security.istio.io/v1\n",
            "apiVersion: security.istio.io/v2\n",
        ),
        &[
            "policies[0] PeerAuthentication",
            "field apiVersion",
            "security.istio.io/v2",
        ],
    );
}

#[test]
fn empty_source_and_unknown_condition_key() {
    assert_error(
        &variant("principals: [\"cluster.local/ns/demo/sa/client\"]", "{}"),
        &[
            "field spec.rules[0].from[0].source",
            "an empty source is not allowed",
        ],
    );
    assert_error(
        &variant(
            "      to:\n",
            "      when:\n      - key: source.color\n        values: [blue]\n      to:\n",
        ),
        &[
            "field spec.rules[0].when[0].key",
            "\"source.color\" is not a condition key",
        ],
    );
}

#[test]
fn bad_certificate_identity() {
    assert_error(
        &variant(
            "identity: spiffe://cluster.local/ns/demo/sa/client",
            "identity: cluster.local/ns/demo/sa/client",
        ),
        &["certificates", "identities[0].identity", "spiffe://"],
    );
}

#[test]
fn several_problems_are_all_reported() {
    let text =
        variant("ip: 10.10.2.2", "ip: nope").replacen("targetPort: 8080", "targetPort: -1", 1);
    let e = config::parse(&text).unwrap_err();
    assert_eq!(e.problems().len(), 2, "{e}");
    let msg = e.to_string();
    assert!(msg.contains("2 problems"), "{msg}");
    assert!(
        msg.contains("workloads[1]") && msg.contains("services[0]"),
        "{msg}"
    );
}

#[test]
fn l7_fields_are_warnings_not_errors() {
    let text = variant(
        "ports: [\"8080\"]",
        "ports: [\"8080\"]\n          methods: [GET]",
    );
    let cfg = config::parse(&text).expect("accepted");
    let w = cfg.warnings().join("\n");
    assert!(
        w.contains("policies[1] AuthorizationPolicy demo/allow-client"),
        "{w}"
    );
    assert!(
        w.contains("spec.rules[0] uses HTTP attributes (methods)"),
        "{w}"
    );
    assert!(w.contains("never matches"), "{w}");
}

#[test]
fn policy_without_namespace_defaults_with_warning() {
    let text = variant(
        "metadata: {name: allow-client, namespace: demo}",
        "metadata: {name: allow-client}",
    );
    let cfg = config::parse(&text).expect("accepted");
    let w = cfg.warnings().join("\n");
    assert!(w.contains("metadata.namespace is not set"), "{w}");
}

#[test]
fn seed_policies_parse() {
    let dir = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/istio/"
    ));
    for f in [
        "09-000-peerauthentication-default.yaml",
        "10-000-peerauthentication-default.yaml",
        "11-000-authorizationpolicy-authorization-policy.yaml",
        "23-001-peerauthentication-default.yaml",
        "24-001-authorizationpolicy-productpage-viewer.yaml",
        "35-002-peerauthentication-default.yaml",
        "36-002-authorizationpolicy-httpbin-policy.yaml",
        "45-003-peerauthentication-mtls-configuration.yaml",
        "46-003-authorizationpolicy-myapp-authz.yaml",
    ] {
        let text = std::fs::read_to_string(dir.join(f)).expect(f);
        let policies = config::parse_policies(&text).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(!policies.is_empty(), "{f}");
    }
}

#[test]
fn load_resolves_relative_certificate_paths() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.yaml");
    std::fs::write(&path, BASE).unwrap();
    let state = config::load_state(&path).unwrap();
    let certs = state.certificates().unwrap();
    assert_eq!(certs.roots, dir.path().join("certs/root-cert.pem"));
    assert_eq!(
        certs.identities[0].cert_chain,
        dir.path().join("certs/client.pem")
    );
    assert_eq!(certs.identities[0].key, Path::new("/abs/client-key.pem"));
    let e = config::load(dir.path().join("missing.yaml")).unwrap_err();
    assert!(e.to_string().contains("missing.yaml"), "{e}");
}

// ---------------------------------------------------------------- watcher --

async fn wait_for(what: &str, deadline: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn watcher_swaps_in_good_files_and_keeps_state_on_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.yaml");
    std::fs::write(&path, BASE).unwrap();
    let watcher = ConfigWatcher::start(&path).expect("initial load");
    let mut rx = watcher.subscribe();
    assert_eq!(watcher.state().workloads().len(), 2);
    assert_eq!(watcher.last_error(), None);

    // A good change: a third workload. Must be in force within one second.
    let third = "- name: server-2\n  namespace: demo\n  serviceAccount: server\n  node: node-b\n  ip: 10.10.2.3\n  labels: {app: server}\nservices:";
    let good = variant("services:", third);
    let t0 = Instant::now();
    std::fs::write(&path, &good).unwrap();
    tokio::time::timeout(Duration::from_secs(1), rx.changed())
        .await
        .expect("new state within 1 s")
        .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(1));
    let state = rx.borrow_and_update().clone();
    assert_eq!(state.workloads().len(), 3);
    let ip: IpAddr = "10.10.2.3".parse().unwrap();
    assert_eq!(state.workload_by_ip(ip).unwrap().name, "server-2");

    // A bad change: error surfaced, old state kept.
    let bad = good.replacen("ip: 10.10.2.3", "ip: 10.10.2.300", 1);
    std::fs::write(&path, &bad).unwrap();
    wait_for("error", Duration::from_secs(1), || {
        watcher.last_error().is_some()
    })
    .await;
    let err = watcher.last_error().unwrap();
    assert!(err.contains("workloads[2] (demo/server-2)"), "{err}");
    assert!(
        err.contains("\"10.10.2.300\" is not an IP address"),
        "{err}"
    );
    assert!(
        !rx.has_changed().unwrap(),
        "a bad file must not publish a state"
    );
    assert_eq!(watcher.state().workloads().len(), 3);
    let vip: SocketAddr = "10.96.0.10:80".parse().unwrap();
    assert!(watcher.state().resolve(vip).is_some());

    // Deleting the file: error, state kept.
    std::fs::remove_file(&path).unwrap();
    wait_for("io error", Duration::from_secs(1), || {
        watcher
            .last_error()
            .is_some_and(|e| e.contains("cannot read"))
    })
    .await;
    assert_eq!(watcher.state().workloads().len(), 3);

    // Fixed again: new state, error cleared.
    std::fs::write(&path, BASE).unwrap();
    tokio::time::timeout(Duration::from_secs(1), rx.changed())
        .await
        .expect("new state within 1 s")
        .unwrap();
    assert_eq!(rx.borrow_and_update().workloads().len(), 2);
    wait_for("error cleared", Duration::from_secs(1), || {
        watcher.last_error().is_none()
    })
    .await;
}

#[tokio::test]
async fn watcher_refuses_a_bad_initial_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.yaml");
    std::fs::write(&path, "workloads: 3\n").unwrap();
    let e = ConfigWatcher::start(&path).err().expect("must fail");
    assert!(e.to_string().contains("workloads"), "{e}");
}

#[tokio::test]
async fn spawned_watcher_keeps_running_without_a_handle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.yaml");
    std::fs::write(&path, BASE).unwrap();
    let (mut state_rx, errors_rx) = ConfigWatcher::spawn(&path).expect("initial load");
    assert_eq!(state_rx.borrow().workloads().len(), 2);
    std::fs::write(&path, variant("ip: 10.10.2.2", "ip: 10.10.2.9")).unwrap();
    tokio::time::timeout(Duration::from_secs(1), state_rx.changed())
        .await
        .expect("new state within 1 s")
        .unwrap();
    let ip: IpAddr = "10.10.2.9".parse().unwrap();
    assert!(state_rx.borrow().workload_by_ip(ip).is_some());
    assert_eq!(*errors_rx.borrow(), None);
}
