//! The pod's routing that brings the app's replies back to mesh-node.
//!
//! mesh-node delivers inbound traffic to the app from the caller's address
//! (see `proxy::delivery`), an address the pod does not own: left to the
//! pod's routes, the app's SYN-ACK to it would leave by eth0. So, in each
//! enrolled pod's netns (no iptables; ztunnel's in-pod mode uses iptables
//! CONNMARK for the same):
//!
//! * `net.ipv4.tcp_fwmark_accept = 1` (per netns, and for IPv6 too): a
//!   socket the app accepts takes the mark of the SYN, so every packet of the
//!   app's side of a delivered connection carries
//!   [`mesh_common::DELIVERY_MARK`], which mesh-node's delivery socket set;
//! * `net.ipv4.fwmark_reflect = 1` and `net.ipv6.fwmark_reflect = 1`: a
//!   packet the kernel answers on no socket's behalf (the RST to a delivery
//!   for a port no app listens on) carries the mark of what it answers, so
//!   the refusal reaches mesh-node at once instead of leaving by eth0 and
//!   leaving the delivery to time out;
//! * `fwmark DELIVERY_MARK lookup DELIVERY_TABLE` (IPv4 and IPv6), and in
//!   that table `local default dev lo`: those packets go to the local stack,
//!   where mesh-node's transparent socket takes them.
//!
//! Nothing else carries that mark (mesh-node's other sockets carry
//! `MESH_MARK`, connections from outside arrive unmarked), so the pod's own
//! traffic keeps its routes. Undone at un-enrolment.

use std::io::{self, Read, Write};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::route::{
    RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleHeader, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use super::PodNetns;
use mesh_common::{DELIVERY_MARK, DELIVERY_RULE_PRIORITY, DELIVERY_TABLE};

/// The per-netns sysctls turned on (see the module's doc).
const SYSCTLS: [&str; 3] = [
    "/proc/sys/net/ipv4/tcp_fwmark_accept",
    "/proc/sys/net/ipv4/fwmark_reflect",
    "/proc/sys/net/ipv6/fwmark_reflect",
];
/// The loopback device is ifindex 1 in every netns.
const LOOPBACK_IFINDEX: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum DeliveryRoutesError {
    #[error("entering the pod's netns: {0}")]
    Netns(#[source] io::Error),
    #[error("{path} in the pod's netns: {source}")]
    Sysctl {
        path: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("netlink socket in the pod's netns: {0}")]
    Socket(#[source] io::Error),
    #[error("{what} (IPv{family}) in the pod's netns: {source}")]
    Netlink {
        what: &'static str,
        family: u8,
        #[source]
        source: io::Error,
    },
}

/// What [`install`] changed, so [`remove`] puts back only that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstalledRoutes {
    /// Per entry of [`SYSCTLS`]: it was on before.
    sysctls_were_on: [bool; SYSCTLS.len()],
}

/// Installs the reply routing in the pod's netns. Idempotent: what is already
/// there (a mesh-node restart) is kept.
pub fn install(netns: &PodNetns) -> Result<InstalledRoutes, DeliveryRoutesError> {
    netns
        .run_in(|| {
            let mut were_on = [false; SYSCTLS.len()];
            for (path, was_on) in SYSCTLS.iter().zip(were_on.iter_mut()) {
                *was_on = read_sysctl(path)?;
                if !*was_on {
                    write_sysctl(path, true)?;
                }
            }
            let nl = Rtnl::open()?;
            for family in [Family::V4, Family::V6] {
                nl.request(family, Op::Add, Object::LocalRoute)?;
                nl.request(family, Op::Add, Object::MarkRule)?;
            }
            Ok(InstalledRoutes {
                sysctls_were_on: were_on,
            })
        })
        .map_err(DeliveryRoutesError::Netns)?
}

/// Removes what [`install`] added. What is already gone is not an error (the
/// pod, and its netns, may be gone too).
pub fn remove(netns: &PodNetns, installed: InstalledRoutes) -> Result<(), DeliveryRoutesError> {
    netns
        .run_in(|| {
            let nl = Rtnl::open()?;
            for family in [Family::V4, Family::V6] {
                nl.request(family, Op::Delete, Object::MarkRule)?;
                nl.request(family, Op::Delete, Object::LocalRoute)?;
            }
            for (path, was_on) in SYSCTLS.iter().zip(installed.sysctls_were_on) {
                if !was_on {
                    write_sysctl(path, false)?;
                }
            }
            Ok(())
        })
        .map_err(DeliveryRoutesError::Netns)?
}

fn read_sysctl(path: &'static str) -> Result<bool, DeliveryRoutesError> {
    let mut s = String::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_string(&mut s))
        .map_err(|source| DeliveryRoutesError::Sysctl { path, source })?;
    Ok(s.trim() != "0")
}

fn write_sysctl(path: &'static str, on: bool) -> Result<(), DeliveryRoutesError> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(if on { b"1\n" } else { b"0\n" }))
        .map_err(|source| DeliveryRoutesError::Sysctl { path, source })
}

#[derive(Debug, Clone, Copy)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn address_family(self) -> AddressFamily {
        match self {
            Family::V4 => AddressFamily::Inet,
            Family::V6 => AddressFamily::Inet6,
        }
    }

    fn number(self) -> u8 {
        match self {
            Family::V4 => 4,
            Family::V6 => 6,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Delete,
}

#[derive(Debug, Clone, Copy)]
enum Object {
    /// `local default dev lo table DELIVERY_TABLE`
    LocalRoute,
    /// `fwmark DELIVERY_MARK lookup DELIVERY_TABLE pref DELIVERY_RULE_PRIORITY`
    MarkRule,
}

impl Object {
    fn what(self, op: Op) -> &'static str {
        match (self, op) {
            (Object::LocalRoute, Op::Add) => "adding the delivery table's local default route",
            (Object::LocalRoute, Op::Delete) => "deleting the delivery table's local default route",
            (Object::MarkRule, Op::Add) => "adding the delivery mark's routing rule",
            (Object::MarkRule, Op::Delete) => "deleting the delivery mark's routing rule",
        }
    }

    fn message(self, family: Family, op: Op) -> RouteNetlinkMessage {
        match self {
            Object::LocalRoute => {
                let header = RouteHeader {
                    address_family: family.address_family(),
                    // Tables above 255 go in RTA_TABLE; the header's byte says "see it".
                    table: RouteHeader::RT_TABLE_UNSPEC,
                    protocol: RouteProtocol::Static,
                    scope: RouteScope::Host,
                    kind: RouteType::Local,
                    ..Default::default()
                };
                let mut msg = RouteMessage::default();
                msg.header = header;
                msg.attributes = vec![
                    RouteAttribute::Table(DELIVERY_TABLE),
                    RouteAttribute::Oif(LOOPBACK_IFINDEX),
                ];
                match op {
                    Op::Add => RouteNetlinkMessage::NewRoute(msg),
                    Op::Delete => RouteNetlinkMessage::DelRoute(msg),
                }
            }
            Object::MarkRule => {
                let header = RuleHeader {
                    family: family.address_family(),
                    action: RuleAction::ToTable,
                    ..Default::default()
                };
                let mut msg = RuleMessage::default();
                msg.header = header;
                msg.attributes = vec![
                    RuleAttribute::Priority(DELIVERY_RULE_PRIORITY),
                    RuleAttribute::FwMark(DELIVERY_MARK),
                    RuleAttribute::FwMask(u32::MAX),
                    RuleAttribute::Table(DELIVERY_TABLE),
                ];
                match op {
                    Op::Add => RouteNetlinkMessage::NewRule(msg),
                    Op::Delete => RouteNetlinkMessage::DelRule(msg),
                }
            }
        }
    }
}

