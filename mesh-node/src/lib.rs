//! mesh-node: Ambit's per-node proxy.
//!
//! One module per concern: `ebpf` (the kernel programs), `inpod` (pod
//! namespaces, listeners, enrolment), `proxy` (the outbound and inbound
//! data path), `admin` (readiness and metrics) and `app` (the wiring).
//! Identities, the HBONE tunnel, the node's view of the mesh and the
//! controller clients are their own crates (`mesh-identity`, `mesh-hbone`,
//! `mesh-model`, `mesh-xds`), shared with the waypoint.

pub mod admin;
pub mod app;
pub mod ebpf;
pub mod inpod;
pub mod proxy;
