//! Ambit's protobuf messages and gRPC services.
//!
//! * [`envoy::service::discovery::v3`]: Envoy's incremental ADS
//!   (`AggregatedDiscoveryService/DeltaAggregatedResources`) with
//!   Envoy's package names and field numbers.
//! * [`istio::v1::auth`]: Istio's `IstioCertificateService/CreateCertificate`.
//! * [`ambit::v1`]: the resources Ambit's controller serves over xDS
//!   (type URLs in [`type_urls`]).
//! * [`encoded`]: the delta ADS server with pre-encoded resources (the
//!   controller's; same wire format).
//!
//! The `.proto` files live in `proto/` and are compiled by `protox` at build
//! time, so no system `protoc` is needed.

#![allow(clippy::all, missing_docs)]

pub mod google {
    pub mod rpc {
        include!(concat!(env!("OUT_DIR"), "/google.rpc.rs"));
    }
}

pub mod envoy {
    pub mod config {
        pub mod core {
            pub mod v3 {
                include!(concat!(env!("OUT_DIR"), "/envoy.config.core.v3.rs"));
            }
        }
    }
    pub mod service {
        pub mod discovery {
            pub mod v3 {
                include!(concat!(env!("OUT_DIR"), "/envoy.service.discovery.v3.rs"));
            }
        }
    }
}

pub mod istio {
    pub mod v1 {
        pub mod auth {
            include!(concat!(env!("OUT_DIR"), "/istio.v1.auth.rs"));
        }
    }
}

pub mod ambit {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/ambit.v1.rs"));
    }
}

pub mod encoded;

pub use prost;
pub use prost_types;
pub use tonic;

/// The type URLs of the resources Ambit serves, in the order a node applies them.
pub mod type_urls {
    pub const MESH_CONFIG: &str = "type.googleapis.com/ambit.v1.MeshConfig";
    pub const NAMESPACE: &str = "type.googleapis.com/ambit.v1.Namespace";
    pub const WORKLOAD: &str = "type.googleapis.com/ambit.v1.Workload";
    pub const SERVICE: &str = "type.googleapis.com/ambit.v1.Service";
    pub const PEER_AUTHENTICATION: &str = "type.googleapis.com/ambit.v1.PeerAuthentication";
    pub const AUTHORIZATION: &str = "type.googleapis.com/ambit.v1.Authorization";
    /// Waypoints only: the Istio / Gateway API L7 resources as JSON.
    pub const L7_RESOURCE: &str = "type.googleapis.com/ambit.v1.L7Resource";

    /// Every type a node subscribes to.
    pub const ALL: &[&str] = &[
        MESH_CONFIG,
        NAMESPACE,
        WORKLOAD,
        SERVICE,
        PEER_AUTHENTICATION,
        AUTHORIZATION,
    ];

    /// Every type a waypoint subscribes to: a node's, and the L7 resources.
    pub const WAYPOINT: &[&str] = &[
        MESH_CONFIG,
        NAMESPACE,
        WORKLOAD,
        SERVICE,
        PEER_AUTHENTICATION,
        AUTHORIZATION,
        L7_RESOURCE,
    ];
}

/// The xDS `node.id` of a waypoint: `waypoint~<namespace>~<name>`, where
/// `<name>` is the waypoint workload's (pod's) name, as the
/// `istio.io/use-waypoint` label names it. `~` cannot occur in Kubernetes
/// names, so no node is mistaken for a waypoint.
pub mod waypoint_id {
    pub const PREFIX: &str = "waypoint~";

    /// The node id of waypoint `namespace/name`.
    pub fn format(namespace: &str, name: &str) -> String {
        format!("{PREFIX}{namespace}~{name}")
    }

    /// (namespace, name) of a waypoint's node id; `None` for a node.
    pub fn parse(id: &str) -> Option<(&str, &str)> {
        let (ns, name) = id.strip_prefix(PREFIX)?.split_once('~')?;
        (!ns.is_empty() && !name.is_empty() && !name.contains('~')).then_some((ns, name))
    }
}

/// Packs a message into an `Any` with its type URL.
pub fn to_any<M: prost::Message>(type_url: &str, msg: &M) -> prost_types::Any {
    prost_types::Any {
        type_url: type_url.to_string(),
        value: msg.encode_to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn delta_request_uses_envoy_field_numbers() {
        let req = envoy::service::discovery::v3::DeltaDiscoveryRequest {
            type_url: "t".into(),
            response_nonce: "n".into(),
            ..Default::default()
        };
        let bytes = req.encode_to_vec();
        // field 2 (type_url), wire type 2 -> tag 0x12; field 6 (nonce) -> 0x32
        assert_eq!(bytes, vec![0x12, 1, b't', 0x32, 1, b'n']);
    }

    #[test]
    fn resource_uses_envoy_field_numbers() {
        let r = envoy::service::discovery::v3::Resource {
            version: "v".into(),
            name: "a".into(),
            ..Default::default()
        };
        // version = 1 (0x0a), name = 3 (0x1a)
        assert_eq!(r.encode_to_vec(), vec![0x0a, 1, b'v', 0x1a, 1, b'a']);
    }

    #[test]
    fn waypoint_ids_round_trip() {
        let id = waypoint_id::format("bookinfo", "waypoint");
        assert_eq!(id, "waypoint~bookinfo~waypoint");
        assert_eq!(waypoint_id::parse(&id), Some(("bookinfo", "waypoint")));
        assert_eq!(waypoint_id::parse("node-a"), None);
        assert_eq!(waypoint_id::parse("waypoint~ns"), None);
        assert_eq!(waypoint_id::parse("waypoint~~x"), None);
    }

    #[test]
    fn any_round_trip() {
        let w = ambit::v1::Workload {
            name: "p".into(),
            ..Default::default()
        };
        let any = to_any(type_urls::WORKLOAD, &w);
        assert_eq!(any.type_url, type_urls::WORKLOAD);
        let back = ambit::v1::Workload::decode(any.value.as_slice()).expect("decode");
        assert_eq!(back, w);
    }
}

impl ambit::v1::ServicePort {
    /// A Service port as Kubernetes writes it (signed numbers, optional
    /// name, target and protocol). A number that does not fit is sent as 0,
    /// which the receiving builder refuses; an absent target port is 0 too
    /// ("the port itself").
    pub fn from_spec(
        name: Option<&str>,
        port: i64,
        target_port: Option<i64>,
        protocol: Option<&str>,
    ) -> Self {
        ambit::v1::ServicePort {
            name: name.unwrap_or_default().to_string(),
            port: u32::try_from(port).unwrap_or(0),
            target_port: target_port.and_then(|t| u32::try_from(t).ok()).unwrap_or(0),
            protocol: protocol.unwrap_or_default().to_string(),
        }
    }
}
