//! mesh-node: Ambit's per-node proxy.
//!
//! One module per concern: `ebpf` (the kernel programs), `inpod` (pod
//! namespaces and listeners), `identity` (SPIFFE certificates), `hbone` (the
//! mTLS tunnel), `config` and `state` (what the node knows), `rbac` (L4
//! policy), `proxy` (the outbound and inbound data path).

pub mod identity;
pub mod inpod;
