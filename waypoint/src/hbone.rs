//! The waypoint on the mesh: HBONE in (terminate the tunnels that node
//! proxies open to the waypoint's `:15008`, then serve HTTP inside them)
//! and HBONE out ([`HboneConnector`] reaches the chosen endpoint through its
//! node proxy, with the waypoint's identity). [`MeshDiscovery`] is the
//! waypoint's view of the mesh built from mesh-node's local config: service
//! hosts, their endpoints with labels and identities.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::HOST;
use http::uri::{Authority, Uri};
use http::{HeaderValue, Request};
use hyper::body::Incoming;
use mesh_hbone::{
    serve_connection, ConnectRequest, HboneClient, HboneStream, InboundTunnel, SocketFactory,
    HBONE_PORT,
};
use mesh_identity::{CertStore, Identity};
use mesh_model::state::ProxyState;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::connector::{BoxIo, ConnectFuture, Connector};
use crate::discovery::{Discovery, Endpoint, Labels};
use crate::engine::Waypoint;
use crate::limits::{serve_http, ConnState, ConnectionTracker, Expired, ListenerStats, Tracked};
use crate::peer::Peer;
use crate::sniff::{sniff, Prefixed, Sniffed, SNIFF_WAIT};

// ------------------------------------------------------------ discovery --

/// One service as the waypoint sees it.
#[derive(Clone, Debug)]
struct MeshService {
    /// service port -> target port
    ports: Vec<(u16, u16)>,
    /// (ip, labels) of the endpoints
    endpoints: Vec<(IpAddr, Labels)>,
}

/// Service hosts, endpoints, workload labels and identities, from a
/// validated mesh-node state. Swappable at run time ([`Self::replace`], on
/// each xDS update): a lookup sees one whole view, old or new.
#[derive(Debug, Default)]
pub struct MeshDiscovery {
    view: std::sync::RwLock<Arc<MeshView>>,
}

/// One state's tables.
#[derive(Debug, Default)]
struct MeshView {
    /// host name (FQDN, `name.namespace`, `name` when unambiguous) -> service
    hosts: HashMap<String, Arc<MeshService>>,
    /// VIP:port -> FQDN
    vips: HashMap<SocketAddr, String>,
    workloads: HashMap<IpAddr, (Labels, Identity)>,
    /// Workload name, namespace, principal by IP.
    workload_info: HashMap<IpAddr, Arc<crate::discovery::WorkloadInfo>>,
}

impl MeshDiscovery {
    pub fn from_state(state: &ProxyState) -> Self {
        MeshDiscovery {
            view: std::sync::RwLock::new(Arc::new(MeshView::from_state(state))),
        }
    }

    /// Replaces the view with `state`'s; lookups in progress finish on the
    /// old one.
    pub fn replace(&self, state: &ProxyState) {
        let view = Arc::new(MeshView::from_state(state));
        *self.view.write().unwrap_or_else(|e| e.into_inner()) = view;
    }

