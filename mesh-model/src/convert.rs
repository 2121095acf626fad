//! Between the node's config model ([`crate::config`]) and the xDS resources
//! of `mesh_proto::ambit::v1`. Both directions live here so that the
//! controller (which encodes) and the node (which decodes) cannot drift.

use std::collections::BTreeMap;

use mesh_proto::ambit::v1 as pb;

use crate::config::{
    ActionSpec, AuthorizationPolicy, AuthorizationPolicySpec, ConditionSpec, FromSpec,
    MtlsModeSpec, MtlsSpec, NamespaceSpec, ObjectMeta, OperationSpec, PeerAuthentication,
    PeerAuthenticationSpec, Policy, PolicyTargetReference, PortKey, RuleSpec, ServicePortSpec,
    ServiceSpec, SourceSpec, ToSpec, WorkloadSelector, WorkloadSpec,
};

// mesh-proto generates `BTreeMap`s for proto maps: the encoding is
// deterministic, so resource versions (hashes of the bytes) are stable.
fn labels(m: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    m.clone()
}

fn btree(m: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    m.clone()
}

pub fn namespace_to_proto(n: &NamespaceSpec) -> pb::Namespace {
    pb::Namespace {
        name: n.name.clone(),
        labels: labels(&n.labels),
    }
}

pub fn namespace_from_proto(n: &pb::Namespace) -> NamespaceSpec {
    NamespaceSpec {
        name: n.name.clone(),
        labels: btree(&n.labels),
    }
}

/// `include_netns`: only the pod's own node learns its netns path.
pub fn workload_to_proto(
    w: &WorkloadSpec,
    trust_domain: &str,
    include_netns: bool,
) -> pb::Workload {
    pb::Workload {
        name: w.name.clone(),
        namespace: w.namespace.clone(),
        service_account: w
            .service_account
            .clone()
            .unwrap_or_else(|| "default".into()),
        node: w.node.clone(),
        ip: w.ip.clone(),
        netns: if include_netns {
            w.netns.clone().unwrap_or_default()
        } else {
            String::new()
        },
        labels: labels(&w.labels),
        trust_domain: trust_domain.to_string(),
    }
}

pub fn workload_from_proto(w: &pb::Workload) -> WorkloadSpec {
    WorkloadSpec {
        name: w.name.clone(),
        namespace: w.namespace.clone(),
        service_account: Some(w.service_account.clone()).filter(|s| !s.is_empty()),
        node: w.node.clone(),
        ip: w.ip.clone(),
        netns: Some(w.netns.clone()).filter(|s| !s.is_empty()),
        labels: btree(&w.labels),
    }
}

pub fn service_to_proto(s: &ServiceSpec) -> pb::Service {
    pb::Service {
        name: s.name.clone(),
        namespace: s.namespace.clone(),
        addresses: s.addresses.clone(),
        ports: s
            .ports
            .iter()
            .map(|p| pb::ServicePort {
                name: p.name.clone().unwrap_or_default(),
                port: u32::try_from(p.port).unwrap_or(0),
                target_port: p
                    .target_port
                    .and_then(|t| u32::try_from(t).ok())
                    .unwrap_or(0),
                protocol: p.protocol.clone().unwrap_or_default(),
            })
            .collect(),
        selector: labels(&s.selector),
        labels: labels(&s.labels),
    }
}

pub fn service_from_proto(s: &pb::Service) -> ServiceSpec {
    ServiceSpec {
        name: s.name.clone(),
        namespace: s.namespace.clone(),
        addresses: s.addresses.clone(),
        ports: s
            .ports
            .iter()
            .map(|p| ServicePortSpec {
                name: Some(p.name.clone()).filter(|n| !n.is_empty()),
                port: i64::from(p.port),
                target_port: (p.target_port != 0).then_some(i64::from(p.target_port)),
                protocol: Some(p.protocol.clone()).filter(|n| !n.is_empty()),
            })
            .collect(),
        selector: btree(&s.selector),
        labels: btree(&s.labels),
    }
}

