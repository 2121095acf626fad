//! Ambit's kernel programs. Small on purpose: they only capture and steer,
//! keyed by maps that mesh-node fills (see `mesh-common` for the layouts and
//! byte-order conventions).
//!
//! Function names differ from section names (a function named like its
//! section fails to link).
#![no_std]
#![no_main]

use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};

use aya_ebpf::{
    bindings::{
        bpf_sock, bpf_sock_addr,
        sk_action::{SK_DROP, SK_PASS},
        BPF_ANY, BPF_F_INGRESS, BPF_SK_LOOKUP_F_NO_REUSEPORT, BPF_SK_STORAGE_GET_F_CREATE,
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB,
        BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG,
    },
    btf_maps::SkStorage,
    helpers::generated::{
        bpf_get_current_cgroup_id, bpf_get_netns_cookie, bpf_sk_storage_delete, bpf_sk_storage_get,
    },
    macros::{btf_map, cgroup_sock_addr, cgroup_sockopt, map, sk_lookup, sk_msg, sock_ops},
    maps::{Array, HashMap, LruHashMap, SockHash},
    programs::{SkLookupContext, SkMsgContext, SockAddrContext, SockOpsContext, SockoptContext},
    EbpfContext,
};
use aya_log_ebpf::{debug, warn};
use mesh_common::{
    ListenerKey, OrigDst, PodInfo, SockPairKey, CONFIG_FAST_PATH, CONFIG_LEN, FAMILY_V4, FAMILY_V6,
    HBONE_PORT, INBOUND_PLAINTEXT_PORT, MAX_CONNS, MAX_LISTENERS, MAX_PODS, OUTBOUND_PORT,
    SO_ORIGINAL_DST,
};

const SOCK_STREAM: u32 = 1;
/// The loopback device's ifindex, the same in every netns.
const LOOPBACK_IFINDEX: u32 = 1;
/// `TCP_CLOSE` in the kernel's TCP state numbering.
const TCP_CLOSE: u32 = 7;
const IPPROTO_TCP: u32 = 6;
const SOL_IP: i32 = 0;
const SOL_IPV6: i32 = 41;
const AF_INET: u32 = FAMILY_V4 as u32;
const AF_INET6: u32 = FAMILY_V6 as u32;

/// 127.0.0.1 as the kernel stores it (network order in memory).
const LOOPBACK4: u32 = u32::from_ne_bytes([127, 0, 0, 1]);
/// Word 2 of a v4-mapped IPv6 address (`::ffff:a.b.c.d`).
const V4_MAPPED_WORD2: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

#[map]
static ENROLLED: HashMap<u64, PodInfo> = HashMap::with_max_entries(MAX_PODS, 0);

/// A captured connection's original destination, kept on the socket itself:
/// on the app's socket from connect() until it is established, then on the
/// socket 15001 accepted, for getsockopt. The kernel frees it with the
/// socket, so no entry outlives its connection and a lookup can only ever
/// return the asking socket's own.
#[btf_map]
static ORIG_DST: SkStorage<OrigDst> = SkStorage::new();

/// The hand-over from the app's socket to the accepted one, keyed by the
/// connection's 4-tuple in its netns, seen from the 15001 side. Written at
/// the app side's ACTIVE_ESTABLISHED, consumed at the accepted side's
/// PASSIVE_ESTABLISHED (which follows it: the handshake's last ACK is sent
/// after the active callback), and removed when the app's socket closes
/// should the accepted side never have taken it.
#[map]
static ORIG_HANDOFF: LruHashMap<SockPairKey, OrigDst> = LruHashMap::with_max_entries(MAX_CONNS, 0);

/// The cgroup id of mesh-node's own cgroup (index 0; 0 = none yet). Its
/// connections are never captured. A pod cannot forge this, unlike a socket
/// mark (any pod with CAP_NET_ADMIN in its netns may set any SO_MARK): a
/// pod's processes cannot enter mesh-node's cgroup.
#[map]
static OWN_CGROUP: Array<u64> = Array::with_max_entries(1, 0);

#[map]
static FAST_SOCKS: SockHash<SockPairKey> = SockHash::with_max_entries(MAX_CONNS, 0);

#[map]
static LISTENERS: SockHash<ListenerKey> = SockHash::with_max_entries(MAX_LISTENERS, 0);

#[map]
static MESH_CONFIG: Array<u32> = Array::with_max_entries(CONFIG_LEN, 0);

