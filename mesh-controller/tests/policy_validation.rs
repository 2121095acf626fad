//! The Istio security resources the nodes enforce (PeerAuthentication,
//! AuthorizationPolicy), as the controller's folder source refuses or
//! accepts them: every refusal names the file, the resource, the field and
//! the reason. (Carried over from the node's former YAML dialect; the same
//! inputs are refused, by mesh-api or by the node's rules.)

use std::path::{Path, PathBuf};

use mesh_controller::source::folder::{parse_files, SourceError};
use mesh_controller::source::Snapshot;
use mesh_policy::to_proto;

const CLUSTER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: demo, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: client-7d9, namespace: demo, labels: {app: client}}
spec: {nodeName: node-a, serviceAccountName: client}
status: {podIP: 10.10.1.2}
---
apiVersion: v1
kind: Pod
metadata: {name: server-1, namespace: demo, labels: {app: server}}
spec: {nodeName: node-b, serviceAccountName: server}
status: {podIP: 10.10.2.2}
"#;

const POLICIES: &str = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1beta1
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

fn load(policies: &str) -> Result<Snapshot, SourceError> {
    parse_files(&[
        (PathBuf::from("cluster.yaml"), CLUSTER.to_string()),
        (PathBuf::from("policies.yaml"), policies.to_string()),
    ])
}

/// Replaces the first occurrence of `from` in POLICIES (which must exist).
fn variant(from: &str, to: &str) -> String {
    assert!(POLICIES.contains(from), "POLICIES lacks {from:?}");
    POLICIES.replacen(from, to, 1)
}

#[track_caller]
fn assert_error(policies: &str, needles: &[&str]) {
    let msg = match load(policies) {
        Ok(_) => panic!("expected an error for:\n{policies}"),
        Err(e) => e.to_string(),
    };
    assert!(msg.contains("policies.yaml: "), "{msg}");
    for n in needles {
        assert!(msg.contains(n), "error {msg:?} lacks {n:?}");
    }
}

/// An AuthorizationPolicy of `demo` with one rule.
fn rule(rule: &str) -> String {
    format!(
        "{POLICIES}---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: extra, namespace: demo}}\nspec:\n  rules:\n  - {rule}\n"
    )
}

#[test]
fn base_policies_are_valid() {
    let snap = load(POLICIES).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(snap.policies.len(), 2);
}

#[test]
fn unknown_field_deep_in_a_policy() {
    assert_error(
        &variant(
            "principals: [\"cluster.local/ns/demo/sa/client\"]",
            "principal: [\"cluster.local/ns/demo/sa/client\"]",
        ),
        &[
            "AuthorizationPolicy demo/allow-client",
            "field spec.rules[0].from[0].source.principal:",
            "unknown field; did you mean spec.rules[0].from[0].source.principals?",
        ],
    );
}

#[test]
fn unknown_metadata_field() {
    assert_error(
        &variant(
            "metadata: {name: allow-client, namespace: demo}",
            "metadata: {name: allow-client, namespace: demo, finalizers: [x]}",
        ),
        &[
            "AuthorizationPolicy demo/allow-client",
            "field metadata",
            "unknown field `finalizers`",
        ],
    );
}

#[test]
fn server_populated_metadata_and_bare_port_numbers_are_accepted() {
    let text = variant(
        "metadata: {name: allow-client, namespace: demo}",
        "metadata: {name: allow-client, namespace: demo, uid: 1234, resourceVersion: \"7\"}",
    )
    .replacen("ports: [\"8080\"]", "ports: [80, \"8080\"]", 1)
    .replacen(
        "    to:\n",
        "    when: [{key: \"request.headers[x-debug]\", values: [\"1\"]}]\n    to:\n",
        1,
    );
    let snap = load(&text).unwrap_or_else(|e| panic!("{e}"));
    let (ap, _) = &snap.policies[1];
    let mesh_controller::source::Policy::AuthorizationPolicy(ap) = ap else {
        panic!("{ap:?}");
    };
    let msg = to_proto::authorization(ap);
    let op = msg.rules[0].to[0].operation.as_ref().expect("operation");
    assert_eq!(op.ports, ["80", "8080"]);
    assert_eq!(msg.rules[0].when[0].key, "request.headers[x-debug]");
}

#[test]
fn bad_principal_names_its_index() {
    assert_error(
        &variant(
            "principals: [\"cluster.local/ns/demo/sa/client\"]",
            "principals: [\"cluster.local/ns/demo/sa/client\", \"spiffe://cluster.local/ns/demo/sa/x\"]",
        ),
        &[
            "AuthorizationPolicy demo/allow-client",
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
            "AuthorizationPolicy demo/allow-client",
            "field spec.action",
            "CUSTOM is not supported",
        ],
    );
    assert_error(
        &variant(
            "action: ALLOW",
            "action: CUSTOM\n  provider: {name: ext-authz}",
        ),
        &["field spec.action", "CUSTOM is not supported"],
    );
    assert_error(
        &variant("action: ALLOW", "action: PERMIT"),
        &["field spec.action", "PERMIT"],
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
            "PeerAuthentication istio-system/default",
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
            "PeerAuthentication istio-system/default",
            "field spec.portLevelMtls",
            "requires a workload selector",
        ],
    );
    assert_error(
        &variant("mode: STRICT", "mode: STRICKT"),
        &[
            "PeerAuthentication istio-system/default",
            "spec.mtls.mode",
            "STRICKT",
        ],
    );
}

