//! What a node proxy (and a waypoint) knows about the mesh: workloads,
//! services and compiled L4 policy ([`state`]), built from mesh-proto
//! messages by [`build`] alone, the policy engine ([`rbac`]), and the local
//! config file of the debugging mode ([`config`]), which converts itself to
//! those messages.
//!
//! No eBPF, no sockets: the control plane and the waypoint build with this
//! crate alone.

pub mod build;
pub mod config;
pub mod problems;
pub mod rbac;
pub mod state;
mod syntax;