/// The first octet of a network-order IPv4 word is 127 (or the address is 0.0.0.0).
#[inline(always)]
fn is_loopback4(ip: u32) -> bool {
    ip & 0xff == 127 || ip == 0
}

// ---------------------------------------------------------------------------
// cgroup/connect4, cgroup/connect6: capture outbound connections
// ---------------------------------------------------------------------------

/// Whether this connect() is to be captured: the socket's netns is enrolled,
/// it is TCP, and the caller is not mesh-node (by cgroup, not by mark).
#[inline(always)]
fn should_capture(ctx: &SockAddrContext) -> bool {
    let sa = ctx.sock_addr;
    // SAFETY: `sa` is the context pointer the kernel passed in; `type_` is a
    // readable 4-byte field of `bpf_sock_addr`.
    let ty = unsafe { read_volatile(addr_of!((*sa).type_)) };
    if ty != SOCK_STREAM {
        return false;
    }
    // SAFETY: `sk` is a readable 8-byte context field; the verifier types it
    // as a non-NULL PTR_TO_SOCKET for sock_addr programs.
    let sk: *mut bpf_sock = unsafe { read_volatile(addr_of!((*sa).__bindgen_anon_1.sk)) };
    if sk.is_null() {
        return false;
    }
    if let Some(own) = OWN_CGROUP.get(0) {
        // SAFETY: the helper has no arguments.
        if *own != 0 && unsafe { bpf_get_current_cgroup_id() } == *own {
            return false;
        }
    }
    // SAFETY: the helper takes the program's context pointer.
    let netns = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    ENROLLED.get_ptr(netns).is_some()
}

/// Remembers `orig` on the app's socket for sockops to hand over.
#[inline(always)]
fn remember(ctx: &SockAddrContext, orig: &OrigDst) -> bool {
    let mut value = *orig;
    // SAFETY: the context's socket is a full socket (checked non-NULL by
    // `should_capture`); the helper takes it and a value to copy in.
    let slot = unsafe { ORIG_DST.get_or_insert_ptr_mut(ctx, Some(&mut value)) };
    if slot.is_null() {
        warn!(ctx, "connect: no ORIG_DST storage on the socket");
        return false;
    }
    // A second connect() on the same socket overwrites the first's.
    // SAFETY: a non-NULL storage pointer, valid for this program run.
    unsafe { write_volatile(slot, *orig) };
    true
}

/// `ORIG_DST` as the raw map pointer the storage helpers take.
#[inline(always)]
fn orig_dst_map() -> *mut core::ffi::c_void {
    core::ptr::from_ref(&ORIG_DST).cast_mut().cast()
}

/// The original destination stored on `sk`, if any.
#[inline(always)]
fn stored_orig_dst(sk: *mut bpf_sock) -> Option<OrigDst> {
    // SAFETY: `sk` is a non-NULL socket pointer from the context; without
    // the CREATE flag the helper only looks up.
    let p = unsafe { bpf_sk_storage_get(orig_dst_map(), sk.cast(), core::ptr::null_mut(), 0) };
    if p.is_null() {
        return None;
    }
    // SAFETY: a non-NULL storage pointer of this map's value type.
    Some(unsafe { read_volatile(p as *const OrigDst) })
}

#[cgroup_sock_addr(connect4)]
pub fn mesh_connect4(ctx: SockAddrContext) -> i32 {
    let sa: *mut bpf_sock_addr = ctx.sock_addr;
    if !should_capture(&ctx) {
        return 1;
    }
    // SAFETY: readable 4-byte context fields.
    let (ip, port_be) = unsafe {
        (
            read_volatile(addr_of!((*sa).user_ip4)),
            read_volatile(addr_of!((*sa).user_port)),
        )
    };
    if is_loopback4(ip) {
        return 1;
    }
    let port = u16::from_be(port_be as u16);
    let orig = OrigDst {
        addr: [ip, 0, 0, 0],
        port,
        family: FAMILY_V4,
        _pad: 0,
    };
    // Fail closed: a connection whose destination cannot be kept is refused
    // (EPERM), never let out uncaptured.
    if !remember(&ctx, &orig) {
        return 0;
    }
    // Separate volatile 4-byte stores: the verifier refuses merged stores.
    // SAFETY: writable 4-byte context fields of a connect4 program.
    unsafe {
        write_volatile(addr_of_mut!((*sa).user_ip4), LOOPBACK4);
        write_volatile(
            addr_of_mut!((*sa).user_port),
            u32::from(OUTBOUND_PORT.to_be()),
        );
    }
    debug!(&ctx, "connect4 captured {:i}:{}", u32::from_be(ip), port);
    1
}

