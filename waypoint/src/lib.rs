//! Ambit's waypoint: the L7 engine and the HTTP proxy that applies it.
//!
//! Three tiers, each importing only the ones below it:
//!
//! - **Compiling.** The input is the typed Istio / Gateway API resources of
//!   `mesh-api`; [`config::Config`] compiles them into per-host route
//!   tables ([`routes`]), per-destination traffic policies ([`policy`]:
//!   load balancing, pools, outlier detection), JWT rules ([`authn`]), L7
//!   authorization ([`authz`], both selected by [`security`]), local rate
//!   limits ([`ratelimit`], from EnvoyFilter) and Telemetry settings
//!   ([`telemetry`]). What cannot be applied is an [`issue::Issue`].
//! - **Engine.** [`engine::Waypoint`] holds the config, the
//!   [`discovery::Discovery`] of endpoints, the [`connector::Connector`]
//!   (plain TCP or [`hbone`]), and per destination a bounded connection
//!   pool ([`pool`]), a [`balancer`] and [`outlier`] detection.
//! - **Request path.** [`proxy`] serves HTTP/1.1 and HTTP/2 and runs each
//!   request through [`layers`]: authn, authz, route, rate limit, fault,
//!   the route's action, mirrors, timeout and retries, endpoint choice,
//!   connect, with Istio's standard metrics and an access log around it
//!   (served by [`admin`]) and trace context propagated ([`trace`]).
//!
//! The same binary is the ingress gateway ([`gateway`]). [`xds`] feeds it
//! all from mesh-controller over delta xDS.

pub mod admin;
pub mod authn;
pub mod authz;
pub mod balancer;
pub mod body;
pub mod config;
pub mod connector;
pub mod destination;
pub mod discovery;
pub mod engine;
pub mod fault;
pub mod gateway;
pub mod hbone;
pub mod headers;
pub mod issue;
pub mod layers;
pub mod limits;
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
pub mod sniff;
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
pub use engine::Waypoint;
