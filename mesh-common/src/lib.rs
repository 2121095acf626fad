//! Types and constants shared by the kernel programs (`mesh-ebpf`) and user
//! space (`mesh-node`). Everything here is `#[repr(C)]` and `no_std`.
#![no_std]

/// Port of the per-pod outbound capture listener (inside the pod's netns).
pub const OUTBOUND_PORT: u16 = 15001;
/// Port of the per-pod plaintext inbound listener.
pub const INBOUND_PLAINTEXT_PORT: u16 = 15006;
/// Port of the per-pod HBONE (mTLS, HTTP/2 CONNECT) listener.
pub const HBONE_PORT: u16 = 15008;

/// SO_MARK carried by every socket mesh-node opens, so the kernel programs
/// never capture the proxy's own traffic.
pub const MESH_MARK: u32 = 0x0A3B_1700;
