use std::collections::BTreeMap;
use std::net::SocketAddr;

use mesh_authz::{Action, MtlsMode};
use mesh_proto::ambit::v1 as pb;

use super::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn workload(name: &str, ip: &str, app: &str) -> pb::Workload {
    pb::Workload {
        name: name.into(),
        namespace: "demo".into(),
        service_account: String::new(),
        node: "node-a".into(),
        ip: ip.into(),
        netns: String::new(),
        labels: labels(&[("app", app)]),
        trust_domain: "cluster.local".into(),
    }
}

fn service(name: &str, vip: &str, port: u32, target_port: u32) -> pb::Service {
    pb::Service {
        name: name.into(),
        namespace: "demo".into(),
        addresses: vec![vip.into()],
        ports: vec![pb::ServicePort {
            name: "http".into(),
            port,
            target_port,
            protocol: String::new(),
        }],
        selector: labels(&[("app", "server")]),
        labels: BTreeMap::new(),
    }
}

fn authz(name: &str, action: i32) -> pb::Authorization {
    pb::Authorization {
        name: name.into(),
        namespace: "demo".into(),
        api_version: "security.istio.io/v1".into(),
        selector: Some(pb::WorkloadSelector {
            match_labels: labels(&[("app", "server")]),
        }),
        action,
        has_rules: true,
        rules: vec![pb::Rule {
            has_from: true,
            from: vec![pb::From {
                source: Some(pb::Source {
                    principals: vec!["cluster.local/ns/demo/sa/client".into()],
                    ..Default::default()
                }),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn peer_authn(name: &str, mode: Option<i32>) -> pb::PeerAuthentication {
    pb::PeerAuthentication {
        name: name.into(),
        namespace: "demo".into(),
        api_version: "security.istio.io/v1".into(),
        selector: None,
        mode,
        port_level_mtls: BTreeMap::new(),
    }
}

fn base() -> Resources {
    Resources {
        namespaces: vec![pb::Namespace {
            name: "demo".into(),
            labels: labels(&[("istio.io/dataplane-mode", "ambient")]),
        }],
        workloads: vec![
            workload("client", "10.0.0.1", "client"),
            workload("server", "10.0.0.2", "server"),
        ],
        services: vec![service("server", "10.96.0.1", 80, 8080)],
        policies: vec![
            PolicyMessage::PeerAuthentication(peer_authn(
                "strict",
                Some(pb::MtlsMode::Strict as i32),
            )),
            PolicyMessage::Authorization(authz("allow", pb::Action::Allow as i32)),
        ],
        ..Default::default()
    }
}

fn problems(input: &Resources) -> Vec<String> {
    match build(input) {
        Ok(_) => panic!("expected problems"),
        Err(e) => e.problems().iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn messages_build_a_state() {
    let state = build(&base()).unwrap_or_else(|e| panic!("{e}"));
    assert!(state.warnings().is_empty(), "{:?}", state.warnings());
    assert_eq!(state.workloads().len(), 2);
    assert_eq!(state.workloads()[0].service_account, "default");
    assert_eq!(state.workloads()[0].netns, None);
    let vip: SocketAddr = "10.96.0.1:80".parse().unwrap();
    let up = state.resolve(vip).expect("resolves");
    assert_eq!(up.target.port(), 8080);
    assert_eq!(
        state.services()[0].hostname,
        "server.demo.svc.cluster.local"
    );
    assert_eq!(state.peer_authentications()[0].mode, Some(MtlsMode::Strict));
    assert_eq!(state.authorization_policies()[0].action, Action::Allow);
}

#[test]
fn target_port_zero_is_the_service_port() {
    let mut input = base();
    input.services[0].ports[0].target_port = 0;
    let state = build(&input).unwrap_or_else(|e| panic!("{e}"));
    let up = state
        .resolve("10.96.0.1:80".parse().unwrap())
        .expect("resolves");
    assert_eq!(up.target.port(), 80);
}

#[test]
fn port_out_of_range_names_service_and_field() {
    let mut input = base();
    input.services[0].ports[0].port = 0;
    input.services[0].ports[0].target_port = 70000;
    let p = problems(&input);
    assert_eq!(
        p,
        [
            "services[0] (demo/server): field ports[0].port: 0 is out of range (1-65535)",
            "services[0] (demo/server): field ports[0].targetPort: 70000 is out of range (1-65535)",
        ]
    );
}

/// Decoding with `unwrap_or(Action::Allow)` would turn an action this
/// build does not know into ALLOW: it must be refused instead.
#[test]
fn unknown_action_is_a_problem_not_allow() {
    let mut input = base();
    input.policies[1] = PolicyMessage::Authorization(authz("future", 7));
    let p = problems(&input);
    assert_eq!(
        p,
        ["policies[1] AuthorizationPolicy demo/future: field spec.action: 7 is not an action (ALLOW, DENY, AUDIT or CUSTOM)"]
    );
}

#[test]
fn unknown_mtls_mode_is_a_problem_not_unset() {
    let mut input = base();
    let mut pa = peer_authn("future", Some(9));
    pa.selector = Some(pb::WorkloadSelector {
        match_labels: labels(&[("app", "server")]),
    });
    pa.port_level_mtls.insert(8080, 12);
    input.policies[0] = PolicyMessage::PeerAuthentication(pa);
    let p = problems(&input);
    assert_eq!(
        p,
        [
            "policies[0] PeerAuthentication demo/future: field spec.mtls.mode: 9 is not an mTLS mode (UNSET, DISABLE, PERMISSIVE or STRICT)",
            "policies[0] PeerAuthentication demo/future: field spec.portLevelMtls.8080.mode: 12 is not an mTLS mode (UNSET, DISABLE, PERMISSIVE or STRICT)",
        ]
    );
}

#[test]
fn custom_is_refused_and_provider_needs_custom() {
    let mut input = base();
    let mut a = authz("ext", pb::Action::Custom as i32);
    a.provider_json = r#"{"name":"opa"}"#.into();
    input.policies.push(PolicyMessage::Authorization(a));
    let mut b = authz("prov", pb::Action::Deny as i32);
    b.provider_json = r#"{"name":"opa"}"#.into();
    input.policies.push(PolicyMessage::Authorization(b));
    let p = problems(&input).join("\n");
    assert!(
        p.contains(
            "policies[2] AuthorizationPolicy demo/ext: field spec.action: CUSTOM is not supported"
        ),
        "{p}"
    );
    assert!(
        p.contains("policies[3] AuthorizationPolicy demo/prov: field spec.provider: is only valid with action CUSTOM"),
        "{p}"
    );
}

#[test]
fn policies_are_named_by_their_place_in_one_list() {
    let mut input = base();
    input.policies.push(PolicyMessage::Authorization(authz(
        "allow",
        pb::Action::Deny as i32,
    )));
    let p = problems(&input);
    assert_eq!(
        p,
        ["policies[2] AuthorizationPolicy demo/allow: field metadata.name: duplicate AuthorizationPolicy demo/allow (also policies[1])"]
    );
}

#[test]
fn first_namespace_wide_peer_authentication_wins() {
    let mut input = base();
    input
        .policies
        .push(PolicyMessage::PeerAuthentication(peer_authn(
            "second",
            Some(pb::MtlsMode::Permissive as i32),
        )));
    let state = build(&input).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        state.warnings(),
        ["policies[2] PeerAuthentication demo/second: another namespace-wide PeerAuthentication in \"demo\" comes first (policies[0] PeerAuthentication demo/strict); this one is ignored"]
    );
}

#[test]
fn hostile_values_are_problems() {
    let mut input = base();
    input.trust_domain = String::new();
    input.workloads[0].ip = "10.0.0.2".into();
    input.workloads[1].netns = "relative/ns".into();
    input.services[0].addresses.push("10.0.0.2".into());
    input.services[0].ports[0].protocol = "QUIC".into();
    let p = problems(&input);
    assert_eq!(
        p,
        [
            "top level: field trustDomain: \"\" is not a trust domain",
            "workloads[1] (demo/server): field netns: \"relative/ns\" must be an absolute path",
            "workloads[1] (demo/server): field ip: 10.0.0.2 is already the address of workloads[0] (demo/client)",
            "services[0] (demo/server): field addresses[1]: 10.0.0.2 is already the address of workloads[0] (demo/client)",
            "services[0] (demo/server): field ports[0].protocol: \"QUIC\" is not one of TCP, UDP, SCTP",
        ]
    );
}

#[test]
fn vip_clash_and_unlisted_namespace() {
    let mut input = base();
    input.services.push(service("other", "10.96.0.1", 80, 0));
    let mut w = workload("lost", "10.0.0.9", "x");
    w.namespace = "prod".into();
    input.workloads.push(w);
    let p = problems(&input);
    assert_eq!(
        p,
        [
            "workloads[2] (prod/lost): field namespace: namespace \"prod\" is not listed under namespaces",
            "services[1] (demo/other): field ports[0].port: 10.96.0.1:80 is already used by services[0] (demo/server)",
        ]
    );
}

#[test]
fn conditions_and_l7_attributes() {
    let mut input = base();
    let mut a = authz("l7", pb::Action::Allow as i32);
    a.rules[0].has_when = true;
    a.rules[0].when = vec![
        pb::Condition {
            key: "request.headers[x-user]".into(),
            values: vec!["me".into()],
            not_values: vec![],
        },
        pb::Condition {
            key: "source.ip".into(),
            values: vec!["10.0.0.0/33".into()],
            not_values: vec![],
        },
    ];
    input.policies.push(PolicyMessage::Authorization(a));
    let p = problems(&input);
    assert_eq!(
        p,
        ["policies[2] AuthorizationPolicy demo/l7: field spec.rules[0].when[1].values[0]: \"10.0.0.0/33\" is not a CIDR block (e.g. 10.0.0.0/16)"]
    );
    if let Some(PolicyMessage::Authorization(a)) = input.policies.get_mut(2) {
        a.rules[0].when.pop();
    }
    let state = build(&input).unwrap_or_else(|e| panic!("{e}"));
    let w = state.warnings().join("\n");
    assert!(
        w.contains("policies[2] AuthorizationPolicy demo/l7: spec.rules[0] uses HTTP attributes (request.headers[x-user])"),
        "{w}"
    );
}

#[test]
fn api_version_and_names_are_checked() {
    let mut input = base();
    let mut a = authz("Bad_Name", pb::Action::Allow as i32);
    a.api_version = "security.istio.io/v2".into();
    a.namespace = String::new();
    input.policies.push(PolicyMessage::Authorization(a));
    let p = problems(&input).join("\n");
    assert!(
        p.contains("policies[2] AuthorizationPolicy /Bad_Name: field apiVersion"),
        "{p}"
    );
    assert!(
        p.contains("field metadata.name: \"Bad_Name\" is not a valid name"),
        "{p}"
    );
    assert!(
        p.contains("field metadata.namespace: \"\" is not a valid name"),
        "{p}"
    );
}