#[cgroup_sock_addr(connect6)]
pub fn mesh_connect6(ctx: SockAddrContext) -> i32 {
    let sa: *mut bpf_sock_addr = ctx.sock_addr;
    if !should_capture(&ctx) {
        return 1;
    }
    // SAFETY: readable 4-byte context fields (one load per word).
    let (w0, w1, w2, w3, port_be) = unsafe {
        (
            read_volatile(addr_of!((*sa).user_ip6[0])),
            read_volatile(addr_of!((*sa).user_ip6[1])),
            read_volatile(addr_of!((*sa).user_ip6[2])),
            read_volatile(addr_of!((*sa).user_ip6[3])),
            read_volatile(addr_of!((*sa).user_port)),
        )
    };
    let port = u16::from_be(port_be as u16);
    let mapped = w0 == 0 && w1 == 0 && w2 == V4_MAPPED_WORD2;
    let orig = if mapped {
        if is_loopback4(w3) {
            return 1;
        }
        OrigDst {
            addr: [w3, 0, 0, 0],
            port,
            family: FAMILY_V4,
            _pad: 0,
        }
    } else {
        // ::1 and :: are local.
        if w0 == 0 && w1 == 0 && w2 == 0 && (w3 == 0 || w3 == u32::from_ne_bytes([0, 0, 0, 1])) {
            return 1;
        }
        OrigDst {
            addr: [w0, w1, w2, w3],
            port,
            family: FAMILY_V6,
            _pad: 0,
        }
    };
    // Fail closed: a connection whose destination cannot be kept is refused
    // (EPERM), never let out uncaptured.
    if !remember(&ctx, &orig) {
        return 0;
    }
    // Rewrite to ::ffff:127.0.0.1:15001, so the pod's single IPv4 outbound
    // listener takes IPv6 sockets too (fails for IPV6_V6ONLY sockets).
    // SAFETY: writable 4-byte context fields of a connect6 program.
    unsafe {
        write_volatile(addr_of_mut!((*sa).user_ip6[0]), 0);
        write_volatile(addr_of_mut!((*sa).user_ip6[1]), 0);
        write_volatile(addr_of_mut!((*sa).user_ip6[2]), V4_MAPPED_WORD2);
        write_volatile(addr_of_mut!((*sa).user_ip6[3]), LOOPBACK4);
        write_volatile(
            addr_of_mut!((*sa).user_port),
            u32::from(OUTBOUND_PORT.to_be()),
        );
    }
    debug!(&ctx, "connect6 captured port {}", port);
    1
}

// ---------------------------------------------------------------------------
// sockops: hand original destinations over, fill the fast-path sockhash
// ---------------------------------------------------------------------------

/// The IPv4 addresses (network order) of an established socket; a v6
/// socket's v4-mapped pair (a captured IPv6 socket is connected to
/// `::ffff:127.0.0.1`) counts as v4. `None` for real IPv6 pairs.
#[inline(always)]
fn ipv4_pair(ctx: &SockOpsContext, family: u32) -> Option<(u32, u32)> {
    let ops = ctx.ops;
    if family == AF_INET {
        // SAFETY: readable 4-byte context fields.
        return Some(unsafe {
            (
                read_volatile(addr_of!((*ops).local_ip4)),
                read_volatile(addr_of!((*ops).remote_ip4)),
            )
        });
    }
    if family != AF_INET6 {
        return None;
    }
    // SAFETY: readable 4-byte context fields (one load per word).
    let (l0, l1, l2, l3, r0, r1, r2, r3) = unsafe {
        (
            read_volatile(addr_of!((*ops).local_ip6[0])),
            read_volatile(addr_of!((*ops).local_ip6[1])),
            read_volatile(addr_of!((*ops).local_ip6[2])),
            read_volatile(addr_of!((*ops).local_ip6[3])),
            read_volatile(addr_of!((*ops).remote_ip6[0])),
            read_volatile(addr_of!((*ops).remote_ip6[1])),
            read_volatile(addr_of!((*ops).remote_ip6[2])),
            read_volatile(addr_of!((*ops).remote_ip6[3])),
        )
    };
    let mapped = |w0: u32, w1: u32, w2: u32| w0 == 0 && w1 == 0 && w2 == V4_MAPPED_WORD2;
    if mapped(l0, l1, l2) && mapped(r0, r1, r2) {
        Some((l3, r3))
    } else {
        None
    }
}

