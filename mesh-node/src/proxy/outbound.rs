//! 15001: connections the kernel captured from a pod's apps.
//!
//! The original destination comes back through `SO_ORIGINAL_DST` (answered
//! by the getsockopt program). A destination in the mesh is reached over
//! HBONE with the pod's identity; anything else is passed through as plain
//! TCP from the pod's own netns, as if the mesh were not there.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use super::{baggage, relay, ConnectionTracker, PodContext};
use mesh_hbone::{ConnectRequest, HboneError};
use mesh_identity::Identity;

#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("no original destination for the captured connection: {0}")]
    OriginalDst(std::io::Error),
    #[error("HBONE to {target} failed: {source}")]
    Hbone {
        target: SocketAddr,
        #[source]
        source: HboneError,
    },
    #[error("passthrough connect to {target} failed: {source}")]
    Passthrough {
        target: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("relay: {0}")]
    Relay(std::io::Error),
}

/// The accept loop of one pod's outbound listener; ends when draining.
pub async fn run(ctx: Arc<PodContext>, listener: TcpListener) {
    let mut drain = ctx.drain.clone();
    loop {
        tokio::select! {
            _ = super::drained(&mut drain) => break,
            accepted = listener.accept() => match accepted {
                Ok((sock, peer)) => {
                    let ctx = ctx.clone();
                    tokio::spawn(async move {
                        if let Err(e) = handle(&ctx, sock, peer).await {
                            warn!(pod = %ctx.name, error = %e, "outbound connection failed");
                        }
                    });
                }
                Err(e) => {
                    warn!(pod = %ctx.name, error = %e, "outbound accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
        }
    }
}

async fn handle(
    ctx: &PodContext,
    mut app: TcpStream,
    peer: SocketAddr,
) -> Result<(), OutboundError> {
    let orig = crate::ebpf::original_dst(&app).map_err(OutboundError::OriginalDst)?;
    let _ = app.set_nodelay(true);
    let tracker = ConnectionTracker::new(ctx.metrics.clone());
    let state = ctx.state();
    // A service whose namespace uses a waypoint: the tunnel goes to the
    // waypoint, asking for the service VIP:port; the waypoint picks the
    // endpoint. The waypoint itself is never sent to its own waypoint.
    let waypoint = state.service_by_vip(orig).and_then(|svc| {
        state
            .waypoint_for(svc)
            .filter(|wp| wp.ip != ctx.ip)
            .map(|wp| (svc.hostname.clone(), wp))
    });
    if let Some((service_host, wp)) = waypoint {
        let hop = HboneHop {
            identity: state.identity_of(&wp),
            hbone_ip: wp.ip,
            target: orig,
            service_host: Some(service_host),
            waypoint: Some(wp.key()),
        };
        return via_hbone(ctx, &mut app, peer, hop, &tracker).await;
    }
    let upstream = state.resolve(orig);
    match upstream {
        Some(up) if state.is_ambient(&up.workload) => {
            let hop = HboneHop {
                identity: up.identity.clone(),
                hbone_ip: up.target.ip(),
                target: up.target,
                service_host: up.service_host.clone(),
                waypoint: None,
            };
            via_hbone(ctx, &mut app, peer, hop, &tracker).await?;
        }
        other => {
            // Not in the mesh: the endpoint a service picked, or the address as asked.
            let target = other.map(|u| u.target).unwrap_or(orig);
            let sock = ctx
                .netns
                .tcp_socket(target)
                .map_err(|source| OutboundError::Passthrough { target, source })?;
            let mut server = sock
                .connect(target)
                .await
                .map_err(|source| OutboundError::Passthrough { target, source })?;
            let (sent, received) = relay(&mut app, &mut server)
                .await
                .map_err(OutboundError::Relay)?;
            tracker.bytes(sent, received);
            debug!(pod = %ctx.name, dst = %target, sent, received, "outbound passthrough complete");
        }
    }
    Ok(())
}

/// Where one outbound connection is tunnelled: an endpoint, or the
/// waypoint of the service asked for.
struct HboneHop {
    identity: Identity,
    /// Whose `:15008` the tunnel goes to.
    hbone_ip: IpAddr,
    /// The `CONNECT` authority: the endpoint, or the service VIP:port when
    /// the tunnel goes to a waypoint.
    target: SocketAddr,
    service_host: Option<String>,
    /// `namespace/name` of the waypoint, when there is one.
    waypoint: Option<String>,
}

async fn via_hbone(
    ctx: &PodContext,
    app: &mut TcpStream,
    peer: SocketAddr,
    hop: HboneHop,
    tracker: &ConnectionTracker,
) -> Result<(), OutboundError> {
    let req = ConnectRequest {
        dst_identity: hop.identity.clone(),
        hbone_addr: SocketAddr::new(hop.hbone_ip, mesh_common::HBONE_PORT),
        target: hop.target,
        forwarded_for: SocketAddr::new(ctx.ip, peer.port()),
        service_host: hop.service_host.clone(),
        baggage: Some(baggage(ctx)),
        traceparent: None,
    };
    let mut tunnel = ctx
        .hbone
        .connect(req)
        .await
        .map_err(|source| OutboundError::Hbone {
            target: hop.target,
            source,
        })?;
    debug!(pod = %ctx.name, dst = %hop.target, identity = %hop.identity,
        waypoint = hop.waypoint.as_deref().unwrap_or("-"), "outbound via HBONE");
    let (sent, received) = relay(app, &mut tunnel)
        .await
        .map_err(OutboundError::Relay)?;
    tracker.bytes(sent, received);
    match &hop.waypoint {
        Some(wp) => info!(
            src.identity = %ctx.identity,
            dst.identity = %hop.identity,
            dst.addr = %hop.target,
            dst.service = hop.service_host.as_deref().unwrap_or("-"),
            waypoint = %wp,
            sent, received,
            "outbound connection complete (HBONE via waypoint)"
        ),
        None => info!(
            src.identity = %ctx.identity,
            dst.identity = %hop.identity,
            dst.addr = %hop.target,
            dst.service = hop.service_host.as_deref().unwrap_or("-"),
            sent, received,
            "outbound connection complete (HBONE)"
        ),
    }
    Ok(())
}
