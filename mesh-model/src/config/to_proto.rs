//! The file as mesh-proto messages (`mesh_proto::ambit::v1`), the input of
//! the builder ([`crate::build`]). What the messages cannot carry (a
//! negative port, an empty optional string, ...) is checked beforehand by
//! `config::file_check`.

use std::collections::BTreeMap;

use mesh_proto::ambit::v1 as pb;

use super::types::{
    ActionSpec, AuthorizationPolicy, LocalConfig, MtlsModeSpec, NamespaceSpec, OperationSpec,
    PeerAuthentication, Policy, PolicyTargetReference, PortKey, RuleSpec, ServiceSpec, SourceSpec,
    WorkloadSelector, WorkloadSpec,
};
use crate::build::{PolicyMessage, Resources};

// mesh-proto generates `BTreeMap`s for proto maps: the encoding is
// deterministic, so resource versions (hashes of the bytes) are stable.
fn labels(m: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    m.clone()
}

pub fn namespace_to_proto(n: &NamespaceSpec) -> pb::Namespace {
    pb::Namespace {
        name: n.name.clone(),
        labels: labels(&n.labels),
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

fn selector_to_proto(s: &Option<WorkloadSelector>) -> Option<pb::WorkloadSelector> {
    s.as_ref().map(|s| pb::WorkloadSelector {
        match_labels: labels(&s.match_labels),
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
                    PortKey::Text(s) => s.trim().parse().ok()?,
                };
                Some((port, mode_to_proto(v.mode) as i32))
            })
            .collect(),
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

fn target_ref_to_proto(t: &PolicyTargetReference) -> pb::TargetRef {
    pb::TargetRef {
        group: t.group.clone().unwrap_or_default(),
        kind: t.kind.clone(),
        name: t.name.clone(),
        namespace: t.namespace.clone().unwrap_or_default(),
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
        // Only its presence matters (CUSTOM is refused): a provider that
        // JSON cannot render (a YAML map with non-string keys) is `null`.
        provider_json: s
            .provider
            .as_ref()
            .map(|v| serde_json::to_string(v).unwrap_or_else(|_| "null".into()))
            .unwrap_or_default(),
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

pub fn policy_to_message(p: &Policy) -> PolicyMessage {
    match p {
        Policy::PeerAuthentication(pa) => {
            PolicyMessage::PeerAuthentication(peer_authentication_to_proto(pa))
        }
        Policy::AuthorizationPolicy(ap) => PolicyMessage::Authorization(authorization_to_proto(ap)),
    }
}

/// The whole file as the builder's input (netns included: the file is this
/// node's own).
pub fn resources(cfg: &LocalConfig) -> Resources {
    Resources {
        trust_domain: cfg.trust_domain.clone(),
        root_namespace: cfg.root_namespace.clone(),
        cluster_domain: cfg.cluster_domain.clone(),
        certificates: cfg.certificates.clone(),
        namespaces: cfg.namespaces.iter().map(namespace_to_proto).collect(),
        workloads: cfg
            .workloads
            .iter()
            .map(|w| workload_to_proto(w, &cfg.trust_domain, true))
            .collect(),
        services: cfg.services.iter().map(service_to_proto).collect(),
        policies: cfg.policies.iter().map(policy_to_message).collect(),
    }
}
