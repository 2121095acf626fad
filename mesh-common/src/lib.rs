//! Types and constants shared by the kernel programs (`mesh-ebpf`) and user
//! space (`mesh-node`). Everything here is `#[repr(C)]` and `no_std`.
//!
//! # Byte-order conventions (all map types)
//!
//! * **Addresses** are `[u32; 4]` holding the address bytes in network order,
//!   exactly as the kernel's context structs carry them (`user_ip4`,
//!   `local_ip6`, ...). An IPv4 address lives in word 0 and words 1..4 are
//!   zero. In memory the bytes are the address octets, so user space converts
//!   with [`addr_from_ip`] / [`ip_from_addr`].
//! * **Ports** are `u16` in **host** order. The kernel programs convert from
//!   whatever order their context gives them.
//! * Every key has explicit padding fields; writers must zero them (keys are
//!   compared bytewise by the kernel). Use the constructors.
#![no_std]

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Port of the per-pod outbound capture listener (inside the pod's netns).
pub const OUTBOUND_PORT: u16 = 15001;
/// Port of the per-pod plaintext inbound listener.
pub const INBOUND_PLAINTEXT_PORT: u16 = 15006;
/// Port of the per-pod HBONE (mTLS, HTTP/2 CONNECT) listener.
pub const HBONE_PORT: u16 = 15008;

/// SO_MARK carried by every socket mesh-node opens in a pod. It does not
/// exempt a socket from capture (a pod can set any mark in its own netns;
/// mesh-node is recognised by its cgroup, see `map_names::OWN_CGROUP`).
pub const MESH_MARK: u32 = 0x0A3B_1700;

/// SO_MARK of the socket mesh-node delivers inbound traffic to the app on
/// (inside the pod, from the caller's own address). It differs from
/// [`MESH_MARK`] so that only the app's side of a delivered connection (which
/// inherits it with `tcp_fwmark_accept`) is routed back to mesh-node by the
/// pod's [`DELIVERY_TABLE`]; mesh-node's outbound sockets in the same pod
/// keep leaving on the pod's routes. (Capture exempts mesh-node by its
/// cgroup, so this mark grants a pod nothing.)
pub const DELIVERY_MARK: u32 = MESH_MARK | 1;
/// The routing table, in each enrolled pod's netns, that sends every packet
/// carrying [`DELIVERY_MARK`] to the local stack (`local default dev lo`): the
/// app's replies to a caller address that mesh-node holds transparently.
pub const DELIVERY_TABLE: u32 = 15_006;
/// Priority of the `fwmark DELIVERY_MARK lookup DELIVERY_TABLE` rule: after
/// the `local` table (0), before `main` (32766), as ztunnel's in-pod rule.
pub const DELIVERY_RULE_PRIORITY: u32 = 32_764;

/// `AF_INET`, as stored in the `family` fields below.
pub const FAMILY_V4: u16 = 2;
/// `AF_INET6`, as stored in the `family` fields below.
pub const FAMILY_V6: u16 = 10;

/// `SO_ORIGINAL_DST` / `IP6T_SO_ORIGINAL_DST`: the getsockopt option the
/// `cgroup/getsockopt` program answers (at level `SOL_IP` or `SOL_IPV6`).
pub const SO_ORIGINAL_DST: i32 = 80;

/// Map names (as in the object file). The kernel limits names to 15 bytes.
pub mod map_names {
    /// `HashMap<u64 netns cookie, PodInfo>`: enrolled pod network namespaces.
    pub const ENROLLED: &str = "ENROLLED";
    /// `SkStorage<OrigDst>`: a captured connection's original destination,
    /// on the app's socket (connect4/6) and then on the accepted one (sockops).
    pub const ORIG_DST: &str = "ORIG_DST";
    /// `LruHashMap<SockPairKey, OrigDst>`: the hand-over between the two,
    /// keyed by the 4-tuple seen from 15001.
    pub const ORIG_HANDOFF: &str = "ORIG_HANDOFF";
    /// `Array<u64>` of one: mesh-node's own cgroup id, never captured.
    pub const OWN_CGROUP: &str = "OWN_CGROUP";
    /// `SockHash<SockPairKey>`: established loopback sockets (fast path).
    pub const FAST_SOCKS: &str = "FAST_SOCKS";
    /// `SockHash<ListenerKey>`: per-pod 15006/15008 listeners for sk_lookup.
    pub const LISTENERS: &str = "LISTENERS";
    /// `Array<u32>`: run-time switches, indexed by the `CONFIG_*` consts.
    pub const CONFIG: &str = "MESH_CONFIG";
    /// Every map above (the ones user space pins).
    pub const ALL: [&str; 7] = [
        ENROLLED,
        ORIG_DST,
        ORIG_HANDOFF,
        OWN_CGROUP,
        FAST_SOCKS,
        LISTENERS,
        CONFIG,
    ];
}

/// Program names (the Rust function names in `mesh-ebpf`, which differ from
/// their section names).
pub mod program_names {
    pub const CONNECT4: &str = "mesh_connect4";
    pub const CONNECT6: &str = "mesh_connect6";
    pub const SOCKOPS: &str = "mesh_sockops";
    pub const SK_MSG: &str = "mesh_sk_msg";
    pub const GETSOCKOPT: &str = "mesh_getsockopt";
    pub const SK_LOOKUP: &str = "mesh_sk_lookup";
}

/// Index in `MESH_CONFIG` of the same-node fast-path switch (0 off, 1 on).
pub const CONFIG_FAST_PATH: u32 = 0;
/// Number of entries in `MESH_CONFIG`.
pub const CONFIG_LEN: u32 = 4;

/// Capacity of `ENROLLED` (pods per node).
pub const MAX_PODS: u32 = 4096;
/// Capacity of the original-destination maps and `FAST_SOCKS`.
pub const MAX_CONNS: u32 = 65536;
/// Capacity of `LISTENERS` (two per pod and family).
pub const MAX_LISTENERS: u32 = 4 * MAX_PODS;

/// A connection's original destination, as the app asked for it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrigDst {
    /// Network-order address words (see the module docs).
    pub addr: [u32; 4],
    /// Host-order port.
    pub port: u16,
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u16,
    pub _pad: u32,
}

