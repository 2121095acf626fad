use super::*;
use mesh_proto::ambit::v1 as pb;

fn doc(yaml: &str) -> serde_json::Value {
    serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("{e}"))
}

fn errors(yaml: &str) -> Vec<String> {
    match parse(&doc(yaml), "policies.yaml") {
        Ok(p) => panic!("accepted: {p:?}"),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

const ALLOW: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-client, namespace: demo}
spec:
  selector: {matchLabels: {app: server}}
  rules:
  - from: [{source: {principals: [cluster.local/ns/demo/sa/client]}}]
    to: [{operation: {ports: ["8080", 9090]}}]
"#;

#[test]
fn an_allow_policy_becomes_its_message() {
    let p = parse(&doc(ALLOW), "policies.yaml").unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(p.describe(), "AuthorizationPolicy demo/allow-client");
    let Policy::AuthorizationPolicy(ap) = &p else {
        panic!("{p:?}")
    };
    let msg = to_proto::authorization(ap);
    assert_eq!(msg.action, pb::Action::Allow as i32);
    assert!(msg.has_rules);
    let rule = &msg.rules[0];
    assert!(rule.has_from && rule.has_to && !rule.has_when);
    let op = rule.to[0].operation.as_ref().expect("operation");
    assert_eq!(op.ports, ["8080", "9090"]);
    let any = to_proto::policy(&p);
    assert_eq!(any.type_url, mesh_proto::type_urls::AUTHORIZATION);
}

#[test]
fn a_written_empty_from_is_refused() {
    let e = errors(&ALLOW.replace(
        "from: [{source: {principals: [cluster.local/ns/demo/sa/client]}}]",
        "from: []",
    ));
    assert_eq!(
        e,
        ["AuthorizationPolicy demo/allow-client: field spec.rules[0].from: must not be empty (omit it to match any source)"]
    );
}

#[test]
fn custom_is_refused_by_the_node_rules() {
    let e = errors(&ALLOW.replace(
        "spec:\n",
        "spec:\n  action: CUSTOM\n  provider: {name: ext}\n",
    ));
    assert!(
        e.iter()
            .any(|m| m.contains("field spec.action: CUSTOM is not supported")),
        "{e:?}"
    );
}

#[test]
fn mesh_api_errors_come_first() {
    let e = errors(&ALLOW.replace("principals:", "principal:"));
    assert!(
        e[0].contains("field spec.rules[0].from[0].source.principal: unknown field"),
        "{e:?}"
    );
}

#[test]
fn other_kinds_are_not_node_policies() {
    let e = errors(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r, namespace: demo}\nspec: {hosts: [a]}\n",
    );
    assert_eq!(
        e,
        ["VirtualService demo/r: not a PeerAuthentication or AuthorizationPolicy"]
    );
}

#[test]
fn peer_authentication_port_modes_become_numbers() {
    let p = parse(
        &doc(
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p, namespace: demo}\nspec:\n  selector: {matchLabels: {app: server}}\n  mtls: {mode: STRICT}\n  portLevelMtls: {\"9090\": {mode: PERMISSIVE}, 9091: {}}\n",
        ),
        "p.yaml",
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    let Policy::PeerAuthentication(pa) = &p else {
        panic!("{p:?}")
    };
    let msg = to_proto::peer_authentication(pa);
    assert_eq!(msg.mode, Some(pb::MtlsMode::Strict as i32));
    assert_eq!(
        msg.port_level_mtls.get(&9090),
        Some(&(pb::MtlsMode::Permissive as i32))
    );
    assert_eq!(
        msg.port_level_mtls.get(&9091),
        Some(&(pb::MtlsMode::Unset as i32))
    );
}
