//! The file as mesh-proto messages (`mesh_proto::ambit::v1`), the input of
//! the builder ([`crate::build`]). What the messages cannot carry (a
//! negative port, an empty optional string, ...) is checked beforehand by
//! `config::file_check`.

use std::collections::BTreeMap;

use mesh_proto::ambit::v1 as pb;

use super::types::{LocalConfig, NamespaceSpec, Policy, ServiceSpec, WorkloadSpec};
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
            .map(|p| {
                pb::ServicePort::from_spec(
                    p.name.as_deref(),
                    p.port,
                    p.target_port,
                    p.protocol.as_deref(),
                )
            })
            .collect(),
        selector: labels(&s.selector),
        labels: labels(&s.labels),
    }
}

/// A policy as the controller would send it ([`mesh_policy::to_proto`]).
pub fn policy_to_message(p: &Policy) -> PolicyMessage {
    match p {
        Policy::PeerAuthentication(pa) => {
            PolicyMessage::PeerAuthentication(mesh_policy::to_proto::peer_authentication(pa))
        }
        Policy::AuthorizationPolicy(ap) => {
            PolicyMessage::Authorization(mesh_policy::to_proto::authorization(ap))
        }
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