/// The socket of a sockops context (NULL-checked).
#[inline(always)]
fn sockops_sk(ctx: &SockOpsContext) -> Option<*mut bpf_sock> {
    // SAFETY: `sk` is a readable 8-byte context field (PTR_TO_SOCKET_OR_NULL).
    let sk = unsafe { read_volatile(addr_of!((*ctx.ops).__bindgen_anon_2.sk)) };
    if sk.is_null() {
        None
    } else {
        Some(sk)
    }
}

/// The app's captured socket is established: publish its original
/// destination under the 4-tuple the accepted socket will see.
#[inline(always)]
fn hand_over_orig_dst(ctx: &SockOpsContext, tuple: &SockPairKey) {
    let Some(sk) = sockops_sk(ctx) else {
        return;
    };
    let Some(orig) = stored_orig_dst(sk) else {
        return;
    };
    if let Err(e) = ORIG_HANDOFF.insert(tuple.peer(), orig, BPF_ANY.into()) {
        warn!(ctx, "sockops: ORIG_HANDOFF insert failed: {}", e);
    }
    // To remove the hand-over when this socket closes, if nobody took it.
    if let Err(e) = ctx.set_cb_flags(BPF_SOCK_OPS_STATE_CB_FLAG as i32) {
        warn!(ctx, "sockops: state callbacks refused: {}", e);
    }
    // Its job on the app's socket is done.
    // SAFETY: a non-NULL socket pointer from the context.
    let _ = unsafe { bpf_sk_storage_delete(orig_dst_map(), sk.cast()) };
}

/// 15001 accepted a connection: move the hand-over onto the accepted socket.
#[inline(always)]
fn take_over_orig_dst(ctx: &SockOpsContext, tuple: &SockPairKey) {
    let Some(orig) = ORIG_HANDOFF.get_ptr(tuple) else {
        return;
    };
    // SAFETY: a map value pointer returned by the kernel, valid for this run.
    let mut orig = unsafe { *orig };
    let _ = ORIG_HANDOFF.remove(tuple);
    let Some(sk) = sockops_sk(ctx) else {
        return;
    };
    // SAFETY: a non-NULL socket pointer from the context; CREATE copies `orig` in.
    let p = unsafe {
        bpf_sk_storage_get(
            orig_dst_map(),
            sk.cast(),
            core::ptr::from_mut(&mut orig).cast(),
            BPF_SK_STORAGE_GET_F_CREATE.into(),
        )
    };
    if p.is_null() {
        warn!(ctx, "sockops: no ORIG_DST storage on the accepted socket");
    }
}

#[sock_ops]
pub fn mesh_sockops(ctx: SockOpsContext) -> u32 {
    let op = ctx.op();
    if op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB
        && op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB
        && op != BPF_SOCK_OPS_STATE_CB
    {
        return 1;
    }
    let ops = ctx.ops;
    // SAFETY: the helper takes the program's context pointer.
    let netns = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    // SAFETY: readable 4-byte context fields.
    let (local_port, remote_port_raw, family) = unsafe {
        (
            read_volatile(addr_of!((*ops).local_port)),
            read_volatile(addr_of!((*ops).remote_port)),
            read_volatile(addr_of!((*ops).family)),
        )
    };
    // local_port is host order; remote_port is network order in the upper 16 bits.
    let local_port = local_port as u16;
    let remote_port = u16::from_be((remote_port_raw >> 16) as u16);

    if let Some((local_ip, remote_ip)) = ipv4_pair(&ctx, family) {
        let tuple = SockPairKey::new(netns, local_ip, local_port, remote_ip, remote_port);
        if op == BPF_SOCK_OPS_STATE_CB {
            // Only app sockets that handed over ask for state callbacks.
            if ctx.arg(1) == TCP_CLOSE {
                let _ = ORIG_HANDOFF.remove(&tuple.peer());
            }
            return 1;
        }
        if op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB {
            hand_over_orig_dst(&ctx, &tuple);
        } else if local_port == OUTBOUND_PORT {
            take_over_orig_dst(&ctx, &tuple);
        }
    } else if op == BPF_SOCK_OPS_STATE_CB {
        return 1;
    }

    if family != AF_INET {
        return 1;
    }
    match MESH_CONFIG.get(CONFIG_FAST_PATH) {
        Some(on) if *on != 0 => {}
        _ => return 1,
    }
    // SAFETY: readable 4-byte context fields.
    let (local_ip, remote_ip) = unsafe {
        (
            read_volatile(addr_of!((*ops).local_ip4)),
            read_volatile(addr_of!((*ops).remote_ip4)),
        )
    };
    if local_ip & 0xff != 127 || remote_ip & 0xff != 127 {
        return 1;
    }
    let mut key = SockPairKey::new(netns, local_ip, local_port, remote_ip, remote_port);
    // SAFETY: `ops` is the context pointer of an established callback, which
    // bpf_sock_hash_update accepts.
    if let Err(e) = FAST_SOCKS.update(&mut key, unsafe { &mut *ops }, BPF_ANY.into()) {
        warn!(&ctx, "sockops: FAST_SOCKS update failed: {}", e);
    }
    1
}

