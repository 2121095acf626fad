//! The controller as the node's source of truth: the delta xDS client
//! ([`client`]), the CA client ([`ca_client`]) and the conversions between
//! xDS resources and the node's config model ([`convert`]).
//!
//! [`spawn_xds`] mirrors [`crate::config::ConfigWatcher::spawn`]: it hands
//! back the same state and error receivers, so the rest of the node does not
//! care where its config comes from. [`spawn_ca`] keeps the [`CertStore`]
//! filled with certificates for the identities of the node's pods.
//!
//! The gRPC channel is plaintext (local mode; the bootstrap token is the
//! credential). TLS to the controller is future work.
//!
//! [`CertStore`]: crate::identity::CertStore

pub mod ca_client;
pub mod client;
pub mod convert;

pub use ca_client::{request_certificate, spawn_ca, spawn_ca_for, CaOptions, WantedIdentities};
pub use client::{
    spawn_xds, ErrorReceiver, ExtraCheck, ExtraCheckFn, ExtraResources, StateReceiver, XdsClient,
    XdsOptions, XdsStatus, XdsView,
};

#[cfg(test)]
mod tests;
