//! `networking.istio.io`: VirtualService, DestinationRule, Gateway,
//! ServiceEntry, Sidecar, and the local-rate-limit form of EnvoyFilter.
//!
//! The shapes follow istio/api `networking/v1alpha3/*.proto` (the same
//! schema is served as v1alpha3, v1beta1 and v1). Every field of the
//! schema is present so that unknown fields can be refused; fields Ambit
//! does not implement are reported by `validate` as warnings.

mod common;
mod destination_rule;
mod envoy_filter;
mod gateway;
mod service_entry;
mod sidecar;
mod virtual_service;

pub use common::*;
pub use destination_rule::*;
pub use envoy_filter::*;
pub use gateway::*;
pub use service_entry::*;
pub use sidecar::*;
pub use virtual_service::*;