    fn view(&self) -> Arc<MeshView> {
        self.view.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The FQDN of the service whose VIP:port is `vip`.
    pub fn service_host(&self, vip: SocketAddr) -> Option<String> {
        self.view().vips.get(&vip).cloned()
    }

    /// The SPIFFE identity of the workload at `ip`.
    pub fn identity(&self, ip: IpAddr) -> Option<Identity> {
        self.view().workloads.get(&ip).map(|(_, id)| id.clone())
    }
}

impl MeshView {
    fn from_state(state: &ProxyState) -> Self {
        let mut d = MeshView::default();
        for w in state.workloads() {
            d.workloads
                .insert(w.ip, (w.labels.clone(), state.identity_of(w)));
            d.workload_info.insert(
                w.ip,
                Arc::new(crate::discovery::WorkloadInfo {
                    name: w.name.clone(),
                    namespace: w.namespace.clone(),
                    principal: state.identity_of(w).to_string(),
                }),
            );
        }
        let mut short: HashMap<String, usize> = HashMap::new();
        for s in state.services() {
            *short.entry(s.name.clone()).or_default() += 1;
        }
        for s in state.services() {
            let svc = Arc::new(MeshService {
                ports: s.ports.iter().map(|p| (p.port, p.target_port)).collect(),
                endpoints: s
                    .endpoints()
                    .iter()
                    .map(|w| (w.ip, w.labels.clone()))
                    .collect(),
            });
            for ip in &s.addresses {
                for p in &s.ports {
                    d.vips
                        .insert(SocketAddr::new(*ip, p.port), s.hostname.clone());
                }
            }
            d.hosts.insert(s.hostname.clone(), svc.clone());
            d.hosts
                .insert(format!("{}.{}", s.name, s.namespace), svc.clone());
            d.hosts
                .insert(format!("{}.{}.svc", s.name, s.namespace), svc.clone());
            if short.get(&s.name) == Some(&1) {
                d.hosts.insert(s.name.clone(), svc);
            }
        }
        d
    }
}

impl Discovery for MeshDiscovery {
    fn endpoints(&self, host: &str, port: Option<u16>) -> Vec<Endpoint> {
        let view = self.view();
        let Some(svc) = view.hosts.get(&host.to_ascii_lowercase()) else {
            return Vec::new();
        };
        let target = match port {
            Some(p) => svc
                .ports
                .iter()
                .find(|(sp, _)| *sp == p)
                .map(|(_, tp)| *tp)
                .unwrap_or(p),
            None => match svc.ports.first() {
                Some((_, tp)) => *tp,
                None => return Vec::new(),
            },
        };
        svc.endpoints
            .iter()
            .map(|(ip, labels)| Endpoint {
                addr: SocketAddr::new(*ip, target),
                labels: labels.clone(),
            })
            .collect()
    }

    fn source_labels(&self, ip: IpAddr) -> Labels {
        self.view()
            .workloads
            .get(&ip)
            .map(|(l, _)| l.clone())
            .unwrap_or_default()
    }

    fn workload(&self, ip: IpAddr) -> Option<Arc<crate::discovery::WorkloadInfo>> {
        self.view().workload_info.get(&ip).cloned()
    }
}

// ------------------------------------------------------------- sockets --

/// Sockets marked with [`mesh_common::MESH_MARK`], so that the kernel
/// programs never capture the waypoint's own connections even when its
/// netns is enrolled. Without `CAP_NET_ADMIN` the mark cannot be set and
/// the socket is used unmarked (logged once).
#[derive(Debug, Default)]
pub struct MarkedSocketFactory {
    warned: std::sync::atomic::AtomicBool,
}

impl SocketFactory for MarkedSocketFactory {
    fn tcp_socket(&self, dst: SocketAddr) -> io::Result<TcpSocket> {
        let s = if dst.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        let mark: libc::c_uint = mesh_common::MESH_MARK;
        // SAFETY: a valid fd and a pointer to a live c_uint of the given size.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_MARK,
                (&mark as *const libc::c_uint).cast(),
                std::mem::size_of::<libc::c_uint>() as libc::socklen_t,
            )
        };
        if rc != 0 && !self.warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
            warn!(error = %io::Error::last_os_error(), "cannot set SO_MARK on upstream sockets; they may be captured");
        }
        Ok(s)
    }
}

// ----------------------------------------------------------- connector --

/// Reaches an endpoint over HBONE: TLS to `endpoint ip:15008` expecting the
/// endpoint workload's identity, `CONNECT endpoint ip:port`. An endpoint
/// whose identity is unknown (not a mesh workload) gets plain TCP.
pub struct HboneConnector {
    client: HboneClient,
    discovery: Arc<MeshDiscovery>,
    sockets: Arc<dyn SocketFactory>,
    /// The waypoint's own address, sent as `forwarded: for=`.
    local: SocketAddr,
}

impl HboneConnector {
    pub fn new(
        certs: Arc<CertStore>,
        identity: Identity,
        discovery: Arc<MeshDiscovery>,
        sockets: Arc<dyn SocketFactory>,
        local: SocketAddr,
    ) -> Self {
        HboneConnector {
            client: HboneClient::new(certs, identity, sockets.clone()),
            discovery,
            sockets,
            local,
        }
    }
}

