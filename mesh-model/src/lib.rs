//! What a node proxy (and a waypoint) knows about the mesh: workloads,
//! services and compiled L4 policy ([`state`]), the policy engine
//! ([`rbac`]), the local config file of the debugging mode ([`config`]) and
//! the conversions between that model and the xDS resources ([`convert`]).
//!
//! No eBPF, no sockets: the control plane and the waypoint build with this
//! crate alone.

pub mod build;
pub mod config;
pub mod convert;
pub mod problems;
pub mod rbac;
pub mod state;
mod syntax;
