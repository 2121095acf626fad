//! Where inbound traffic is delivered inside the pod, and what never is.
//!
//! A port mesh-node itself listens on in the pod (15001, 15006, 15008, and
//! whatever else enrolment opens) is never a delivery target: delivering to
//! it hands the connection back to mesh-node's own listener, which delivers
//! it again, without end (one plaintext connection to `<pod-ip>:15006` used
//! to open thousands of descriptors within a second). Linkerd refuses the
//! same way ("PreventLoop"); refusing is the only answer, since no app can
//! own a port mesh-node holds.
//!
//! Everything else is delivered as ztunnel's in-pod mode does: to the pod's
//! own address `<pod-ip>:<port>` (so an app bound only to loopback stays
//! private to its pod, as in Istio since 1.10), from the caller's address (so
//! the app's `accept()`, access logs and IP allow-lists see the real caller,
//! not 127.0.0.1). The caller's address is the peer of the connection that
//! reached mesh-node: for PERMISSIVE plaintext the caller itself, for HBONE
//! the proxy that opened the tunnel (mesh-node opens those inside the calling
//! pod's netns, so it is the calling pod's IP; through a waypoint or gateway
//! it is the waypoint's). The `forwarded: for=` header of a CONNECT is not
//! used for it: any peer with a mesh certificate could write any address
//! there and make the app see a source it does not own. ztunnel also binds
//! the outer peer address.

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::net::TcpStream;

use crate::inpod::PodNetns;

/// Why an inbound connection has no delivery target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryRefused {
    #[error("port {0} is one of mesh-node's own listeners in the pod: a mesh port is not a delivery target")]
    MeshPort(u16),
    #[error("caller {caller} is not of the family of the pod address {pod}: it cannot be the source of the delivery")]
    FamilyMismatch { caller: IpAddr, pod: IpAddr },
}

/// Where, and from which address, one inbound connection is delivered inside
/// the pod's netns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// `<pod-ip>:<port>`: what the app listens on.
    pub target: SocketAddr,
    /// The caller's address, which the app sees as its peer.
    pub source: IpAddr,
}

/// The ports mesh-node listens on inside one pod, read from the listeners
/// enrolment opened (so a listener added later is covered by construction).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeshPorts(BTreeSet<u16>);

impl MeshPorts {
    pub fn new(ports: impl IntoIterator<Item = u16>) -> Self {
        MeshPorts(ports.into_iter().collect())
    }

    pub fn contains(&self, port: u16) -> bool {
        self.0.contains(&port)
    }
}

/// An IPv4 address seen by a dual-stack socket as `::ffff:a.b.c.d` is the
/// IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// Where a connection for `port` of the pod at `pod_ip`, from `caller`, is
/// delivered inside the pod's netns; a mesh port is refused, and so is a
/// caller the delivery socket could not bind (another family).
pub fn delivery(
    pod_ip: IpAddr,
    port: u16,
    caller: IpAddr,
    mesh_ports: &MeshPorts,
) -> Result<Delivery, DeliveryRefused> {
    if mesh_ports.contains(port) {
        return Err(DeliveryRefused::MeshPort(port));
    }
    let (pod, source) = (canonical(pod_ip), canonical(caller));
    if pod.is_ipv4() != source.is_ipv4() {
        return Err(DeliveryRefused::FamilyMismatch {
            caller,
            pod: pod_ip,
        });
    }
    Ok(Delivery {
        target: SocketAddr::new(pod, port),
        source,
    })
}

/// Opens the connection to the app: in the pod's netns, from the caller's
/// address (see [`PodNetns::delivery_socket`] for the socket options).
pub async fn connect_app(netns: &PodNetns, to: &Delivery) -> io::Result<TcpStream> {
    netns
        .delivery_socket(to.source, to.target)?
        .connect(to.target)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports() -> MeshPorts {
        MeshPorts::new([
            mesh_common::OUTBOUND_PORT,
            mesh_common::INBOUND_PLAINTEXT_PORT,
            mesh_common::HBONE_PORT,
        ])
    }

    fn caller() -> IpAddr {
        "10.10.1.7".parse().unwrap()
    }

    #[test]
    fn every_mesh_port_is_refused() {
        let ip: IpAddr = "10.10.2.2".parse().unwrap();
        for p in [15001, 15006, 15008] {
            assert_eq!(
                delivery(ip, p, caller(), &ports()),
                Err(DeliveryRefused::MeshPort(p))
            );
        }
    }

    #[test]
    fn an_app_port_is_delivered_to_the_pod_address_from_the_caller() {
        let v4: IpAddr = "10.10.2.2".parse().unwrap();
        let v6: IpAddr = "fd00::2".parse().unwrap();
        assert_eq!(
            delivery(v4, 8080, caller(), &ports()),
            Ok(Delivery {
                target: "10.10.2.2:8080".parse().unwrap(),
                source: caller(),
            })
        );
        let caller6: IpAddr = "fd00::7".parse().unwrap();
        assert_eq!(
            delivery(v6, 8080, caller6, &ports()),
            Ok(Delivery {
                target: "[fd00::2]:8080".parse().unwrap(),
                source: caller6,
            })
        );
    }

    #[test]
    fn never_loopback_whatever_the_caller() {
        let v4: IpAddr = "10.10.2.2".parse().unwrap();
        for c in ["127.0.0.1", "10.10.2.2", "10.99.0.1"] {
            let d = delivery(v4, 80, c.parse().unwrap(), &ports()).unwrap();
            assert!(!d.target.ip().is_loopback(), "{d:?}");
            assert_eq!(d.source, c.parse::<IpAddr>().unwrap());
        }
    }

    #[test]
    fn a_v4_mapped_caller_is_its_v4_address() {
        let v4: IpAddr = "10.10.2.2".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.10.1.7".parse().unwrap();
        assert_eq!(delivery(v4, 80, mapped, &ports()).unwrap().source, caller());
    }

    #[test]
    fn a_caller_of_another_family_is_refused() {
        let v4: IpAddr = "10.10.2.2".parse().unwrap();
        let c6: IpAddr = "fd00::7".parse().unwrap();
        assert_eq!(
            delivery(v4, 80, c6, &ports()),
            Err(DeliveryRefused::FamilyMismatch {
                caller: c6,
                pod: v4
            })
        );
        assert!(delivery(c6, 80, v4, &ports()).is_err());
    }
}