fn selector_to_proto(s: &Option<WorkloadSelector>) -> Option<pb::WorkloadSelector> {
    s.as_ref().map(|s| pb::WorkloadSelector {
        match_labels: labels(&s.match_labels),
    })
}

fn selector_from_proto(s: &Option<pb::WorkloadSelector>) -> Option<WorkloadSelector> {
    s.as_ref().map(|s| WorkloadSelector {
        match_labels: btree(&s.match_labels),
    })
}

fn mode_to_proto(m: MtlsModeSpec) -> pb::MtlsMode {
    match m {
        MtlsModeSpec::Unset => pb::MtlsMode::Unset,
        MtlsModeSpec::Disable => pb::MtlsMode::Disable,
        MtlsModeSpec::Permissive => pb::MtlsMode::Permissive,
        MtlsModeSpec::Strict => pb::MtlsMode::Strict,
    }
}

fn mode_from_proto(m: i32) -> MtlsModeSpec {
    match pb::MtlsMode::try_from(m).unwrap_or(pb::MtlsMode::Unset) {
        pb::MtlsMode::Unset => MtlsModeSpec::Unset,
        pb::MtlsMode::Disable => MtlsModeSpec::Disable,
        pb::MtlsMode::Permissive => MtlsModeSpec::Permissive,
        pb::MtlsMode::Strict => MtlsModeSpec::Strict,
    }
}

fn meta(name: &str, namespace: &str) -> ObjectMeta {
    ObjectMeta {
        name: name.to_string(),
        namespace: Some(namespace.to_string()),
        ..Default::default()
    }
}

pub fn peer_authentication_to_proto(p: &PeerAuthentication) -> pb::PeerAuthentication {
    pb::PeerAuthentication {
        name: p.metadata.name.clone(),
        namespace: p
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        api_version: p.api_version.clone(),
        selector: selector_to_proto(&p.spec.selector),
        mode: p.spec.mtls.as_ref().map(|m| mode_to_proto(m.mode) as i32),
        port_level_mtls: p
            .spec
            .port_level_mtls
            .iter()
            .flatten()
            .filter_map(|(k, v)| {
                let port = match k {
                    PortKey::Number(n) => u32::try_from(*n).ok()?,
                    PortKey::Text(s) => s.parse().ok()?,
                };
                Some((port, mode_to_proto(v.mode) as i32))
            })
            .collect(),
    }
}

pub fn peer_authentication_from_proto(p: &pb::PeerAuthentication) -> PeerAuthentication {
    let port_level: BTreeMap<PortKey, MtlsSpec> = p
        .port_level_mtls
        .iter()
        .map(|(k, v)| {
            (
                PortKey::Number(i64::from(*k)),
                MtlsSpec {
                    mode: mode_from_proto(*v),
                },
            )
        })
        .collect();
    PeerAuthentication {
        api_version: p.api_version.clone(),
        kind: "PeerAuthentication".into(),
        metadata: meta(&p.name, &p.namespace),
        spec: PeerAuthenticationSpec {
            selector: selector_from_proto(&p.selector),
            mtls: p.mode.map(|m| MtlsSpec {
                mode: mode_from_proto(m),
            }),
            port_level_mtls: (!port_level.is_empty()).then_some(port_level),
        },
        status: None,
    }
}

fn action_to_proto(a: ActionSpec) -> pb::Action {
    match a {
        ActionSpec::Allow => pb::Action::Allow,
        ActionSpec::Deny => pb::Action::Deny,
        ActionSpec::Audit => pb::Action::Audit,
        ActionSpec::Custom => pb::Action::Custom,
    }
}

fn action_from_proto(a: i32) -> ActionSpec {
    match pb::Action::try_from(a).unwrap_or(pb::Action::Allow) {
        pb::Action::Allow => ActionSpec::Allow,
        pb::Action::Deny => ActionSpec::Deny,
        pb::Action::Audit => ActionSpec::Audit,
        pb::Action::Custom => ActionSpec::Custom,
    }
}