// ---------------------------------------------------------------------------
// sk_msg on FAST_SOCKS: hand bytes straight to the peer socket
// ---------------------------------------------------------------------------

#[sk_msg]
pub fn mesh_sk_msg(ctx: SkMsgContext) -> u32 {
    let msg = ctx.msg;
    // SAFETY: readable 4-byte context fields.
    let (family, local_ip, remote_ip, local_port, remote_port_raw) = unsafe {
        (
            read_volatile(addr_of!((*msg).family)),
            read_volatile(addr_of!((*msg).local_ip4)),
            read_volatile(addr_of!((*msg).remote_ip4)),
            read_volatile(addr_of!((*msg).local_port)),
            read_volatile(addr_of!((*msg).remote_port)),
        )
    };
    if family != AF_INET {
        return SK_PASS;
    }
    // SAFETY: the helper takes the program's context pointer.
    let netns = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    let remote_port = u16::from_be((remote_port_raw >> 16) as u16);
    // The peer's own key: its local end is our remote end.
    let mut peer = SockPairKey::new(netns, remote_ip, remote_port, local_ip, local_port as u16);
    // Without a peer in the map the helper returns SK_DROP and sets no
    // redirect; returning SK_PASS then sends the bytes the normal way.
    let _ = FAST_SOCKS.redirect_msg(&ctx, &mut peer, BPF_F_INGRESS.into());
    SK_PASS
}

// ---------------------------------------------------------------------------
// cgroup/getsockopt: answer SO_ORIGINAL_DST
// ---------------------------------------------------------------------------

#[cgroup_sockopt(getsockopt)]
pub fn mesh_getsockopt(ctx: SockoptContext) -> i32 {
    let so = ctx.sockopt;
    // SAFETY: readable 4-byte context fields.
    let (level, optname) = unsafe {
        (
            read_volatile(addr_of!((*so).level)),
            read_volatile(addr_of!((*so).optname)),
        )
    };
    if optname != SO_ORIGINAL_DST || (level != SOL_IP && level != SOL_IPV6) {
        return 1;
    }
    // SAFETY: `sk` is a readable 8-byte context field (PTR_TO_SOCKET).
    let sk: *mut bpf_sock = unsafe { read_volatile(addr_of!((*so).__bindgen_anon_1.sk)) };
    if sk.is_null() {
        return 1;
    }
    // Only the asking socket's own entry (no lookup by address or port).
    let Some(orig) = stored_orig_dst(sk) else {
        return 1;
    };
    // SAFETY: readable 8-byte context fields (the bounds of the option buffer).
    let (start, end) = unsafe {
        (
            read_volatile(addr_of!((*so).__bindgen_anon_2.optval)) as *mut u8,
            read_volatile(addr_of!((*so).__bindgen_anon_3.optval_end)) as *mut u8,
        )
    };
    let written: i32 = if level == SOL_IP {
        if orig.family != FAMILY_V4 {
            return 1;
        }
        // struct sockaddr_in: family, port (be), addr (be), 8 zero bytes.
        // SAFETY: pointer arithmetic only; the bounds check follows.
        if unsafe { start.add(16) } > end {
            return 1;
        }
        // SAFETY: [start, start+16) is inside the option buffer (checked above).
        unsafe {
            write_volatile(start as *mut u16, FAMILY_V4);
            write_volatile(start.add(2) as *mut u16, orig.port.to_be());
            write_volatile(start.add(4) as *mut u32, orig.addr[0]);
            write_volatile(start.add(8) as *mut u32, 0);
            write_volatile(start.add(12) as *mut u32, 0);
        }
        16
    } else {
        // struct sockaddr_in6: family, port (be), flowinfo, addr[16], scope_id.
        // SAFETY: pointer arithmetic only; the bounds check follows.
        if unsafe { start.add(28) } > end {
            return 1;
        }
        let addr = if orig.family == FAMILY_V6 {
            orig.addr
        } else {
            [0, 0, V4_MAPPED_WORD2, orig.addr[0]]
        };
        // SAFETY: [start, start+28) is inside the option buffer (checked above).
        unsafe {
            write_volatile(start as *mut u16, FAMILY_V6);
            write_volatile(start.add(2) as *mut u16, orig.port.to_be());
            write_volatile(start.add(4) as *mut u32, 0);
            write_volatile(start.add(8) as *mut u32, addr[0]);
            write_volatile(start.add(12) as *mut u32, addr[1]);
            write_volatile(start.add(16) as *mut u32, addr[2]);
            write_volatile(start.add(20) as *mut u32, addr[3]);
            write_volatile(start.add(24) as *mut u32, 0);
        }
        28
    };
    // Two separate volatile stores: merged optlen+retval stores are refused.
    // SAFETY: `optlen` and `retval` are writable 4-byte context fields.
    unsafe {
        write_volatile(addr_of_mut!((*so).optlen), written);
        write_volatile(addr_of_mut!((*so).retval), 0);
    }
    1
}