/// A route netlink socket in the netns of the thread that opened it.
struct Rtnl(Socket);

impl Rtnl {
    fn open() -> Result<Self, DeliveryRoutesError> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(DeliveryRoutesError::Socket)?;
        sock.bind_auto().map_err(DeliveryRoutesError::Socket)?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(DeliveryRoutesError::Socket)?;
        Ok(Rtnl(sock))
    }

    /// Sends one request and waits for its acknowledgement. An add of what
    /// exists, or a delete of what is gone, counts as done.
    fn request(&self, family: Family, op: Op, object: Object) -> Result<(), DeliveryRoutesError> {
        let err = |source| DeliveryRoutesError::Netlink {
            what: object.what(op),
            family: family.number(),
            source,
        };
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK;
        if op == Op::Add {
            header.flags |= NLM_F_CREATE | NLM_F_EXCL;
        }
        let mut msg = NetlinkMessage::new(
            header,
            NetlinkPayload::InnerMessage(object.message(family, op)),
        );
        msg.finalize();
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut buf);
        self.0.send(&buf, 0).map_err(err)?;
        match self.ack().map_err(err) {
            Err(DeliveryRoutesError::Netlink { source, .. })
                if already_done(op, source.raw_os_error()) =>
            {
                Ok(())
            }
            other => other,
        }
    }

    /// The kernel's answer to the one request in flight.
    fn ack(&self) -> io::Result<()> {
        let mut buf = vec![0u8; 8192];
        loop {
            let n = self.0.recv(&mut &mut buf[..], 0)?;
            let mut offset = 0;
            while offset < n {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[offset..n])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = msg.header.length as usize;
                if let NetlinkPayload::Error(e) = msg.payload {
                    return match e.code {
                        None => Ok(()),
                        Some(_) => Err(e.to_io()),
                    };
                }
                if len == 0 {
                    break;
                }
                offset += len;
            }
        }
    }
}

fn already_done(op: Op, errno: Option<i32>) -> bool {
    match op {
        Op::Add => errno == Some(libc::EEXIST),
        Op::Delete => matches!(errno, Some(libc::ENOENT) | Some(libc::ESRCH)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_add_of_what_exists_and_a_delete_of_what_is_gone_are_done() {
        assert!(already_done(Op::Add, Some(libc::EEXIST)));
        assert!(!already_done(Op::Add, Some(libc::EPERM)));
        assert!(already_done(Op::Delete, Some(libc::ENOENT)));
        assert!(already_done(Op::Delete, Some(libc::ESRCH)));
        assert!(!already_done(Op::Delete, Some(libc::EPERM)));
    }
}
