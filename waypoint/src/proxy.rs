//! The HTTP proxy: a hyper server (HTTP/1.1 and HTTP/2, negotiated per
//! connection) that runs each request through the [`layers`] of the
//! [`Waypoint`] engine.
//!
//! Local replies follow Envoy's: `404` no route, `503 no healthy
//! upstream`, `503` with `x-envoy-overloaded: true` on circuit-breaker
//! overflow, `503 upstream connect error or disconnect/reset before
//! headers`, `504 upstream request timeout`.
//!
//! [`layers`]: crate::layers

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::net::TcpListener;

use crate::body::ProxyBody;
use crate::config::Config;
use crate::connector::Io;
use crate::engine::Waypoint;
use crate::layers;
use crate::limits::{serve_http, ConnState, ConnectionTracker, ListenerStats};
use crate::peer::Peer;
use crate::telemetry::SourceInfo;

impl Waypoint {
    /// Accepts connections until the listener fails, at most
    /// [`Limits::max_connections`] open (see [`crate::limits`]).
    ///
    /// [`Limits::max_connections`]: crate::limits::Limits::max_connections
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        let tracker = ConnectionTracker::new(
            self.options.limits.max_connections,
            self.telemetry.limits().listener("http"),
        );
        loop {
            match listener.accept().await {
                Ok((s, peer)) => {
                    // Over the cap with every connection busy: closed at once.
                    let Some(slot) = tracker.admit() else {
                        continue;
                    };
                    let _ = s.set_nodelay(true);
                    let me = self.clone();
                    let stats = tracker.stats().clone();
                    tokio::spawn(async move {
                        me.serve_tracked(s, peer, slot.state.clone(), &stats).await;
                        drop(slot);
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Serves one downstream connection (a TCP stream, or an HBONE tunnel
    /// stream once terminated) from `peer`, on a connection of its own.
    pub async fn serve_connection<I: Io>(self: Arc<Self>, io: I, peer: SocketAddr) {
        self.serve_tracked(io, peer, ConnState::new(), &ListenerStats::default())
            .await
    }

    /// [`Waypoint::serve_connection`] under the timers of `state`, counted
    /// in `stats`.
    pub async fn serve_tracked<I: Io>(
        self: Arc<Self>,
        io: I,
        peer: SocketAddr,
        state: Arc<ConnState>,
        stats: &ListenerStats,
    ) {
        let labels = self.discovery.source_labels(peer.ip());
        let peer = Arc::new(Peer {
            addr: peer,
            identity: None,
            // Plain TCP: no mTLS.
            source: SourceInfo::new(
                self.discovery.workload(peer.ip()).as_deref(),
                &labels,
                false,
            ),
            labels,
        });
        let limits = self.options.limits.clone();
        let handle = move |req: Request<Incoming>| {
            let me = self.clone();
            let peer = peer.clone();
            async move { me.handle(req, &peer).await }
        };
        if let Err(e) = serve_http(io, state, &limits, stats, handle).await {
            tracing::debug!(error = %e, "downstream connection ended");
        }
    }

    /// Handles one request; records its metrics and access log once the
    /// response head is known.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: &Peer,
    ) -> Response<ProxyBody> {
        let cfg = self.config();
        layers::handle(&self, req, peer, &cfg).await
    }

    /// Like [`Waypoint::handle`] under `cfg` instead of the waypoint's own
    /// config: the gateway's listeners share one engine (pools, outlier
    /// state, metrics) but each has its own routes and policies. Clusters
    /// still resolve under the waypoint's own config.
    pub async fn handle_with(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: &Peer,
        cfg: Arc<Config>,
    ) -> Response<ProxyBody> {
        layers::handle(&self, req, peer, &cfg).await
    }
}
