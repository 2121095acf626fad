//! Where inbound traffic is delivered inside the pod, and what never is.
//!
//! A port mesh-node itself listens on in the pod (15001, 15006, 15008, and
//! whatever else enrolment opens) is never a delivery target: delivering to
//! it hands the connection back to mesh-node's own listener, which delivers
//! it again, without end (one plaintext connection to `<pod-ip>:15006` used
//! to open thousands of descriptors within a second). Linkerd refuses the
//! same way ("PreventLoop"); refusing is the only answer, since no app can
//! own a port mesh-node holds.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Why an inbound connection has no delivery target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryRefused {
    #[error("port {0} is one of mesh-node's own listeners in the pod: a mesh port is not a delivery target")]
    MeshPort(u16),
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

/// The loopback address of the pod's own family.
fn loopback_for(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
    }
}

/// Where a connection for `port` of the pod at `pod_ip` is delivered, inside
/// the pod's netns; a mesh port is refused.
pub fn delivery_target(
    pod_ip: IpAddr,
    port: u16,
    mesh_ports: &MeshPorts,
) -> Result<SocketAddr, DeliveryRefused> {
    if mesh_ports.contains(port) {
        return Err(DeliveryRefused::MeshPort(port));
    }
    Ok(SocketAddr::new(loopback_for(pod_ip), port))
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

    #[test]
    fn every_mesh_port_is_refused() {
        let ip: IpAddr = "10.10.2.2".parse().unwrap();
        for p in [15001, 15006, 15008] {
            assert_eq!(
                delivery_target(ip, p, &ports()),
                Err(DeliveryRefused::MeshPort(p))
            );
        }
    }

    #[test]
    fn an_app_port_is_delivered_on_the_pod_loopback_of_its_family() {
        let v4: IpAddr = "10.10.2.2".parse().unwrap();
        let v6: IpAddr = "fd00::2".parse().unwrap();
        assert_eq!(
            delivery_target(v4, 8080, &ports()),
            Ok("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(
            delivery_target(v6, 8080, &ports()),
            Ok("[::1]:8080".parse().unwrap())
        );
    }
}
