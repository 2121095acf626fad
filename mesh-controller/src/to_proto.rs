//! The controller's cluster view (pods, Services) as the mesh-proto
//! messages the nodes receive; policies are [`mesh_policy::to_proto`]'s.

use mesh_proto::ambit::v1 as pb;

use crate::source::{Pod, Service};

/// `include_netns`: only the pod's own node learns its netns path. A pod
/// without a node or an IP is not sent (see translation); here they are
/// empty.
pub fn workload(p: &Pod, trust_domain: &str, include_netns: bool) -> pb::Workload {
    pb::Workload {
        name: p.name.clone(),
        namespace: p.namespace.clone(),
        service_account: p.service_account.clone(),
        node: p.node.clone().unwrap_or_default(),
        ip: p.ip.clone().unwrap_or_default(),
        netns: if include_netns {
            p.netns.clone().unwrap_or_default()
        } else {
            String::new()
        },
        labels: p.labels.clone(),
        trust_domain: trust_domain.to_string(),
    }
}

pub fn service(s: &Service) -> pb::Service {
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
        selector: s.selector.clone(),
        labels: s.labels.clone(),
    }
}