impl Connector for HboneConnector {
    fn connect<'a>(&'a self, endpoint: &'a Endpoint) -> ConnectFuture<'a> {
        Box::pin(async move {
            let Some(identity) = self.discovery.identity(endpoint.addr.ip()) else {
                let s = self
                    .sockets
                    .tcp_socket(endpoint.addr)?
                    .connect(endpoint.addr)
                    .await?;
                s.set_nodelay(true)?;
                return Ok(Box::new(s) as BoxIo);
            };
            let req = ConnectRequest {
                dst_identity: identity.clone(),
                hbone_addr: SocketAddr::new(endpoint.addr.ip(), HBONE_PORT),
                target: endpoint.addr,
                forwarded_for: self.local,
                service_host: None,
                baggage: None,
                traceparent: None,
            };
            let stream = self
                .client
                .connect(req)
                .await
                .map_err(|e| io::Error::new(io::ErrorKind::ConnectionRefused, e))?;
            debug!(dst = %endpoint.addr, %identity, "upstream via HBONE");
            Ok(Box::new(ClosingTunnel(Some(stream))) as BoxIo)
        })
    }
}

/// How long a dropped upstream tunnel waits for the endpoint's side to end.
const TUNNEL_LINGER: Duration = Duration::from_secs(5);

/// An upstream tunnel that ends the way a closed TCP socket does. hyper
/// drops a finished connection's I/O; an h2 stream dropped before the peer
/// ended its side is reset (CANCEL), which the endpoint's node proxy can
/// only report as a failed connection. Dropped, this sends END_STREAM and
/// reads the peer's side to its end (at most [`TUNNEL_LINGER`]) first.
struct ClosingTunnel(Option<HboneStream>);

impl ClosingTunnel {
    fn stream(&mut self) -> io::Result<Pin<&mut HboneStream>> {
        match self.0.as_mut() {
            Some(s) => Ok(Pin::new(s)),
            None => Err(io::Error::new(io::ErrorKind::NotConnected, "tunnel closed")),
        }
    }
}

