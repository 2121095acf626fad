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
//! and upstream connections from a [`connector::Connector`] (plain TCP now,
//! HBONE later). [`xds`] feeds both from mesh-controller over delta xDS.

pub mod balancer;
pub mod body;
pub mod config;
pub mod connector;
pub mod discovery;
pub mod fault;
pub mod hbone;
pub mod headers;
pub mod mirror;
pub mod outlier;
pub mod policy;
pub mod pool;
pub mod proxy;
pub mod resilience;
pub mod routes;
pub mod xds;

pub use config::Config;
pub use connector::{Connector, TcpConnector};
pub use discovery::{Discovery, Endpoint, StaticDiscovery};
pub use proxy::Waypoint;
