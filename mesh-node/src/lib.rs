//! mesh-node: Ambit's per-node proxy.
//!
//! One module per concern: `ebpf` (the kernel programs), `inpod` (pod
//! namespaces, listeners, enrolment), `identity` (SPIFFE certificates),
//! `hbone` (the mTLS tunnel), `config` and `state` (what the node knows),
//! `rbac` (L4 policy), `proxy` (the outbound and inbound data path), `admin`
//! (readiness and metrics) and `app` (the wiring).

pub mod admin;
pub mod app;
pub mod config;
pub mod ebpf;
pub mod hbone;
pub mod identity;
pub mod inpod;
pub mod proxy;
pub mod rbac;
pub mod state;
pub mod xds;