impl AsyncRead for ClosingTunnel {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut().stream() {
            Ok(s) => s.poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for ClosingTunnel {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().stream() {
            Ok(s) => s.poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().stream() {
            Ok(s) => s.poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().stream() {
            Ok(s) => s.poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl Drop for ClosingTunnel {
    fn drop(&mut self) {
        let Some(mut stream) = self.0.take() else {
            return;
        };
        // HboneStream's shutdown queues END_STREAM without waiting.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let _ = Pin::new(&mut stream).poll_shutdown(&mut cx);
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            let mut buf = [0u8; 4096];
            let drain = async {
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(TUNNEL_LINGER, drain).await;
        });
    }
}

// -------------------------------------------------------------- server --

/// Accepts HBONE connections on `listener` until `drain` turns true: every
/// tunnel is accepted and its stream served as HTTP by `waypoint`.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    waypoint: Arc<Waypoint>,
    discovery: Arc<MeshDiscovery>,
    drain: watch::Receiver<bool>,
) {
    serve_with(
        listener,
        move || Ok(tls.clone()),
        waypoint,
        discovery,
        drain,
    )
    .await
}

/// [`serve`] with the TLS config of `identity` taken from `certs` for each
/// connection, so that a renewed certificate (xDS mode: from the CA) is
/// presented by the connections that follow.
pub async fn serve_renewing(
    listener: TcpListener,
    certs: Arc<CertStore>,
    identity: Identity,
    waypoint: Arc<Waypoint>,
    discovery: Arc<MeshDiscovery>,
    drain: watch::Receiver<bool>,
) {
    let tls = move || certs.server_config(&identity);
    serve_with(listener, tls, waypoint, discovery, drain).await
}

async fn serve_with<T>(
    listener: TcpListener,
    tls_config: T,
    waypoint: Arc<Waypoint>,
    discovery: Arc<MeshDiscovery>,
    drain: watch::Receiver<bool>,
) where
    T: Fn() -> Result<Arc<rustls::ServerConfig>, mesh_identity::IdentityError>,
{
    let limits = waypoint.options.limits.clone();
    let tracker = ConnectionTracker::new(
        limits.max_connections,
        waypoint.telemetry().limits().listener("hbone"),
    );
    let mut stop = drain.clone();
    loop {
        tokio::select! {
            _ = drained(&mut stop) => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, remote)) => {
                    // Over the cap with every connection busy: closed at once.
                    let Some(slot) = tracker.admit() else {
                        continue;
                    };
                    let tls = match tls_config() {
                        Ok(t) => t,
                        Err(e) => {
                            warn!(%remote, error = %e, "no TLS config; connection refused");
                            continue;
                        }
                    };
                    let drain = drain.clone();
                    let waypoint = waypoint.clone();
                    let discovery = discovery.clone();
                    let stats = tracker.stats().clone();
                    let idle = limits.idle_timeout;
                    tokio::spawn(async move {
                        let outer = slot.state.clone();
                        let tunnel_stats = stats.clone();
                        let on_tunnel = move |t: InboundTunnel| {
                            // The connection is not idle while a tunnel lives.
                            let open = outer.begin();
                            let tunnel = tunnel(
                                t,
                                remote,
                                waypoint.clone(),
                                discovery.clone(),
                                tunnel_stats.clone(),
                            );
                            tokio::spawn(async move {
                                tunnel.await;
                                drop(open);
                            });
                        };
                        serve_hbone_connection(tcp, tls, drain, on_tunnel, &slot.state, idle, &stats, remote).await;
                        drop(slot);
                    });
                }
                Err(e) => {
                    warn!(error = %e, "HBONE accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// One HBONE connection until it ends: GOAWAY once `drain` turns true or
/// it has had no tunnel for `idle`; closed at once when evicted.
#[allow(clippy::too_many_arguments)]
async fn serve_hbone_connection<F>(
    tcp: tokio::net::TcpStream,
    tls: Arc<rustls::ServerConfig>,
    mut drain: watch::Receiver<bool>,
    on_tunnel: F,
    state: &ConnState,
    idle: Duration,
    stats: &ListenerStats,
    remote: SocketAddr,
) where
    F: FnMut(InboundTunnel) + Send,
{
    let (close_tx, close_rx) = watch::channel(false);
    let serve = serve_connection(tcp, tls, close_rx, on_tunnel);
    tokio::pin!(serve);
    let mut closing = false;
    loop {
        tokio::select! {
            r = serve.as_mut() => {
                if let Err(e) = r {
                    debug!(%remote, error = %e, "HBONE connection ended");
                }
                return;
            }
            _ = drained(&mut drain), if !closing => {
                let _ = close_tx.send(true);
                closing = true;
            }
            why = state.expired(None, idle), if !closing => match why {
                Expired::Idle => {
                    stats.count_idle_timeout();
                    debug!(%remote, "HBONE connection idle: GOAWAY");
                    let _ = close_tx.send(true);
                    closing = true;
                }
                Expired::Evicted | Expired::HeaderTimeout => {
                    debug!(%remote, "idle HBONE connection closed to make room for another");
                    return;
                }
            },
        }
    }
}

async fn drained(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|d| *d).await.map(|_| ());
}

/// `for="ip:port"` (the first `for=` of a `forwarded` header).
fn forwarded_for(forwarded: &str) -> Option<SocketAddr> {
    forwarded.split([';', ',']).find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        if !k.eq_ignore_ascii_case("for") {
            return None;
        }
        let v = v.trim_matches('"');
        v.parse::<SocketAddr>()
            .ok()
            .or_else(|| v.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 0)))
    })
}

/// The identity of the caller of one tunnel, for logs and (later) L7 authz.
#[derive(Clone, Debug)]
pub struct Caller {
    pub identity: Identity,
    pub addr: SocketAddr,
    /// The tunnel's `:authority`: the service VIP:port asked for.
    pub target: SocketAddr,
}

async fn tunnel(
    t: InboundTunnel,
    remote: SocketAddr,
    waypoint: Arc<Waypoint>,
    discovery: Arc<MeshDiscovery>,
    stats: ListenerStats,
) {
    let addr = t
        .forwarded
        .as_deref()
        .and_then(forwarded_for)
        .unwrap_or(remote);
    let caller = Caller {
        identity: t.peer.clone(),
        addr,
        target: t.target,
    };
    let service = discovery.service_host(t.target);
    info!(
        caller.identity = %caller.identity,
        caller.addr = %caller.addr,
        target = %caller.target,
        service = service.as_deref().unwrap_or("-"),
        "HBONE tunnel accepted"
    );
    let mut stream = match t.accept() {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "HBONE tunnel accept failed");
            return;
        }
    };
    // A tunnel that carries no HTTP is relayed as TCP.
    let (sniffed, first) = match sniff(&mut stream, SNIFF_WAIT).await {
        Ok(s) => s,
        Err(e) => {
            debug!(error = %e, "HBONE tunnel ended while sniffing");
            return;
        }
    };
    let stream = Prefixed::new(first, stream);
    if sniffed == Sniffed::Tcp {
        relay_tcp(
            stream,
            &caller,
            service.as_deref(),
            &waypoint,
            &discovery,
            &stats,
        )
        .await;
        return;
    }
    let limits = waypoint.options.limits.clone();
    let labels = discovery.source_labels(addr.ip());
    let peer = Arc::new(Peer {
        addr,
        identity: Some(caller.identity.clone()),
        // HBONE: mutual TLS; the tunnel's peer is the principal.
        source: crate::telemetry::SourceInfo::new(
            discovery.workload(addr.ip()).as_deref(),
            &labels,
            true,
        )
        .with_principal(&caller.identity.to_string()),
        labels,
    });
    let target = caller.target;
    let handle = move |mut req: Request<Incoming>| {
        let waypoint = waypoint.clone();
        let peer = peer.clone();
        if let Some(host) = &service {
            name_the_service(&mut req, host, target);
        }
        async move { waypoint.handle(req, &peer).await }
    };
    // Each tunnel is a connection of its own to the HTTP inside it.
    if let Err(e) = serve_http(stream, ConnState::new(), &limits, &stats, handle).await {
        debug!(error = %e, "tunnelled HTTP connection ended");
    }
}

