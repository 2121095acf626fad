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
        bpf_sock, bpf_sock_addr, sk_action::SK_PASS, BPF_ANY, BPF_F_INGRESS,
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB,
    },
    helpers::generated::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    macros::{cgroup_sock_addr, cgroup_sockopt, map, sk_lookup, sk_msg, sock_ops},
    maps::{Array, HashMap, LruHashMap, SockHash},
    programs::{SkLookupContext, SkMsgContext, SockAddrContext, SockOpsContext, SockoptContext},
    EbpfContext,
};
use aya_log_ebpf::{debug, warn};
use mesh_common::{
    ListenerKey, NetnsPortKey, OrigDst, PodInfo, SockPairKey, CONFIG_FAST_PATH, CONFIG_LEN,
    FAMILY_V4, FAMILY_V6, HBONE_PORT, INBOUND_PLAINTEXT_PORT, MAX_CONNS, MAX_LISTENERS, MAX_PODS,
    DELIVERY_MARK, MESH_MARK, OUTBOUND_PORT, SO_ORIGINAL_DST,
};

const SOCK_STREAM: u32 = 1;
const IPPROTO_TCP: u32 = 6;
const SOL_IP: i32 = 0;
const SOL_IPV6: i32 = 41;
const AF_INET: u32 = FAMILY_V4 as u32;
const AF_INET6: u32 = FAMILY_V6 as u32;

/// The loopback device's ifindex, the same in every netns.
const LOOPBACK_IFINDEX: u32 = 1;
/// 127.0.0.1 as the kernel stores it (network order in memory).
const LOOPBACK4: u32 = u32::from_ne_bytes([127, 0, 0, 1]);
/// Word 2 of a v4-mapped IPv6 address (`::ffff:a.b.c.d`).
const V4_MAPPED_WORD2: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

#[map]
static ENROLLED: HashMap<u64, PodInfo> = HashMap::with_max_entries(MAX_PODS, 0);

#[map]
static ORIG_DST_COOKIE: LruHashMap<u64, OrigDst> = LruHashMap::with_max_entries(MAX_CONNS, 0);

#[map]
static ORIG_DST_PORT: LruHashMap<NetnsPortKey, OrigDst> =
    LruHashMap::with_max_entries(MAX_CONNS, 0);

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
/// it is TCP, and it is not one of mesh-node's own (marked) sockets.
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
    // SAFETY: `sk` is a kernel socket pointer; `mark` is a readable 4-byte field.
    let mark = unsafe { read_volatile(addr_of!((*sk).mark)) };
    // DELIVERY_MARK: mesh-node's delivery to the app in the pod.
    if mark == MESH_MARK || mark == DELIVERY_MARK {
        return false;
    }
    // SAFETY: the helper takes the program's context pointer.
    let netns = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    ENROLLED.get_ptr(netns).is_some()
}

/// Remembers `orig` under the socket's cookie for sockops to pick up.
#[inline(always)]
fn remember(ctx: &SockAddrContext, orig: &OrigDst) -> bool {
    // SAFETY: the helper takes the program's context pointer.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    if let Err(e) = ORIG_DST_COOKIE.insert(cookie, orig, BPF_ANY.into()) {
        warn!(ctx, "connect: ORIG_DST_COOKIE insert failed: {}", e);
        return false;
    }
    true
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
    if !remember(&ctx, &orig) {
        return 1;
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
    if !remember(&ctx, &orig) {
        return 1;
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
// sockops: publish original destinations, fill the fast-path sockhash
// ---------------------------------------------------------------------------

#[sock_ops]
pub fn mesh_sockops(ctx: SockOpsContext) -> u32 {
    let op = ctx.op();
    if op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB && op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB {
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

    if op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB {
        // SAFETY: the helper takes the program's context pointer.
        let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
        if let Some(orig) = ORIG_DST_COOKIE.get_ptr(cookie) {
            // SAFETY: a map value pointer returned by the kernel, valid for this program run.
            let orig = unsafe { *orig };
            let key = NetnsPortKey::new(netns, local_port);
            if let Err(e) = ORIG_DST_PORT.insert(key, orig, BPF_ANY.into()) {
                warn!(&ctx, "sockops: ORIG_DST_PORT insert failed: {}", e);
            }
            let _ = ORIG_DST_COOKIE.remove(cookie);
        }
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
    // SAFETY: `dst_port` is a readable 2-byte, network-order field of bpf_sock.
    let peer_port = u16::from_be(unsafe { read_volatile(addr_of!((*sk).dst_port)) });
    // SAFETY: the helper takes the program's context pointer.
    let netns = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    let Some(orig) = ORIG_DST_PORT.get_ptr(NetnsPortKey::new(netns, peer_port)) else {
        return 1;
    };
    // SAFETY: a map value pointer returned by the kernel, valid for this run.
    let orig = unsafe { *orig };
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
    // SAFETY: a readable 4-byte context field (Linux 5.17+).
    let ingress = unsafe { read_volatile(addr_of!((*lk).ingress_ifindex)) };
    // Ingress on the loopback device: mesh-node's own delivery to
    // `<pod-ip>:<port>` (from the caller's address; its socket is bound to lo,
    // since a SYN to the pod's own address otherwise carries the ifindex of
    // the device that address is on), which must reach the app, not come back
    // to mesh-node's listeners. Other pods' and nodes' traffic is steered.
    if protocol != IPPROTO_TCP || ingress == LOOPBACK_IFINDEX {
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
    // No listener for this address: let the normal lookup run.
    let _ = LISTENERS.redirect_sk_lookup(&ctx, key, 0);
    SK_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 11] = *b"Apache-2.0\0";