fn source_to_proto(s: &SourceSpec) -> pb::Source {
    pb::Source {
        principals: s.principals.clone(),
        not_principals: s.not_principals.clone(),
        request_principals: s.request_principals.clone(),
        not_request_principals: s.not_request_principals.clone(),
        namespaces: s.namespaces.clone(),
        not_namespaces: s.not_namespaces.clone(),
        service_accounts: s.service_accounts.clone(),
        not_service_accounts: s.not_service_accounts.clone(),
        ip_blocks: s.ip_blocks.clone(),
        not_ip_blocks: s.not_ip_blocks.clone(),
        remote_ip_blocks: s.remote_ip_blocks.clone(),
        not_remote_ip_blocks: s.not_remote_ip_blocks.clone(),
    }
}

fn source_from_proto(s: &pb::Source) -> SourceSpec {
    SourceSpec {
        principals: s.principals.clone(),
        not_principals: s.not_principals.clone(),
        request_principals: s.request_principals.clone(),
        not_request_principals: s.not_request_principals.clone(),
        namespaces: s.namespaces.clone(),
        not_namespaces: s.not_namespaces.clone(),
        service_accounts: s.service_accounts.clone(),
        not_service_accounts: s.not_service_accounts.clone(),
        ip_blocks: s.ip_blocks.clone(),
        not_ip_blocks: s.not_ip_blocks.clone(),
        remote_ip_blocks: s.remote_ip_blocks.clone(),
        not_remote_ip_blocks: s.not_remote_ip_blocks.clone(),
    }
}

fn operation_to_proto(o: &OperationSpec) -> pb::Operation {
    pb::Operation {
        hosts: o.hosts.clone(),
        not_hosts: o.not_hosts.clone(),
        ports: o.ports.clone(),
        not_ports: o.not_ports.clone(),
        methods: o.methods.clone(),
        not_methods: o.not_methods.clone(),
        paths: o.paths.clone(),
        not_paths: o.not_paths.clone(),
    }
}

fn operation_from_proto(o: &pb::Operation) -> OperationSpec {
    OperationSpec {
        hosts: o.hosts.clone(),
        not_hosts: o.not_hosts.clone(),
        ports: o.ports.clone(),
        not_ports: o.not_ports.clone(),
        methods: o.methods.clone(),
        not_methods: o.not_methods.clone(),
        paths: o.paths.clone(),
        not_paths: o.not_paths.clone(),
    }
}

fn rule_to_proto(r: &RuleSpec) -> pb::Rule {
    pb::Rule {
        has_from: r.from.is_some(),
        from: r
            .from
            .iter()
            .flatten()
            .map(|f| pb::From {
                source: f.source.as_ref().map(source_to_proto),
            })
            .collect(),
        has_to: r.to.is_some(),
        to: r
            .to
            .iter()
            .flatten()
            .map(|t| pb::To {
                operation: t.operation.as_ref().map(operation_to_proto),
            })
            .collect(),
        has_when: r.when.is_some(),
        when: r
            .when
            .iter()
            .flatten()
            .map(|c| pb::Condition {
                key: c.key.clone(),
                values: c.values.clone(),
                not_values: c.not_values.clone(),
            })
            .collect(),
    }
}

fn rule_from_proto(r: &pb::Rule) -> RuleSpec {
    RuleSpec {
        from: r.has_from.then(|| {
            r.from
                .iter()
                .map(|f| FromSpec {
                    source: f.source.as_ref().map(source_from_proto),
                })
                .collect()
        }),
        to: r.has_to.then(|| {
            r.to.iter()
                .map(|t| ToSpec {
                    operation: t.operation.as_ref().map(operation_from_proto),
                })
                .collect()
        }),
        when: r.has_when.then(|| {
            r.when
                .iter()
                .map(|c| ConditionSpec {
                    key: c.key.clone(),
                    values: c.values.clone(),
                    not_values: c.not_values.clone(),
                })
                .collect()
        }),
    }
}

fn target_ref_to_proto(t: &PolicyTargetReference) -> pb::TargetRef {
    pb::TargetRef {
        group: t.group.clone().unwrap_or_default(),
        kind: t.kind.clone(),
        name: t.name.clone(),
        namespace: t.namespace.clone().unwrap_or_default(),
    }
}

