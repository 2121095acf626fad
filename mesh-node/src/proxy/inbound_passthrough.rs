//! 15006: plaintext arriving at the pod, steered here by sk_lookup.
//! PeerAuthentication decides: STRICT refuses it, PERMISSIVE and DISABLE let
//! it reach the app (still subject to AuthorizationPolicy, with no identity).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tracing::{info, warn};

use super::delivery::{connect_app, delivery};
use super::{relay, AdmittedConnection, ConnectionTracker, PodContext, Transport};
use mesh_model::rbac::{authorize, peer_authentication_mode, ConnectionInfo, MtlsMode};

pub async fn run(ctx: Arc<PodContext>, listener: TcpListener) {
    let mut drain = ctx.drain.clone();
    loop {
        tokio::select! {
            _ = super::drained(&mut drain) => break,
            accepted = listener.accept() => match accepted {
                Ok((sock, peer)) => {
                    let ctx = ctx.clone();
                    tokio::spawn(async move { handle(&ctx, sock, peer).await });
                }
                Err(e) => {
                    warn!(pod = %ctx.name, error = %e, "plaintext accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
        }
    }
}

/// Closes with a reset, so the caller sees "connection refused/reset" at once.
fn refuse(sock: TcpStream) {
    let _ = sock.set_zero_linger();
    drop(sock);
}

async fn handle(ctx: &PodContext, mut sock: TcpStream, peer: SocketAddr) {
    let Ok(local) = sock.local_addr() else { return };
    // Before PeerAuthentication and policy: a mesh port is never relayed,
    // whatever they say.
    let target = match delivery(ctx.ip, local.port(), peer.ip(), &ctx.mesh_ports) {
        Ok(target) => target,
        Err(refused) => {
            ctx.metrics.deny();
            warn!(src.addr = %peer, dst.addr = %local, pod = %ctx.name, reason = %refused, "plaintext refused");
            refuse(sock);
            return;
        }
    };
    let state = ctx.state();
    let Some(workload) = state.workload_by_ip(ctx.ip) else {
        refuse(sock);
        return;
    };
    let mode = peer_authentication_mode(&state, workload, local.port());
    if mode == MtlsMode::Strict {
        ctx.metrics.deny();
        info!(src.addr = %peer, dst.addr = %local, pod = %ctx.name, "plaintext refused: PeerAuthentication STRICT");
        refuse(sock);
        return;
    }
    let decision = authorize(
        &state,
        &ConnectionInfo {
            src_identity: None,
            src_ip: peer.ip(),
            dst_workload: workload,
            dst_port: local.port(),
        },
    );
    if !decision.allowed {
        ctx.metrics.deny();
        info!(src.addr = %peer, dst.addr = %local, reason = %decision.reason, "plaintext connection denied by policy");
        refuse(sock);
        return;
    }
    let app = connect_app(&ctx.netns, &target).await;
    let mut app = match app {
        Ok(a) => a,
        Err(_) => {
            refuse(sock);
            return;
        }
    };
    let tracker = ConnectionTracker::new(ctx.metrics.clone());
    // Registered for as long as it is open: a config change that denies it
    // (a DENY, or STRICT on its port) closes it.
    let admitted = AdmittedConnection {
        transport: Transport::Plaintext,
        src_identity: None,
        src_addr: peer,
        dst_addr: local,
        dst_workload: state
            .workload_arc_by_ip(ctx.ip)
            .unwrap_or_else(|| Arc::new(workload.clone())),
    };
    let mut registered = match ctx.connections.register(admitted, &state) {
        Ok(g) => g,
        Err(revoked) => {
            ctx.metrics.deny();
            info!(src.addr = %peer, dst.addr = %local, reason = %revoked, "plaintext connection denied by policy");
            let _ = app.set_zero_linger();
            refuse(sock);
            return;
        }
    };
    let relayed = tokio::select! {
        r = relay(&mut sock, &mut app) => r,
        _ = registered.revoked() => {
            // The manager logged and counted it; both sides get a reset.
            let _ = app.set_zero_linger();
            refuse(sock);
            return;
        }
    };
    if let Ok((received, sent)) = relayed {
        tracker.bytes(sent, received);
        info!(
            src.addr = %peer, dst.addr = %local, mode = ?mode, sent, received,
            "inbound connection complete (plaintext)"
        );
    }
}
