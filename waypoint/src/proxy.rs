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

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::body::ProxyBody;
use crate::config::Config;
use crate::connector::Io;
use crate::engine::Waypoint;
use crate::layers;
use crate::peer::Peer;
use crate::telemetry::SourceInfo;

impl Waypoint {
    /// Accepts connections until the listener fails.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((s, peer)) => {
                    let _ = s.set_nodelay(true);
                    let me = self.clone();
                    tokio::spawn(me.serve_connection(s, peer));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Serves one downstream connection (a TCP stream, or an HBONE tunnel
    /// stream once terminated) from `peer`.
    pub async fn serve_connection<I: Io>(self: Arc<Self>, io: I, peer: SocketAddr) {
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
        let svc = service_fn(move |req: Request<Incoming>| {
            let me = self.clone();
            let peer = peer.clone();
            async move { Ok::<_, Infallible>(me.handle(req, &peer).await) }
        });
        if let Err(e) = auto::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(io), svc)
            .await
        {
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
