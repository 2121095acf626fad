//! The controller's resources: protobuf bytes decoded as the mesh-proto
//! messages the node subscribes to, then built into the node's state.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use mesh_model::build::{build, PolicyMessage, Resources};
use mesh_model::rbac::{authorize, peer_authentication_mode, ConnectionInfo};
use mesh_model::state::ProxyState;
use mesh_proto::ambit::v1 as pb;
use prost::Message;

use crate::Reached;

/// One fuzz input: every resource type the node receives (`type_urls::ALL`),
/// each resource a message of its own, as in a `DeltaDiscoveryResponse`'s
/// `Any`. A protobuf of its own so that the fuzzer mutates the messages'
/// real encoding.
#[derive(Clone, PartialEq, Message)]
pub struct XdsInput {
    #[prost(message, repeated, tag = "1")]
    pub mesh_config: Vec<pb::MeshConfig>,
    #[prost(message, repeated, tag = "2")]
    pub namespaces: Vec<pb::Namespace>,
    #[prost(message, repeated, tag = "3")]
    pub workloads: Vec<pb::Workload>,
    #[prost(message, repeated, tag = "4")]
    pub services: Vec<pb::Service>,
    #[prost(message, repeated, tag = "5")]
    pub peer_authentications: Vec<pb::PeerAuthentication>,
    #[prost(message, repeated, tag = "6")]
    pub authorizations: Vec<pb::Authorization>,
}

impl XdsInput {
    /// The messages of `resources` (a seed: the file mode's messages of a
    /// real config file).
    pub fn from_resources(r: &Resources) -> XdsInput {
        let mut input = XdsInput {
            mesh_config: vec![pb::MeshConfig {
                trust_domain: r.trust_domain.clone(),
                root_namespace: r.root_namespace.clone(),
                cluster_domain: r.cluster_domain.clone(),
            }],
            namespaces: r.namespaces.clone(),
            workloads: r.workloads.clone(),
            services: r.services.clone(),
            ..Default::default()
        };
        for p in &r.policies {
            match p {
                PolicyMessage::PeerAuthentication(m) => input.peer_authentications.push(m.clone()),
                PolicyMessage::Authorization(m) => input.authorizations.push(m.clone()),
            }
        }
        input
    }

    /// The builder's input, as mesh-xds's client makes it from what it
    /// holds (`Held::resources` in mesh-xds/src/client.rs): the first
    /// MeshConfig's non-empty fields over the defaults, policies
    /// PeerAuthentication first, and an unlabelled namespace for each one
    /// referenced but not received.
    pub fn resources(self) -> Resources {
        let mut input = Resources::default();
        if let Some(mesh) = self.mesh_config.into_iter().next() {
            input.apply_mesh_config(mesh);
        }
        // mesh-xds holds resources by name: the last one of a name wins.
        let namespaces: BTreeMap<String, pb::Namespace> = self
            .namespaces
            .into_iter()
            .map(|n| (n.name.clone(), n))
            .collect();
        input.workloads = self.workloads;
        input.services = self.services;
        input.policies.extend(
            self.peer_authentications
                .into_iter()
                .map(PolicyMessage::PeerAuthentication),
        );
        input.policies.extend(
            self.authorizations
                .into_iter()
                .map(PolicyMessage::Authorization),
        );
        input.set_namespaces(namespaces);
        input
    }
}

/// Decodes `data` as the node's resources and builds its state; a state
/// that builds is then queried as the node queries it for each connection.
pub fn xds_resources(data: &[u8]) -> Reached {
    let Ok(input) = XdsInput::decode(data) else {
        return Reached::Undecoded;
    };
    let Ok(state) = build(&input.resources()) else {
        return Reached::Refused;
    };
    use_state(&state);
    Reached::Accepted
}

/// Workloads and services looked at per input: enough for every pair a
/// small input can make, bounded for the large ones.
const SAMPLE: usize = 8;

/// What the node asks of a state: where a destination goes, which mTLS
/// mode a port requires, whether a peer may connect.
fn use_state(state: &ProxyState) {
    let mut ports: Vec<u16> = vec![0, 80, 8080, 15008];
    for service in state.services().iter().take(SAMPLE) {
        for port in &service.ports {
            ports.push(port.port);
            ports.push(port.target_port);
        }
        for ip in &service.addresses {
            for port in &service.ports {
                let _ = state.resolve(SocketAddr::new(*ip, port.port));
            }
        }
        let _ = state.waypoint_for(service);
    }
    ports.truncate(4 * SAMPLE);
    let workloads: Vec<_> = state.workloads().iter().take(SAMPLE).collect();
    for dst in &workloads {
        let _ = state.is_ambient(dst);
        for &port in &ports {
            let _ = peer_authentication_mode(state, dst, port);
            let _ = state.resolve(SocketAddr::new(dst.ip, port));
            let plaintext = ConnectionInfo {
                src_identity: None,
                src_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                dst_workload: dst,
                dst_port: port,
            };
            let _ = authorize(state, &plaintext);
            for src in &workloads {
                let conn = ConnectionInfo {
                    src_identity: Some(state.identity_of(src)),
                    src_ip: src.ip,
                    dst_workload: dst,
                    dst_port: port,
                };
                let _ = authorize(state, &conn);
            }
        }
    }
}
