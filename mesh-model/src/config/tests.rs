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
