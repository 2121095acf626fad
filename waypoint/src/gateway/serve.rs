//! Serving a gateway: each listener checks the host against its servers,
//! redirects to HTTPS where a server says so, and hands the rest to the
//! engine shared by every listener, with the listener's own routes and
//! policies.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::uri::{Scheme, Uri};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use super::servers::{best_server, GatewayServer, Listener, ListenerProtocol};
use crate::body::{local_reply, ProxyBody};
use crate::config::Config;
use crate::connector::{Connector, Io};
use crate::discovery::Discovery;
use crate::engine::Waypoint;
use crate::limits::{serve_http, ConnState, ConnectionTracker, Limits, ListenerStats};
use crate::peer::Peer;
use crate::routes::split_host_port;

/// Resolves once `drain` is true (or its sender is gone); the borrow of
/// the value ends inside, so the future stays `Send`.
async fn drained(drain: &mut watch::Receiver<bool>) {
    let _ = drain.wait_for(|d| *d).await.map(|_| ());
}

/// A listener ready to serve: its servers, the engine with its routes, and
/// the TLS acceptor of an HTTPS port.
pub struct ListenerService {
    pub port: u16,
    pub protocol: ListenerProtocol,
    servers: Vec<GatewayServer>,
    /// This port's routes and the policies selecting the gateway.
    config: Arc<Config>,
    /// The engine, shared by the listeners of a [`Gateway`].
    waypoint: Arc<Waypoint>,
    discovery: Arc<dyn Discovery>,
    tls: Option<TlsAcceptor>,
    /// How long a client may take to complete the TLS handshake.
    tls_handshake_timeout: Duration,
    /// Header and idle timeouts, connection and stream caps (the body
    /// budget is the engine's).
    limits: Limits,
}

/// A TLS client that opens TCP and never finishes its handshake holds a
/// connection and a task; it is cut after this. Envoy bounds the listener
/// filters' part of it at 15 s (`listener_filters_timeout`) and leaves the
/// rest unbounded; the whole handshake is bounded here, with the same 15 s.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// `https://host/path?query` for an HTTP request, keeping a port other
/// than 80 (Envoy's `https_redirect` drops only the default port).
fn https_location(authority: &str, uri: &Uri) -> String {
    let (host, port) = split_host_port(authority);
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let authority = match port {
        Some(p) if p != 80 => format!("{host}:{p}"),
        _ => host,
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    format!("https://{authority}{path}")
}

/// The listeners of one gateway workload on one engine.
pub struct Gateway {
    /// The shared engine: its telemetry is what the admin server serves.
    pub waypoint: Arc<Waypoint>,
    pub listeners: Vec<Arc<ListenerService>>,
}

/// The gateway is the mesh's edge: the caller's address is appended to
/// `x-forwarded-for`, as Istio's gateways (`use_remote_address`) do.
fn append_forwarded_for(headers: &mut http::HeaderMap, caller: SocketAddr) {
    let ip = caller.ip().to_string();
    let value = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prior) if !prior.trim().is_empty() => format!("{prior}, {ip}"),
        _ => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert("x-forwarded-for", v);
    }
}

impl ListenerService {
    /// Fails only when the TLS configuration cannot be built (an HTTPS
    /// port is never served in clear).
    /// The listener on an engine of its own (see
    /// [`GatewayConfig::into_gateway`](super::GatewayConfig::into_gateway)
    /// for listeners sharing one).
    pub fn new(
        listener: Listener,
        discovery: Arc<dyn Discovery>,
        connector: Arc<dyn Connector>,
    ) -> Result<Arc<Self>, rustls::Error> {
        let waypoint = Waypoint::new(listener.config.clone(), discovery.clone(), connector);
        Self::with_engine(listener, waypoint, discovery)
    }