/// Relays a non-HTTP tunnel to one endpoint of the service it was opened
/// for, through the waypoint's connector (HBONE to the endpoint).
async fn relay_tcp<I: crate::connector::Io>(
    down: I,
    caller: &Caller,
    service: Option<&str>,
    waypoint: &Waypoint,
    discovery: &MeshDiscovery,
    stats: &ListenerStats,
) {
    let Some(host) = service else {
        warn!(target = %caller.target, "TCP tunnel to no known service; closed");
        return;
    };
    // Fail closed: a relayed stream escapes RequestAuthentication and
    // AuthorizationPolicy (a caller could stay silent, then speak HTTP).
    let cfg = waypoint.config();
    if !cfg.authn.is_empty() || !cfg.authz.is_empty() {
        warn!(service = host, caller.identity = %caller.identity, "TCP tunnel refused: L7 policies are in force");
        return;
    }
    let eps = discovery.endpoints(host, Some(caller.target.port()));
    if eps.is_empty() {
        warn!(service = host, "TCP tunnel: no endpoints; closed");
        return;
    }
    let ep = &eps[rand::Rng::gen_range(&mut rand::thread_rng(), 0..eps.len())];
    let connector = waypoint.connector();
    let mut up = match tokio::time::timeout(TCP_CONNECT_TIMEOUT, connector.connect(ep)).await {
        Ok(Ok(up)) => up,
        Ok(Err(e)) => {
            warn!(service = host, endpoint = %ep.addr, error = %e, "TCP tunnel: connect failed");
            return;
        }
        Err(_) => {
            warn!(service = host, endpoint = %ep.addr, "TCP tunnel: connect timeout");
            return;
        }
    };
    info!(caller.identity = %caller.identity, service = host, endpoint = %ep.addr, "TCP passthrough");
    // Envoy's tcp_proxy idle_timeout: no byte either way for this long.
    let idle = waypoint.options.limits.idle_timeout;
    let state = ConnState::new();
    let mut down = Tracked::new(down, state.clone());
    let relay = tokio::select! {
        r = tokio::io::copy_bidirectional(&mut down, &mut up) => r,
        _ = state.io_idle(idle) => {
            stats.count_idle_timeout();
            info!(service = host, endpoint = %ep.addr, ?idle, "TCP passthrough idle: closed");
            return;
        }
    };
    match relay {
        Ok((sent, received)) => info!(
            service = host,
            endpoint = %ep.addr,
            bytes_sent = sent,
            bytes_received = received,
            "TCP passthrough ended"
        ),
        Err(e) => debug!(service = host, error = %e, "TCP passthrough ended"),
    }
}