#[test]
fn unsupported_api_version() {
    assert_error(
        &variant(
            "apiVersion: security.istio.io/v1\n",
            "apiVersion: security.istio.io/v2\n",
        ),
        &[
            "PeerAuthentication istio-system/default",
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
            "field spec.rules[0].from[0].source:",
            "an empty source is not allowed",
        ],
    );
    assert_error(
        &variant(
            "    to:\n",
            "    when:\n    - key: source.color\n      values: [blue]\n    to:\n",
        ),
        &[
            "field spec.rules[0].when[0].key",
            "\"source.color\" is not a condition key",
        ],
    );
}

/// Istio knows `source.serviceAccount`; the node does not evaluate it, so
/// the controller refuses it rather than send a rule the node refuses.
#[test]
fn conditions_the_node_cannot_evaluate_are_refused() {
    assert_error(
        &rule("when: [{key: source.serviceAccount, values: [demo/client]}]"),
        &[
            "AuthorizationPolicy demo/extra",
            "field spec.rules[0].when[0].key",
            "unknown attribute \"source.serviceAccount\"",
        ],
    );
    assert_error(
        &rule("when: [{key: \"request.headers[]\", values: [x]}]"),
        &[
            "field spec.rules[0].when[0].key",
            "unknown attribute \"request.headers[]\"",
        ],
    );
    assert_error(
        &rule("when: [{key: source.principal, values: [\"spiffe://cluster.local/ns/demo/sa/a\"]}]"),
        &[
            "field spec.rules[0].when[0].values[0]",
            "without the spiffe:// scheme",
        ],
    );
    assert_error(
        &rule("when: [{key: source.namespace, notValues: [\"a*b\"]}]"),
        &["field spec.rules[0].when[0].notValues[0]", "wildcard"],
    );
    assert_error(
        &rule("when: [{key: \"request.headers[x]\", values: [\"\"]}]"),
        &[
            "field spec.rules[0].when[0].values[0]",
            "empty value is not allowed",
        ],
    );
}

#[test]
fn wildcards_and_service_accounts_the_node_cannot_match() {
    assert_error(
        &rule("from: [{source: {namespaces: [\"de*mo\"]}}]"),
        &[
            "field spec.rules[0].from[0].source.namespaces[0]",
            "wildcard",
        ],
    );
    assert_error(
        &rule("from: [{source: {requestPrincipals: [\"a*b*\"]}}]"),
        &[
            "field spec.rules[0].from[0].source.requestPrincipals[0]",
            "wildcard",
        ],
    );
    assert_error(
        &rule("from: [{source: {serviceAccounts: [\"demo/*\"]}}]"),
        &[
            "field spec.rules[0].from[0].source.serviceAccounts[0]",
            "wildcards are not allowed in serviceAccounts",
        ],
    );
    assert_error(
        &rule("from: [{source: {notServiceAccounts: [\"Demo/Client\"]}}]"),
        &[
            "field spec.rules[0].from[0].source.notServiceAccounts[0]",
            "is not a service account",
        ],
    );
}

#[test]
fn empty_from_and_to_are_refused() {
    assert_error(
        &rule("from: []"),
        &[
            "field spec.rules[0].from:",
            "must not be empty (omit it to match any source)",
        ],
    );
    assert_error(
        &rule("to: []"),
        &[
            "field spec.rules[0].to:",
            "must not be empty (omit it to match any operation)",
        ],
    );
}

#[test]
fn bad_selector_labels() {
    assert_error(
        &variant("matchLabels: {app: server}", "matchLabels: {app: \"a b\"}"),
        &[
            "AuthorizationPolicy demo/allow-client",
            "field spec.selector.matchLabels.app",
            "\"a b\" is not a valid label value",
        ],
    );
    assert_error(
        &variant(
            "spec: {mtls: {mode: STRICT}}",
            "spec: {selector: {matchLabels: {\"bad key!\": x}}}",
        ),
        &[
            "PeerAuthentication istio-system/default",
            "\"bad key!\" is not a valid label key",
        ],
    );
}

#[test]
fn bad_names_and_duplicates() {
    assert_error(
        &variant(
            "metadata: {name: allow-client, namespace: demo}",
            "metadata: {name: Allow_Client, namespace: demo}",
        ),
        &[
            "field metadata.name",
            "\"Allow_Client\" is not a valid name",
        ],
    );
    assert_error(
        &variant(
            "metadata: {name: allow-client, namespace: demo}",
            "metadata: {name: allow-client, namespace: Demo}",
        ),
        &["field metadata.namespace", "\"Demo\" is not a valid name"],
    );
    let twice = format!(
        "{POLICIES}---\n{}",
        POLICIES.split("---").nth(1).unwrap_or_default()
    );
    assert_error(
        &twice,
        &[
            "AuthorizationPolicy demo/allow-client",
            "field metadata.name",
            "duplicate AuthorizationPolicy demo/allow-client",
        ],
    );
}

#[test]
fn seed_policies_are_accepted() {
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
        let snap = parse_files(&[(PathBuf::from(f), text)]).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(!snap.policies.is_empty(), "{f}");
    }
}