    /// The listener on `waypoint`'s engine (its pools, outlier state and
    /// metrics); routes and policies stay the listener's.
    pub fn with_engine(
        listener: Listener,
        waypoint: Arc<Waypoint>,
        discovery: Arc<dyn Discovery>,
    ) -> Result<Arc<Self>, rustls::Error> {
        let tls = listener.tls_config()?.map(TlsAcceptor::from);
        let limits = waypoint.options.limits.clone();
        Ok(Arc::new(ListenerService {
            limits,
            port: listener.port,
            protocol: listener.protocol,
            servers: listener.servers,
            config: Arc::new(listener.config),
            waypoint,
            discovery,
            tls,
            tls_handshake_timeout: TLS_HANDSHAKE_TIMEOUT,
        }))
    }

    /// The TLS handshake timeout, set before the service is shared (once
    /// it serves, the value stays as it was).
    pub fn with_tls_handshake_timeout(mut self: Arc<Self>, timeout: Duration) -> Arc<Self> {
        match Arc::get_mut(&mut self) {
            Some(me) => me.tls_handshake_timeout = timeout,
            None => warn!(
                port = self.port,
                "TLS handshake timeout set on a shared listener: ignored"
            ),
        }
        self
    }

    /// The connection limits, set before the service is shared (once it
    /// serves, they stay as they were).
    pub fn with_limits(mut self: Arc<Self>, limits: Limits) -> Arc<Self> {
        match Arc::get_mut(&mut self) {
            Some(me) => me.limits = limits,
            None => warn!(port = self.port, "limits set on a shared listener: ignored"),
        }
        self
    }

    /// The engine this listener's requests run on.
    pub fn engine(&self) -> &Arc<Waypoint> {
        &self.waypoint
    }

    /// The hosts of this port's servers (for logs).
    pub fn hosts(&self) -> Vec<String> {
        self.servers
            .iter()
            .flat_map(|s| s.hosts.iter().map(|h| h.host.clone()))
            .collect()
    }