impl OrigDst {
    pub fn new(ip: IpAddr, port: u16) -> Self {
        let (family, addr) = addr_from_ip(ip);
        OrigDst {
            addr,
            port,
            family,
            _pad: 0,
        }
    }

    pub fn ip(&self) -> IpAddr {
        ip_from_addr(self.family, self.addr)
    }
}

/// The value of `ENROLLED`: what the kernel knows about an enrolled pod.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodInfo {
    /// The pod's IP (network-order words).
    pub addr: [u32; 4],
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u16,
    pub _pad: u16,
    /// `POD_FLAG_*` bits; reserved, user space writes 0 today.
    pub flags: u32,
}

impl PodInfo {
    pub fn new(ip: IpAddr) -> Self {
        let (family, addr) = addr_from_ip(ip);
        PodInfo {
            addr,
            family,
            _pad: 0,
            flags: 0,
        }
    }
}

/// Key of `FAST_SOCKS`: one established IPv4 loopback socket, seen from its
/// own side. The peer of `k` is `k.peer()` (local and remote swapped). The
/// netns cookie is part of the key because 127.0.0.1 port pairs repeat in
/// every pod's netns.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SockPairKey {
    pub netns_cookie: u64,
    /// Network-order IPv4 address.
    pub local_ip4: u32,
    /// Network-order IPv4 address.
    pub remote_ip4: u32,
    /// Host-order port.
    pub local_port: u16,
    /// Host-order port.
    pub remote_port: u16,
    pub _pad: u32,
}

impl SockPairKey {
    pub const fn new(
        netns_cookie: u64,
        local_ip4: u32,
        local_port: u16,
        remote_ip4: u32,
        remote_port: u16,
    ) -> Self {
        SockPairKey {
            netns_cookie,
            local_ip4,
            remote_ip4,
            local_port,
            remote_port,
            _pad: 0,
        }
    }