// ---------------------------------------------------------------------------
// sk_lookup: steer inbound connections to the pod's mesh listeners
// ---------------------------------------------------------------------------

#[sk_lookup]
pub fn mesh_sk_lookup(ctx: SkLookupContext) -> u32 {
    let lk = ctx.lookup;
    // SAFETY: readable 4-byte context fields.
    let (protocol, family, port) = unsafe {
        (
            read_volatile(addr_of!((*lk).protocol)),
            read_volatile(addr_of!((*lk).family)),
            read_volatile(addr_of!((*lk).local_port)),
        )
    };
    if protocol != IPPROTO_TCP {
        return SK_PASS;
    }
    // SAFETY: readable 4-byte context field.
    let ifindex = unsafe { read_volatile(addr_of!((*lk).ingress_ifindex)) };
    // Arrived on the loopback device: made inside the pod's netns by a
    // socket bound to lo (mesh-node's delivery to the app binds to lo for
    // this; a SYN to the pod's own IP from an unbound socket carries the
    // ifindex of the device the address is on, and is steered like any
    // other). Traffic from outside the pod is steered.
    if ifindex == LOOPBACK_IFINDEX {
        return SK_PASS;
    }
    let target = if port == u32::from(HBONE_PORT) {
        HBONE_PORT
    } else {
        INBOUND_PLAINTEXT_PORT
    };
    let key = if family == AF_INET {
        // SAFETY: readable 4-byte context field.
        let ip = unsafe { read_volatile(addr_of!((*lk).local_ip4)) };
        if is_loopback4(ip) {
            return SK_PASS;
        }
        ListenerKey {
            addr: [ip, 0, 0, 0],
            family: FAMILY_V4,
            port: target,
        }
    } else if family == AF_INET6 {
        // SAFETY: readable 4-byte context fields (one load per word).
        let addr = unsafe {
            [
                read_volatile(addr_of!((*lk).local_ip6[0])),
                read_volatile(addr_of!((*lk).local_ip6[1])),
                read_volatile(addr_of!((*lk).local_ip6[2])),
                read_volatile(addr_of!((*lk).local_ip6[3])),
            ]
        };
        if addr[0] == 0
            && addr[1] == 0
            && addr[2] == 0
            && addr[3] == u32::from_ne_bytes([0, 0, 0, 1])
        {
            return SK_PASS;
        }
        ListenerKey {
            addr,
            family: FAMILY_V6,
            port: target,
        }
    } else {
        return SK_PASS;
    };
    // This program is attached only to enrolled pods' netns. No mesh
    // listener for the address (mesh-node stopped or killed, its sockets
    // gone; or an address of the pod mesh-node does not serve) means the
    // connection is dropped, never handed to the app unauthenticated:
    // STRICT and authorization must not lapse while the proxy is away.
    // NO_REUSEPORT: exactly the socket mesh-node registered, never another
    // member of its SO_REUSEPORT group (a pod process running as the same
    // uid could join the group to take connections meant for mesh-node).
    match LISTENERS.redirect_sk_lookup(&ctx, key, BPF_SK_LOOKUP_F_NO_REUSEPORT.into()) {
        Ok(()) => SK_PASS,
        Err(_) => SK_DROP,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 11] = *b"Apache-2.0\0";