    /// Host check, HTTPS redirect, then the engine. `sni`: the server name
    /// of the TLS connection on an HTTPS port; the Host must then be one of
    /// the hosts of the server it chose (as Envoy's filter chain per HTTPS
    /// server does; no routing `b.com` inside a connection made for `a.com`).
    pub async fn handle(
        &self,
        mut req: Request<Incoming>,
        peer: &Peer,
        sni: Option<&str>,
    ) -> Response<ProxyBody> {
        let authority = req.uri().authority().map(|a| a.to_string()).or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        });
        let Some(authority) = authority else {
            return local_reply(StatusCode::BAD_REQUEST, "missing host");
        };
        let host = split_host_port(&authority).0;
        let server = match sni {
            Some(sni) => best_server(&self.servers, sni)
                .filter(|s| s.score(&host.to_ascii_lowercase()).is_some()),
            None => best_server(&self.servers, host),
        };
        let Some(server) = server else {
            return local_reply(StatusCode::NOT_FOUND, "route not found");
        };
        if server.https_redirect && self.protocol == ListenerProtocol::Http {
            let mut r = local_reply(StatusCode::MOVED_PERMANENTLY, "");
            return match HeaderValue::from_str(&https_location(&authority, req.uri())) {
                Ok(v) => {
                    r.headers_mut().insert(header::LOCATION, v);
                    r
                }
                Err(_) => local_reply(StatusCode::BAD_REQUEST, "bad host"),
            };
        }
        // A host a server allows but no bound VirtualService routes has no
        // virtual host in Envoy: 404, never the mesh's default route.
        if self.config.routes.host_routes(&authority).is_none() {
            return local_reply(StatusCode::NOT_FOUND, "route not found");
        }
        if self.protocol == ListenerProtocol::Https && req.uri().scheme().is_none() {
            // HTTP/1.1 over TLS carries no scheme; routes and
            // x-forwarded-proto must see https.
            let mut parts = req.uri().clone().into_parts();
            parts.scheme = Some(Scheme::HTTPS);
            if parts.path_and_query.is_none() {
                parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
            }
            if let Ok(a) = authority.parse() {
                parts.authority = Some(a);
                if let Ok(uri) = Uri::from_parts(parts) {
                    *req.uri_mut() = uri;
                }
            }
        }
        append_forwarded_for(req.headers_mut(), peer.addr);
        self.waypoint
            .clone()
            .handle_with(req, peer, self.config.clone())
            .await
    }

    /// Serves one accepted connection (TLS handshake first on HTTPS), on
    /// a connection of its own.
    pub async fn serve_connection<I: Io>(self: Arc<Self>, io: I, peer: SocketAddr) {
        self.serve_tracked(io, peer, ConnState::new(), &ListenerStats::default())
            .await
    }

    /// [`ListenerService::serve_connection`] under the timers of `state`
    /// (evicted during the handshake too), counted in `stats`.
    async fn serve_tracked<I: Io>(
        self: Arc<Self>,
        io: I,
        peer: SocketAddr,
        state: Arc<ConnState>,
        stats: &ListenerStats,
    ) {
        match self.tls.clone() {
            Some(acceptor) => {
                let handshake =
                    tokio::time::timeout(self.tls_handshake_timeout, acceptor.accept(io));
                let done = tokio::select! {
                    done = handshake => done,
                    _ = state.evicted() => return,
                };
                match done {
                    Ok(Ok(tls)) => {
                        let sni = tls.get_ref().1.server_name().map(str::to_ascii_lowercase);
                        self.serve_http(tls, peer, sni, state, stats).await
                    }
                    Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => debug!(
                        %peer,
                        timeout = ?self.tls_handshake_timeout,
                        "TLS handshake timed out: connection closed"
                    ),
                }
            }
            None => self.serve_http(io, peer, None, state, stats).await,
        }
    }

    async fn serve_http<I: Io>(
        self: Arc<Self>,
        io: I,
        addr: SocketAddr,
        sni: Option<String>,
        state: Arc<ConnState>,
        stats: &ListenerStats,
    ) {
        let sni: Option<Arc<str>> = sni.map(Arc::from);
        let labels = self.discovery.source_labels(addr.ip());
        let peer = Arc::new(Peer {
            addr,
            identity: None,
            source: crate::telemetry::SourceInfo::new(
                self.discovery.workload(addr.ip()).as_deref(),
                &labels,
                false,
            ),
            labels,
        });
        let limits = self.limits.clone();
        let handle = move |req: Request<Incoming>| {
            let me = self.clone();
            let peer = peer.clone();
            let sni = sni.clone();
            async move { me.handle(req, &peer, sni.as_deref()).await }
        };
        if let Err(e) = serve_http(io, state, &limits, stats, handle).await {
            debug!(error = %e, "gateway connection ended");
        }
    }

    /// Accepts connections until `drain` turns true, at most
    /// [`Limits::max_connections`] open (see [`crate::limits`]).
    pub async fn serve(self: Arc<Self>, listener: TcpListener, mut drain: watch::Receiver<bool>) {
        let tracker = ConnectionTracker::new(
            self.limits.max_connections,
            self.waypoint
                .telemetry()
                .limits()
                .listener(&format!("gateway:{}", self.port)),
        );
        loop {
            tokio::select! {
                _ = drained(&mut drain) => break,
                accepted = listener.accept() => match accepted {
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
                        warn!(port = self.port, error = %e, "gateway accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_appended() {
        let mut h = http::HeaderMap::new();
        let caller: SocketAddr = "192.0.2.7:5000".parse().expect("addr");
        append_forwarded_for(&mut h, caller);
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        append_forwarded_for(&mut h, caller);
        assert_eq!(h["x-forwarded-for"], "192.0.2.7, 192.0.2.7");
    }

    #[test]
    fn https_redirect_location() {
        let uri: Uri = "/a/b?c=1".parse().expect("uri");
        assert_eq!(
            https_location("example.com", &uri),
            "https://example.com/a/b?c=1"
        );
        assert_eq!(
            https_location("example.com:80", &uri),
            "https://example.com/a/b?c=1"
        );
        assert_eq!(
            https_location("example.com:8080", &uri),
            "https://example.com:8080/a/b?c=1"
        );
    }
}