    /// The key under which the other end of this connection is stored.
    pub const fn peer(&self) -> Self {
        SockPairKey::new(
            self.netns_cookie,
            self.remote_ip4,
            self.remote_port,
            self.local_ip4,
            self.local_port,
        )
    }
}

/// Key of `LISTENERS`: a pod IP and the mesh port (15006 or 15008) whose
/// listener takes connections to that IP. Pod IPs are unique on a node.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListenerKey {
    /// Network-order address words.
    pub addr: [u32; 4],
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u16,
    /// Host-order port: [`INBOUND_PLAINTEXT_PORT`] or [`HBONE_PORT`].
    pub port: u16,
}

impl ListenerKey {
    pub fn new(ip: IpAddr, port: u16) -> Self {
        let (family, addr) = addr_from_ip(ip);
        ListenerKey { addr, family, port }
    }
}

/// Family and network-order address words of `ip`.
pub fn addr_from_ip(ip: IpAddr) -> (u16, [u32; 4]) {
    match ip {
        IpAddr::V4(v4) => (FAMILY_V4, [u32::from_ne_bytes(v4.octets()), 0, 0, 0]),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            let w = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            (FAMILY_V6, [w(0), w(4), w(8), w(12)])
        }
    }
}

/// The inverse of [`addr_from_ip`] (any family other than v6 reads as v4).
pub fn ip_from_addr(family: u16, addr: [u32; 4]) -> IpAddr {
    if family == FAMILY_V6 {
        let mut o = [0u8; 16];
        for (i, w) in addr.iter().enumerate() {
            o[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        IpAddr::V6(Ipv6Addr::from(o))
    } else {
        IpAddr::V4(Ipv4Addr::from(addr[0].to_ne_bytes()))
    }
}

#[cfg(feature = "user")]
mod pod {
    use super::*;

    // SAFETY: `#[repr(C)]`, only integer fields, explicit padding fields so
    // there are no uninitialised bytes; every bit pattern is valid.
    unsafe impl aya::Pod for OrigDst {}
    // SAFETY: as above ([u32; 4], u16, u16, u32: 24 bytes, no implicit padding).
    unsafe impl aya::Pod for PodInfo {}
    // SAFETY: as above (u64, u32, u32, u16, u16, u32: 24 bytes, no implicit padding).
    unsafe impl aya::Pod for SockPairKey {}
    // SAFETY: as above ([u32; 4], u16, u16: 20 bytes, no implicit padding).
    unsafe impl aya::Pod for ListenerKey {}
}

// The layouts are ABI with the kernel programs: pin their sizes.
const _: () = assert!(core::mem::size_of::<OrigDst>() == 24);
const _: () = assert!(core::mem::size_of::<PodInfo>() == 24);
const _: () = assert!(core::mem::size_of::<SockPairKey>() == 24);
const _: () = assert!(core::mem::size_of::<ListenerKey>() == 20);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addr_round_trip() {
        let v4: IpAddr = Ipv4Addr::new(10, 1, 2, 3).into();
        let (f, a) = addr_from_ip(v4);
        assert_eq!(f, FAMILY_V4);
        // Network order in memory: the first byte is the first octet.
        assert_eq!(a[0].to_ne_bytes(), [10, 1, 2, 3]);
        assert_eq!(ip_from_addr(f, a), v4);
        let v6: IpAddr = "fd00::1:2".parse::<Ipv6Addr>().map(IpAddr::V6).unwrap();
        let (f, a) = addr_from_ip(v6);
        assert_eq!(ip_from_addr(f, a), v6);
    }

    #[test]
    fn peer_swaps() {
        let k = SockPairKey::new(7, 1, 2, 3, 4);
        assert_eq!(k.peer().peer(), k);
        assert_eq!(k.peer().local_ip4, 3);
        assert_eq!(k.peer().remote_port, 2);
    }
}