/// Connect timeout of TCP passthrough (Istio's default `connectTimeout`).
const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A request to the service's VIP (`Host: 10.96.0.20:9080`, or no host)
/// is routed as the service's host name, as Istio's waypoint routes by the
/// service the tunnel was opened for.
fn name_the_service(req: &mut Request<Incoming>, host: &str, target: SocketAddr) {
    let current = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            req.headers()
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        });
    let is_ip = match &current {
        None => true,
        Some(a) => {
            let h = a.rsplit_once(':').map_or(a.as_str(), |(h, _)| h);
            h.trim_matches(['[', ']']).parse::<IpAddr>().is_ok()
        }
    };
    if !is_ip {
        return;
    }
    let new = format!("{host}:{}", target.port());
    let Ok(authority) = new.parse::<Authority>() else {
        return;
    };
    if req.uri().authority().is_some() {
        let mut parts = req.uri().clone().into_parts();
        parts.authority = Some(authority);
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    if let Ok(v) = HeaderValue::from_str(&new) {
        req.headers_mut().insert(HOST, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_parses() {
        assert_eq!(
            forwarded_for(r#"for="10.0.0.1:5555";host=reviews.bookinfo.svc.cluster.local"#),
            Some("10.0.0.1:5555".parse().expect("addr"))
        );
        assert_eq!(forwarded_for("host=x"), None);
    }

    const CFG: &str = r#"
namespaces:
- name: bookinfo
  labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint}
workloads:
- {name: waypoint, namespace: bookinfo, serviceAccount: waypoint, node: a, ip: 10.10.1.5}
- {name: r1, namespace: bookinfo, serviceAccount: reviews, node: a, ip: 10.10.1.6, labels: {app: reviews, version: v1}}
- {name: r2, namespace: bookinfo, serviceAccount: reviews, node: b, ip: 10.10.2.6, labels: {app: reviews, version: v2}}
services:
- {name: reviews, namespace: bookinfo, addresses: [10.96.0.20], ports: [{port: 9080, targetPort: 9081}], selector: {app: reviews}}
"#;

    #[test]
    fn discovery_from_local_config() {
        let state = mesh_model::config::parse_state(CFG).unwrap_or_else(|e| panic!("{e}"));
        let d = MeshDiscovery::from_state(&state);
        let eps = d.endpoints("reviews.bookinfo.svc.cluster.local", Some(9080));
        let addrs: Vec<String> = eps.iter().map(|e| e.addr.to_string()).collect();
        assert_eq!(addrs, ["10.10.1.6:9081", "10.10.2.6:9081"]);
        assert_eq!(eps[1].labels.get("version").map(String::as_str), Some("v2"));
        assert_eq!(d.endpoints("reviews", None).len(), 2);
        assert_eq!(d.endpoints("reviews.bookinfo", Some(9080)).len(), 2);
        assert!(d.endpoints("ratings", None).is_empty());
        assert_eq!(
            d.service_host("10.96.0.20:9080".parse().expect("addr"))
                .as_deref(),
            Some("reviews.bookinfo.svc.cluster.local")
        );
        assert_eq!(
            d.identity("10.10.2.6".parse().expect("ip"))
                .map(|i| i.to_string()),
            Some("spiffe://cluster.local/ns/bookinfo/sa/reviews".to_string())
        );
    }
}
