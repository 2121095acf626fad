//! Ambit's waypoint: the L7 engine and the HTTP proxy that applies it.
//!
//! The input is the typed Istio / Gateway API resources of `mesh-api`
//! (VirtualService, DestinationRule, HTTPRoute); [`config::Config`] compiles
//! them into per-host route tables ([`routes`]) and per-destination traffic
//! policies ([`policy`]). [`proxy::Waypoint`] serves HTTP/1.1 and HTTP/2,
//! selects a route, applies faults ([`fault`]), rewrites and header
//! operations, mirrors ([`mirror`]), picks a weighted destination, then an
//! endpoint ([`balancer`], minus the ones [`outlier`] detection ejected),
//! and forwards through a bounded connection pool ([`pool`]) with timeouts
//! and retries ([`resilience`]). Endpoints come from a [`discovery::Discovery`]
//! and upstream connections from a [`connector::Connector`] (plain TCP or
//! [`hbone`]).
//!
//! Around that: JWT ([`authn`]) and L7 authorization ([`authz`], both
//! selected by [`security`]), Envoy's local rate limit ([`ratelimit`], from
//! EnvoyFilter), Istio's standard metrics and an access log ([`telemetry`],
//! served by [`admin`]), and trace context propagation ([`trace`]). The
//! same binary is the ingress gateway ([`gateway`]). [`xds`] feeds it all
//! from mesh-controller over delta xDS.

pub mod admin;
pub mod authn;
pub mod authz;
pub mod balancer;
pub mod body;
pub mod config;
pub mod connector;
pub mod destination;
pub mod discovery;
pub mod fault;
pub mod gateway;
pub mod hbone;
pub mod headers;
pub mod issue;
pub mod mirror;
pub mod namespace;
pub mod outlier;
pub mod peer;
pub mod policy;
pub mod pool;
pub mod proxy;
pub mod ratelimit;
pub mod replay;
pub mod resilience;
pub mod routes;
pub mod security;
pub mod sniff; // ambit:grpc
pub mod telemetry;
pub mod trace;

/// The text of the seed config `name`, from the repository's fixtures
/// (`tests/fixtures/istio`).
#[cfg(test)]
pub(crate) fn seed_config(name: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/istio")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("seed config {}: {e}", p.display()))
}
pub mod xds;

pub use config::Config;
pub use connector::{Connector, TcpConnector};
pub use discovery::{Discovery, Endpoint, StaticDiscovery};
pub use proxy::Waypoint;
