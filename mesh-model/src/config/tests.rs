use super::*;

const TEXT: &str = r#"
namespaces: [{name: demo, labels: {istio.io/dataplane-mode: ambient}}]
workloads:
- {name: s, namespace: demo, node: n, ip: 10.0.0.1, labels: {app: s}}
services:
- {name: s, namespace: demo, addresses: [10.96.0.1], ports: [{port: 80, targetPort: 8080}], selector: {app: s}}
policies:
- apiVersion: security.istio.io/v1
  kind: PeerAuthentication
  metadata: {name: s, namespace: demo}
  spec:
    selector: {matchLabels: {app: s}}
    portLevelMtls: {8080: {mode: STRICT}}
- apiVersion: security.istio.io/v1beta1
  kind: AuthorizationPolicy
  metadata: {name: a, namespace: demo, uid: 1234, resourceVersion: "7"}
  spec:
    action: DENY
    rules:
    - from: [{source: {notIpBlocks: [10.0.0.0/8]}}]
      to: [{operation: {ports: [80, "8080"]}}]
      when: [{key: "request.headers[x-debug]", values: ["1"]}]
"#;

#[test]
fn serializes_back_to_an_equivalent_file() {
    let cfg = parse(TEXT).unwrap();
    assert_eq!(cfg.warnings().len(), 1, "{:?}", cfg.warnings());
    let yaml = serde_yaml::to_string(&cfg).unwrap();
    let again = parse(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    // Server-populated metadata (uid, resourceVersion) is accepted, not kept.
    let mut expected = cfg.clone();
    if let Some(Policy::AuthorizationPolicy(ap)) = expected.policies.get_mut(1) {
        ap.metadata.uid = None;
        ap.metadata.resource_version = None;
    }
    assert_eq!(expected, again);
    // The plain serde path (no validation) reads the same file.
    let raw: LocalConfig = serde_yaml::from_str(TEXT).unwrap();
    assert_eq!(raw.policies, cfg.policies);
}

#[test]
fn field_error_display() {
    let e = FieldError {
        entry: "workloads[2] (demo/server-1)".into(),
        field: "ip".into(),
        reason: "\"10.0.0.300\" is not an IP address".into(),
    };
    assert_eq!(
        e.to_string(),
        "workloads[2] (demo/server-1): field ip: \"10.0.0.300\" is not an IP address"
    );
    let e = ConfigError::Invalid(vec![e]);
    assert!(e.to_string().starts_with("invalid config: workloads[2]"));
}

/// The file's policies become messages carrying every field the builder
/// reads (this was the round trip through `*_from_proto`).
#[test]
fn policies_become_messages() {
    use mesh_proto::ambit::v1 as pb;
    let text = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-client, namespace: demo}
spec:
  selector: {matchLabels: {app: server}}
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/demo/sa/client]}}]
    to: [{operation: {ports: ["8080"]}}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: demo}
spec:
  selector: {matchLabels: {app: server}}
  mtls: {mode: STRICT}
  portLevelMtls: {9090: {mode: PERMISSIVE}, "9091": {mode: DISABLE}}
"#;
    let policies = parse_policies(text).expect("valid");
    let messages: Vec<_> = policies.iter().map(to_proto::policy_to_message).collect();
    let crate::build::PolicyMessage::Authorization(a) = &messages[0] else {
        panic!("{messages:?}")
    };
    assert_eq!(a.action, pb::Action::Allow as i32);
    assert!(a.has_rules && a.rules[0].has_from && a.rules[0].has_to && !a.rules[0].has_when);
    assert_eq!(
        a.rules[0].from[0]
            .source
            .as_ref()
            .map(|s| s.principals.clone()),
        Some(vec!["cluster.local/ns/demo/sa/client".to_string()])
    );
    assert_eq!(
        a.rules[0].to[0].operation.as_ref().map(|o| o.ports.clone()),
        Some(vec!["8080".to_string()])
    );
    let crate::build::PolicyMessage::PeerAuthentication(pa) = &messages[1] else {
        panic!("{messages:?}")
    };
    assert_eq!(pa.mode, Some(pb::MtlsMode::Strict as i32));
    assert_eq!(
        pa.port_level_mtls,
        [
            (9090, pb::MtlsMode::Permissive as i32),
            (9091, pb::MtlsMode::Disable as i32)
        ]
        .into()
    );

    // Port-level modes need a selector: refused as the controller refuses
    // it (mesh-api), naming the policy in the stream.
    let e =
        parse_policies(&text.replace("  selector: {matchLabels: {app: server}}\n  mtls", "  mtls"))
            .expect_err("port-level modes need a selector");
    assert_eq!(e.problems().len(), 1, "{e}");
    assert_eq!(
        e.problems()[0].entry,
        "documents[1] PeerAuthentication demo/strict"
    );
    assert_eq!(e.problems()[0].field, "spec.selector");
}

