//! 15008: HBONE tunnels from other proxies. TLS is terminated with the pod's
//! certificate, the caller's SPIFFE identity is checked against L4
//! AuthorizationPolicy, and each CONNECT stream is delivered to the app on
//! the pod at its own address and original port, from the caller's address.

use std::net::SocketAddr;
use std::sync::Arc;

use http::StatusCode;
use tokio::net::{TcpListener, TcpStream};
use tracing::{info, warn};

use super::delivery::{connect_app, delivery};
use super::{relay, AdmittedConnection, ConnectionTracker, PodContext, Transport};
use mesh_hbone::{serve_connection, InboundTunnel};
use mesh_model::rbac::{authorize, ConnectionInfo};

/// The accept loop of one pod's HBONE listener; ends when draining (open
/// tunnels get an HTTP/2 GOAWAY and finish their streams).
pub async fn run(ctx: Arc<PodContext>, listener: TcpListener) {
    let mut drain = ctx.drain.clone();
    loop {
        tokio::select! {
            _ = super::drained(&mut drain) => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let ctx = ctx.clone();
                    tokio::spawn(async move { serve(ctx, tcp, peer).await });
                }
                Err(e) => {
                    warn!(pod = %ctx.name, error = %e, "HBONE accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
        }
    }
}

async fn serve(ctx: Arc<PodContext>, tcp: TcpStream, peer: SocketAddr) {
    let _ = tcp.set_nodelay(true);
    let tls = match ctx.certs.server_config(&ctx.identity) {
        Ok(c) => c,
        Err(e) => {
            warn!(pod = %ctx.name, error = %e, "no certificate to serve HBONE with");
            return;
        }
    };
    let c2 = ctx.clone();
    let on_tunnel = move |t: InboundTunnel| {
        let ctx = c2.clone();
        tokio::spawn(async move { tunnel(&ctx, t, peer).await });
    };
    if let Err(e) = serve_connection(tcp, tls, ctx.drain.clone(), on_tunnel).await {
        warn!(pod = %ctx.name, peer = %peer, error = %e, "HBONE connection ended with an error");
    }
}

async fn tunnel(ctx: &PodContext, t: InboundTunnel, peer: SocketAddr) {
    if t.target.ip() != ctx.ip {
        warn!(pod = %ctx.name, target = %t.target, "tunnel for another address refused");
        t.reject(StatusCode::BAD_REQUEST);
        return;
    }
    // Before policy: no policy can make a mesh port a valid destination.
    let target = match delivery(ctx.ip, t.target.port(), peer.ip(), &ctx.mesh_ports) {
        Ok(target) => target,
        Err(refused) => {
            ctx.metrics.deny();
            warn!(
                pod = %ctx.name, src.identity = %t.peer, src.addr = %peer, dst.addr = %t.target,
                reason = %refused, "tunnel refused"
            );
            t.reject(StatusCode::BAD_REQUEST);
            return;
        }
    };
    let state = ctx.state();
    let Some(workload) = state.workload_by_ip(ctx.ip) else {
        t.reject(StatusCode::SERVICE_UNAVAILABLE);
        return;
    };
    let decision = authorize(
        &state,
        &ConnectionInfo {
            src_identity: Some(t.peer.clone()),
            src_ip: peer.ip(),
            dst_workload: workload,
            dst_port: t.target.port(),
        },
    );
    if !decision.allowed {
        ctx.metrics.deny();
        info!(
            src.identity = %t.peer, dst.identity = %ctx.identity, dst.addr = %t.target,
            reason = %decision.reason, "connection denied by policy"
        );
        t.reject(StatusCode::UNAUTHORIZED);
        return;
    }
    let app = connect_app(&ctx.netns, &target).await;
    let mut app = match app {
        Ok(a) => a,
        Err(e) => {
            warn!(pod = %ctx.name, target = %t.target, error = %e, "app refused the connection");
            t.reject(StatusCode::SERVICE_UNAVAILABLE);
            return;
        }
    };
    let peer_id = t.peer.clone();
    let dst = t.target;
    let tracker = ConnectionTracker::new(ctx.metrics.clone());
    // Registered for as long as it is open: a config change that denies it
    // closes it.
    let admitted = AdmittedConnection {
        transport: Transport::Hbone,
        src_identity: Some(peer_id.clone()),
        src_addr: peer,
        dst_addr: dst,
        dst_workload: state
            .workload_arc_by_ip(ctx.ip)
            .unwrap_or_else(|| Arc::new(workload.clone())),
    };
    let mut registered = match ctx.connections.register(admitted, &state) {
        Ok(g) => g,
        Err(revoked) => {
            ctx.metrics.deny();
            info!(
                src.identity = %peer_id, dst.identity = %ctx.identity, dst.addr = %dst,
                reason = %revoked, "connection denied by policy"
            );
            t.reject(StatusCode::UNAUTHORIZED);
            return;
        }
    };
    let mut stream = match t.accept() {
        Ok(s) => s,
        Err(e) => {
            warn!(pod = %ctx.name, error = %e, "accepting tunnel failed");
            return;
        }
    };
    let relayed = tokio::select! {
        r = relay(&mut stream, &mut app) => r,
        _ = registered.revoked() => {
            // The manager logged and counted it. Dropping the stream
            // unfinished resets it (RST_STREAM); the app gets a reset too.
            let _ = app.set_zero_linger();
            return;
        }
    };
    match relayed {
        Ok((received, sent)) => {
            tracker.bytes(sent, received);
            info!(
                src.identity = %peer_id, dst.identity = %ctx.identity, dst.addr = %dst,
                policy = %decision.reason, sent, received,
                "inbound connection complete (HBONE, mTLS)"
            );
        }
        // The source identity names the peer that reset the tunnel.
        Err(e) => {
            warn!(pod = %ctx.name, src.identity = %peer_id, error = %e, "inbound relay failed")
        }
    }
}
