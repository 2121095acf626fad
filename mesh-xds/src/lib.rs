//! The controller as a proxy's source of truth: the delta xDS client
//! ([`client`]) and the CA client ([`ca_client`]), used by mesh-node and the
//! waypoint. The resources become a state through
//! [`mesh_model::build::build`].
//!
//! [`spawn_xds`] mirrors the local config file's watcher: it hands
//! back the same state and error receivers, so the rest of the node does not
//! care where its config comes from. [`spawn_ca`] keeps the [`CertStore`]
//! filled with certificates for the identities of the node's pods.
//!
//! The gRPC channel is plaintext (local mode; the bootstrap token is the
//! credential). TLS to the controller is future work.
//!
//! [`CertStore`]: mesh_identity::CertStore

pub mod ca_client;
pub mod client;

pub use ca_client::{request_certificate, spawn_ca, spawn_ca_for, CaOptions, WantedIdentities};
pub use client::{
    spawn_xds, ErrorReceiver, ExtraCheck, ExtraCheckFn, ExtraResources, StateReceiver, XdsClient,
    XdsOptions, XdsStatus, XdsView,
};

#[cfg(test)]
mod tests;