#[test]
fn service_labels_reach_the_state() {
    let text = r#"
namespaces: [{name: demo}]
services:
- name: reviews
  namespace: demo
  addresses: [10.96.0.20]
  ports: [{name: http, port: 9080, targetPort: 9080}]
  selector: {app: reviews}
  labels: {istio.io/use-waypoint: waypoint}
- {name: plain, namespace: demo, addresses: [10.96.0.21], ports: [{port: 80}]}
"#;
    let cfg = parse(text).unwrap_or_else(|e| panic!("{e}"));
    let msg = to_proto::service_to_proto(&cfg.services[0]);
    assert_eq!(
        msg.labels.get("istio.io/use-waypoint").map(String::as_str),
        Some("waypoint")
    );
    assert!(to_proto::service_to_proto(&cfg.services[1])
        .labels
        .is_empty());
    let state = parse_state(text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        state.services()[0]
            .labels
            .get("istio.io/use-waypoint")
            .map(String::as_str),
        Some("waypoint")
    );
    assert!(state.services()[1].labels.is_empty());
}

const ONE_SERVICE: &str = r#"
namespaces: [{name: demo}]
workloads:
- {name: s, namespace: demo, node: n, ip: 10.0.0.1, labels: {app: s}}
services:
- {name: s, namespace: demo, addresses: [10.96.0.1], ports: [{port: 80, targetPort: 8080}], selector: {app: s}}
"#;

fn problems_of(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(_) => panic!("expected problems:\n{text}"),
        Err(e) => e.problems().iter().map(ToString::to_string).collect(),
    }
}

/// Values the messages cannot carry keep the file's own message, in file
/// order among the builder's.
#[test]
fn what_proto_cannot_carry_is_checked_on_the_file() {
    let text = ONE_SERVICE
        .replace("port: 80,", "port: -80,")
        .replace("targetPort: 8080", "targetPort: 0")
        .replace("ip: 10.0.0.1", "ip: nope");
    assert_eq!(
        problems_of(&text),
        [
            "workloads[0] (demo/s): field ip: \"nope\" is not an IP address",
            "services[0] (demo/s): field ports[0].port: -80 is out of range (1-65535)",
            "services[0] (demo/s): field ports[0].targetPort: 0 is out of range (1-65535)",
        ]
    );
    let text = ONE_SERVICE
        .replace(
            "targetPort: 8080",
            "targetPort: 8080, name: \"\", protocol: \"\"",
        )
        .replace("node: n,", "node: n, serviceAccount: \"\", netns: \"\",");
    assert_eq!(
        problems_of(&text),
        [
            "workloads[0] (demo/s): field serviceAccount: \"\" is not a valid name (lower-case letters, digits and '-', starting and ending with a letter or digit, '.' between parts)",
            "workloads[0] (demo/s): field netns: \"\" must be an absolute path",
            "services[0] (demo/s): field ports[0].name: \"\" is not a valid name (at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit)",
            "services[0] (demo/s): field ports[0].protocol: \"\" is not one of TCP, UDP, SCTP",
        ]
    );
}

#[test]
fn policy_fields_proto_cannot_carry_are_refused_by_mesh_api() {
    let text = format!(
        "{ONE_SERVICE}policies:
- apiVersion: security.istio.io/v1
  kind: PeerAuthentication
  metadata: {{name: p, namespace: demo}}
  spec:
    selector: {{matchLabels: {{app: s}}}}
    portLevelMtls: {{http: {{mode: STRICT}}, -1: {{mode: STRICT}}, 8080: {{mode: STRICT}}}}
- apiVersion: security.istio.io/v1
  kind: AuthorizationPolicy
  metadata: {{name: a}}
  spec:
    targetRef: {{kind: Gateway, name: g}}
    targetRefs: [{{kind: Gateway, name: h}}]
"
    );
    assert_eq!(
        problems_of(&text),
        [
            "policies[0] PeerAuthentication demo/p: field spec.portLevelMtls.-1: \"-1\" is not a port number (1-65535)",
            "policies[0] PeerAuthentication demo/p: field spec.portLevelMtls.http: \"http\" is not a port number (1-65535)",
            "policies[1] AuthorizationPolicy default/a: field spec: set only one of targetRef, targetRefs",
        ]
    );
    // Without metadata.namespace: "default", with a warning first.
    let text = text
        .replace(
            "portLevelMtls: {http: {mode: STRICT}, -1: {mode: STRICT}, 8080: {mode: STRICT}}",
            "portLevelMtls: {8080: {mode: STRICT}}",
        )
        .replace("    targetRef: {kind: Gateway, name: g}\n", "");
    let cfg = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        cfg.warnings(),
        [
            "policies[1] AuthorizationPolicy default/a: metadata.namespace is not set: using \"default\", as kubectl would",
            "policies[1] AuthorizationPolicy default/a: namespace \"default\" is not listed under namespaces: this policy applies to no workload",
            "policies[1] AuthorizationPolicy default/a: targets a waypoint or gateway (targetRef/targetRefs): not enforced by the node proxy",
        ]
    );
}