fn target_ref_from_proto(t: &pb::TargetRef) -> PolicyTargetReference {
    PolicyTargetReference {
        group: Some(t.group.clone()).filter(|s| !s.is_empty()),
        kind: t.kind.clone(),
        name: t.name.clone(),
        namespace: Some(t.namespace.clone()).filter(|s| !s.is_empty()),
    }
}

pub fn authorization_to_proto(p: &AuthorizationPolicy) -> pb::Authorization {
    let s = &p.spec;
    pb::Authorization {
        name: p.metadata.name.clone(),
        namespace: p
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        api_version: p.api_version.clone(),
        selector: selector_to_proto(&s.selector),
        target_refs: s
            .target_ref
            .iter()
            .chain(s.target_refs.iter())
            .map(target_ref_to_proto)
            .collect(),
        action: action_to_proto(s.action) as i32,
        has_rules: s.rules.is_some(),
        rules: s.rules.iter().flatten().map(rule_to_proto).collect(),
        provider_json: s
            .provider
            .as_ref()
            .and_then(|v| serde_json::to_string(v).ok())
            .unwrap_or_default(),
    }
}

pub fn authorization_from_proto(p: &pb::Authorization) -> AuthorizationPolicy {
    AuthorizationPolicy {
        api_version: p.api_version.clone(),
        kind: "AuthorizationPolicy".into(),
        metadata: meta(&p.name, &p.namespace),
        spec: AuthorizationPolicySpec {
            selector: selector_from_proto(&p.selector),
            target_ref: None,
            target_refs: p.target_refs.iter().map(target_ref_from_proto).collect(),
            action: action_from_proto(p.action),
            provider: (!p.provider_json.is_empty())
                .then(|| serde_json::from_str(&p.provider_json).ok())
                .flatten(),
            rules: p
                .has_rules
                .then(|| p.rules.iter().map(rule_from_proto).collect()),
        },
        status: None,
    }
}

/// Either kind of policy, as a resource (type URL, message bytes).
pub fn policy_to_any(p: &Policy) -> prost_types::Any {
    use mesh_proto::type_urls;
    match p {
        Policy::PeerAuthentication(pa) => mesh_proto::to_any(
            type_urls::PEER_AUTHENTICATION,
            &peer_authentication_to_proto(pa),
        ),
        Policy::AuthorizationPolicy(ap) => {
            mesh_proto::to_any(type_urls::AUTHORIZATION, &authorization_to_proto(ap))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_round_trip() {
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
  mtls: {mode: STRICT}
  portLevelMtls: {9090: {mode: PERMISSIVE}}
"#;
        let policies = crate::config::parse_policies(text).expect("valid");
        for p in policies {
            let back = match &p {
                Policy::AuthorizationPolicy(a) => Policy::AuthorizationPolicy(
                    authorization_from_proto(&authorization_to_proto(a)),
                ),
                Policy::PeerAuthentication(a) => Policy::PeerAuthentication(
                    peer_authentication_from_proto(&peer_authentication_to_proto(a)),
                ),
            };
            assert_eq!(back, p);
        }
    }

    #[test]
    fn service_labels_round_trip() {
        let cfg = crate::config::parse(
            r#"
namespaces: [{name: demo}]
services:
- name: reviews
  namespace: demo
  addresses: [10.96.0.20]
  ports: [{name: http, port: 9080, targetPort: 9080}]
  selector: {app: reviews}
  labels: {istio.io/use-waypoint: waypoint}
- {name: plain, namespace: demo, addresses: [10.96.0.21], ports: [{port: 80}]}
"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        for s in &cfg.services {
            assert_eq!(&service_from_proto(&service_to_proto(s)), s);
        }
        let msg = service_to_proto(&cfg.services[0]);
        assert_eq!(
            msg.labels.get("istio.io/use-waypoint").map(String::as_str),
            Some("waypoint")
        );
        assert!(service_to_proto(&cfg.services[1]).labels.is_empty());
    }
}
