//! Node policies as the mesh-proto messages the nodes receive. The
//! translation assumes a [`Policy`] that passed [`crate::from_reading`].

use mesh_api::security::{Action, AuthorizationPolicySpec, MtlsMode, PeerAuthenticationSpec, Rule};
use mesh_api::Object;
use mesh_proto::ambit::v1 as pb;
use mesh_proto::type_urls;

use crate::Policy;

fn mode(m: Option<MtlsMode>) -> pb::MtlsMode {
    match m {
        None | Some(MtlsMode::Unset) => pb::MtlsMode::Unset,
        Some(MtlsMode::Disable) => pb::MtlsMode::Disable,
        Some(MtlsMode::Permissive) => pb::MtlsMode::Permissive,
        Some(MtlsMode::Strict) => pb::MtlsMode::Strict,
    }
}

fn selector(s: &Option<mesh_api::meta::MatchLabelsSelector>) -> Option<pb::WorkloadSelector> {
    s.as_ref().map(|s| pb::WorkloadSelector {
        match_labels: s.match_labels.clone(),
    })
}

pub fn peer_authentication(p: &Object<PeerAuthenticationSpec>) -> pb::PeerAuthentication {
    pb::PeerAuthentication {
        name: p.name().unwrap_or_default().to_string(),
        namespace: p.namespace().to_string(),
        api_version: p.api_version.clone(),
        selector: selector(&p.spec.selector),
        mode: p.spec.mtls.as_ref().map(|m| mode(m.mode) as i32),
        // Validated: every key is a port number.
        port_level_mtls: p
            .spec
            .port_level_mtls
            .iter()
            .filter_map(|(k, v)| Some((k.0.parse().ok()?, mode(v.mode) as i32)))
            .collect(),
    }
}

fn action(a: Action) -> pb::Action {
    match a {
        Action::Allow => pb::Action::Allow,
        Action::Deny => pb::Action::Deny,
        Action::Audit => pb::Action::Audit,
        Action::Custom => pb::Action::Custom,
    }
}

fn rule(r: &Rule) -> pb::Rule {
    let texts = |v: &[mesh_api::security::PortKey]| v.iter().map(|p| p.0.clone()).collect();
    pb::Rule {
        // Validated: a `from` or `to` written is not empty, so "written"
        // and "not empty" are the same.
        has_from: !r.from.is_empty(),
        from: r
            .from
            .iter()
            .map(|f| pb::From {
                source: f.source.as_ref().map(|s| pb::Source {
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
                }),
            })
            .collect(),
        has_to: !r.to.is_empty(),
        to: r
            .to
            .iter()
            .map(|t| pb::To {
                operation: t.operation.as_ref().map(|o| pb::Operation {
                    hosts: o.hosts.clone(),
                    not_hosts: o.not_hosts.clone(),
                    ports: texts(&o.ports),
                    not_ports: texts(&o.not_ports),
                    methods: o.methods.clone(),
                    not_methods: o.not_methods.clone(),
                    paths: o.paths.clone(),
                    not_paths: o.not_paths.clone(),
                }),
            })
            .collect(),
        has_when: !r.when.is_empty(),
        when: r
            .when
            .iter()
            .map(|c| pb::Condition {
                key: c.key.clone().unwrap_or_default(),
                values: texts(&c.values),
                not_values: texts(&c.not_values),
            })
            .collect(),
    }
}

pub fn authorization(p: &Object<AuthorizationPolicySpec>) -> pb::Authorization {
    let s = &p.spec;
    pb::Authorization {
        name: p.name().unwrap_or_default().to_string(),
        namespace: p.namespace().to_string(),
        api_version: p.api_version.clone(),
        selector: selector(&s.selector),
        target_refs: s
            .target_ref
            .iter()
            .chain(s.target_refs.iter())
            .map(|t| pb::TargetRef {
                group: t.group.clone().unwrap_or_default(),
                kind: t.kind.clone().unwrap_or_default(),
                name: t.name.clone().unwrap_or_default(),
                namespace: t.namespace.clone().unwrap_or_default(),
            })
            .collect(),
        action: action(s.action()) as i32,
        has_rules: s.rules.is_some(),
        rules: s.rules.iter().flatten().map(rule).collect(),
        provider_json: s
            .provider
            .as_ref()
            .and_then(|v| serde_json::to_string(v).ok())
            .unwrap_or_default(),
    }
}

/// Either kind of policy, as a resource (type URL, message bytes).
pub fn policy(p: &Policy) -> prost_types::Any {
    match p {
        Policy::PeerAuthentication(pa) => {
            mesh_proto::to_any(type_urls::PEER_AUTHENTICATION, &peer_authentication(pa))
        }
        Policy::AuthorizationPolicy(ap) => {
            mesh_proto::to_any(type_urls::AUTHORIZATION, &authorization(ap))
        }
    }
}
