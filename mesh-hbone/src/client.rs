//! The HBONE client: a pool of multiplexed HTTP/2-over-mTLS connections
//! per (destination identity, HBONE address), opened from one local
//! identity.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use http::{HeaderValue, Method, Request, StatusCode};
use rustls::pki_types::ServerName;
use tokio::net::TcpSocket;
use tokio_rustls::TlsConnector;
use tracing::{debug, trace};

use super::alert::{AlertSlot, AlertWatch, PeerEnding};
use super::conn_state::{ConnState, StreamSlot};
use super::stream::{HboneStream, TunnelHeaders};
use super::{
    HboneError, BAGGAGE, CONNECTION_WINDOW, FORWARDED, MAX_FRAME_SIZE, MAX_STREAMS_PER_CONNECTION,
    STREAM_WINDOW, TRACEPARENT,
};
use mesh_identity::{peer_identity, CertStore, Identity};

/// Creates the client sockets, e.g. inside the source pod's network
/// namespace with SO_MARK set. Called once per new connection.
pub trait SocketFactory: Send + Sync + 'static {
    fn tcp_socket(&self, dst: SocketAddr) -> std::io::Result<TcpSocket>;
}

/// Plain sockets in the current network namespace (tests, local mode).
#[derive(Clone, Copy, Debug, Default)]
pub struct PlainSocketFactory;

impl SocketFactory for PlainSocketFactory {
    fn tcp_socket(&self, dst: SocketAddr) -> std::io::Result<TcpSocket> {
        if dst.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
    }
}

/// One tunnel to open.
#[derive(Clone, Debug)]
pub struct ConnectRequest {
    /// The identity the HBONE server must prove (the destination workload's,
    /// or its waypoint's).
    pub dst_identity: Identity,
    /// Where to connect: the pod's `ip:15008`, or the waypoint's.
    pub hbone_addr: SocketAddr,
    /// The `:authority`: the final destination `ip:port`.
    pub target: SocketAddr,
    /// The original client address, sent as `forwarded: for="ip:port"`.
    pub forwarded_for: SocketAddr,
    /// The service hostname when the destination was a service
    /// (`;host=` in `forwarded`).
    pub service_host: Option<String>,
    pub baggage: Option<String>,
    pub traceparent: Option<String>,
}

/// Tuning knobs; the defaults follow HBONE.md.
#[derive(Clone, Debug)]
pub struct HboneClientOptions {
    pub max_streams_per_connection: usize,
    /// Limit on TCP connect + TLS + HTTP/2 handshake, and separately on
    /// waiting for the `CONNECT` response.
    pub connect_timeout: Duration,
    /// A pooled connection with no streams for about this long is closed.
    pub idle_timeout: Duration,
}

impl Default for HboneClientOptions {
    fn default() -> Self {
        HboneClientOptions {
            max_streams_per_connection: MAX_STREAMS_PER_CONNECTION,
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
        }
    }
}

type PoolKey = (Identity, SocketAddr);

struct PooledConn {
    id: u64,
    send: SendRequest<Bytes>,
    peer: Identity,
    state: Arc<ConnState>,
    /// How the server ended the connection, if it said anything.
    alert: AlertSlot,
}

impl PooledConn {
    /// An error on this connection, named by the TLS alert that caused it
    /// when the server sent one (or by the server's silent close).
    fn explain(&self, addr: SocketAddr, error: HboneError) -> HboneError {
        with_alert(&self.alert, addr, error)
    }
}

fn with_alert(slot: &AlertSlot, peer: SocketAddr, error: HboneError) -> HboneError {
    match (slot.get(), error) {
        (_, e @ (HboneError::TlsAlert { .. } | HboneError::ClosedAfterHandshake { .. })) => e,
        (Some(PeerEnding::Alert(alert)), after) => HboneError::TlsAlert {
            peer,
            alert,
            after: Box::new(after),
        },
        (Some(PeerEnding::SilentClose), after) => HboneError::ClosedAfterHandshake {
            peer,
            after: Box::new(after),
        },
        (None, e) => e,
    }
}

#[derive(Default)]
struct Slot {
    conns: Mutex<Vec<Arc<PooledConn>>>,
    /// Serialises opening new connections for this key, so that concurrent
    /// first connects share one handshake.
    connecting: tokio::sync::Mutex<()>,
}

impl Slot {
    fn conns(&self) -> MutexGuard<'_, Vec<Arc<PooledConn>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A live connection with room for one more stream, already counted.
    fn pick(&self, max: usize) -> Option<(Arc<PooledConn>, StreamSlot)> {
        let conns = self.conns();
        // Increments happen only under the lock, so check-then-add is safe.
        conns
            .iter()
            .find(|c| {
                !c.state.dead.load(Ordering::Acquire)
                    && c.state.active.load(Ordering::Acquire) < max
            })
            .map(|c| {
                c.state.active.fetch_add(1, Ordering::AcqRel);
                c.state.opened.fetch_add(1, Ordering::Relaxed);
                (c.clone(), StreamSlot(c.state.clone()))
            })
    }

    fn remove(&self, id: u64) {
        self.conns().retain(|c| c.id != id);
    }
}

struct Inner {
    certs: Arc<CertStore>,
    local: Identity,
    sockets: Arc<dyn SocketFactory>,
    options: HboneClientOptions,
    pool: Mutex<HashMap<PoolKey, Arc<Slot>>>,
    next_id: AtomicU64,
}

impl Inner {
    fn pool(&self) -> MutexGuard<'_, HashMap<PoolKey, Arc<Slot>>> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forget a connection; drop its key once nothing uses it.
    fn evict(&self, key: &PoolKey, slot: &Arc<Slot>, conn_id: u64) {
        slot.remove(conn_id);
        self.forget_if_unused(key, slot);
    }

    /// Drop `key` from the pool if `slot` is its entry, has no connections,
    /// and the only references are the map's and the caller's (nobody is
    /// connecting through it).
    fn forget_if_unused(&self, key: &PoolKey, slot: &Arc<Slot>) {
        let mut pool = self.pool();
        if let Some(current) = pool.get(key) {
            if Arc::ptr_eq(current, slot) && Arc::strong_count(slot) == 2 && slot.conns().is_empty()
            {
                pool.remove(key);
            }
        }
    }
}

/// The HBONE client of one local identity (one source pod or waypoint).
/// Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct HboneClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for HboneClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HboneClient")
            .field("local", &self.inner.local.to_string())
            .finish_non_exhaustive()
    }
}

/// Failure of one attempt; `retry` when the server cannot have seen the
/// request (the connection was going away or refused the stream).
struct Attempt {
    error: HboneError,
    retry: bool,
}

impl HboneClient {
    pub fn new(certs: Arc<CertStore>, local: Identity, sockets: Arc<dyn SocketFactory>) -> Self {
        Self::with_options(certs, local, sockets, HboneClientOptions::default())
    }

    pub fn with_options(
        certs: Arc<CertStore>,
        local: Identity,
        sockets: Arc<dyn SocketFactory>,
        options: HboneClientOptions,
    ) -> Self {
        HboneClient {
            inner: Arc::new(Inner {
                certs,
                local,
                sockets,
                options,
                pool: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(0),
            }),
        }
    }

    pub fn local_identity(&self) -> &Identity {
        &self.inner.local
    }

    /// Open connections currently pooled (all keys).
    pub fn pooled_connections(&self) -> usize {
        let slots: Vec<Arc<Slot>> = self.inner.pool().values().cloned().collect();
        slots
            .iter()
            .map(|s| {
                s.conns()
                    .iter()
                    .filter(|c| !c.state.dead.load(Ordering::Acquire))
                    .count()
            })
            .sum()
    }

    /// Open a tunnel: reuse a pooled connection to (`dst_identity`,
    /// `hbone_addr`) with room for a stream, or open one, then `CONNECT`.
    pub async fn connect(&self, req: ConnectRequest) -> Result<HboneStream, HboneError> {
        let headers = tunnel_headers(&req);
        // Validate once before touching the network.
        build_request(&req, &headers)?;
        let key: PoolKey = (req.dst_identity.clone(), req.hbone_addr);
        let mut retried = false;
        loop {
            let (slot, conn, stream_slot) = self.checkout(&key).await?;
            match self.send_connect(&req, &headers, &conn, stream_slot).await {
                Ok(stream) => return Ok(stream),
                Err(mut attempt) => {
                    // A refusal by TLS alert is final: retrying would meet it again.
                    attempt.error = conn.explain(key.1, attempt.error);
                    if matches!(
                        attempt.error,
                        HboneError::TlsAlert { .. } | HboneError::ClosedAfterHandshake { .. }
                    ) {
                        attempt.retry = false;
                    }
                    if attempt.retry {
                        debug!(conn = conn.id, error = %attempt.error, "HBONE connection going away; evicting");
                        conn.state.dead.store(true, Ordering::Release);
                        self.inner.evict(&key, &slot, conn.id);
                        if !retried {
                            retried = true;
                            continue;
                        }
                    }
                    return Err(attempt.error);
                }
            }
        }
    }

    async fn send_connect(
        &self,
        req: &ConnectRequest,
        headers: &TunnelHeaders,
        conn: &PooledConn,
        stream_slot: StreamSlot,
    ) -> Result<HboneStream, Attempt> {
        let retry = |e: h2::Error| Attempt {
            error: e.into(),
            retry: true,
        };
        let request = build_request(req, headers).map_err(|error| Attempt {
            error,
            retry: false,
        })?;
        let mut send = conn.send.clone().ready().await.map_err(retry)?;
        let (response, send_stream) = send.send_request(request, false).map_err(retry)?;
        // The server answers once it reached the target; a peer that never
        // answers must not hold the caller forever.
        let response = tokio::time::timeout(self.inner.options.connect_timeout, response)
            .await
            .map_err(|_| Attempt {
                error: HboneError::Timeout("waiting for the CONNECT response"),
                retry: false,
            })?;
        let response = response.map_err(|e| {
            let retry =
                e.reason() == Some(h2::Reason::REFUSED_STREAM) || (e.is_go_away() && e.is_remote());
            Attempt {
                error: e.into(),
                retry,
            }
        })?;
        if response.status() != StatusCode::OK {
            return Err(Attempt {
                error: HboneError::Rejected(response.status()),
                retry: false,
            });
        }
        trace!(conn = conn.id, target = %req.target, "HBONE tunnel open");
        Ok(HboneStream::new(
            send_stream,
            response.into_body(),
            conn.peer.clone(),
            req.target,
            headers.clone(),
            Some(stream_slot),
        ))
    }

    async fn checkout(
        &self,
        key: &PoolKey,
    ) -> Result<(Arc<Slot>, Arc<PooledConn>, StreamSlot), HboneError> {
        let max = self.inner.options.max_streams_per_connection.max(1);
        let slot = self.inner.pool().entry(key.clone()).or_default().clone();
        if let Some((conn, s)) = slot.pick(max) {
            return Ok((slot, conn, s));
        }
        let _connecting = slot.connecting.lock().await;
        // Someone else may have opened one while we waited.
        if let Some((conn, s)) = slot.pick(max) {
            return Ok((slot.clone(), conn, s));
        }
        let timeout = self.inner.options.connect_timeout;
        let opened = tokio::time::timeout(timeout, self.open(key, &slot))
            .await
            .unwrap_or(Err(HboneError::Timeout("HBONE connect")));
        let conn = match opened {
            Ok(conn) => conn,
            Err(e) => {
                drop(_connecting);
                self.inner.forget_if_unused(key, &slot);
                return Err(e);
            }
        };
        // Count our stream before others can see the connection.
        conn.state.active.fetch_add(1, Ordering::AcqRel);
        conn.state.opened.fetch_add(1, Ordering::Relaxed);
        let s = StreamSlot(conn.state.clone());
        slot.conns().push(conn.clone());
        Ok((slot.clone(), conn, s))
    }

    async fn open(&self, key: &PoolKey, slot: &Arc<Slot>) -> Result<Arc<PooledConn>, HboneError> {
        let (dst_identity, addr) = key;
        let addr = *addr;
        let config = self
            .inner
            .certs
            .client_config(&self.inner.local, dst_identity)?;
        let socket = self.inner.sockets.tcp_socket(addr)?;
        socket.set_nodelay(true)?;
        let tcp = socket.connect(addr).await?;
        tcp.set_nodelay(true)?;
        let tls = TlsConnector::from(config)
            .connect(ServerName::IpAddress(addr.ip().into()), tcp)
            .await
            .map_err(|source| HboneError::Tls { peer: addr, source })?;
        let peer = peer_identity(tls.get_ref().1.peer_certificates().unwrap_or_default())?;
        let alert = AlertSlot::default();
        let (send, connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_frame_size(MAX_FRAME_SIZE)
            .enable_push(false)
            .handshake::<_, Bytes>(AlertWatch::new(tls, alert.clone()))
            .await
            .map_err(|e| with_alert(&alert, addr, e.into()))?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState::default());
        debug!(conn = id, %addr, peer = %peer, local = %self.inner.local, "HBONE connection open");
        tokio::spawn(drive(
            connection,
            id,
            state.clone(),
            Arc::downgrade(&self.inner),
            key.clone(),
            Arc::downgrade(slot),
            self.inner.options.idle_timeout,
        ));
        Ok(Arc::new(PooledConn {
            id,
            send,
            peer,
            state,
            alert,
        }))
    }
}

/// Runs one client connection; evicts it from the pool when it ends, and
/// releases it (dropping our request handle, so h2 closes it gracefully)
/// once idle.
async fn drive<T>(
    mut connection: h2::client::Connection<T, Bytes>,
    id: u64,
    state: Arc<ConnState>,
    inner: Weak<Inner>,
    key: PoolKey,
    slot: Weak<Slot>,
    idle_timeout: Duration,
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let tick = (idle_timeout / 2).max(Duration::from_millis(10));
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + tick, tick);
    let mut last_opened = u64::MAX;
    let mut released = false;
    loop {
        tokio::select! {
            result = &mut connection => {
                match result {
                    Ok(()) => debug!(conn = id, "HBONE connection closed"),
                    Err(e) => debug!(conn = id, error = %e, "HBONE connection failed"),
                }
                break;
            }
            _ = ticks.tick(), if !released => {
                let Some(slot) = slot.upgrade() else {
                    // Dropped from the pool along with our request handle.
                    released = true;
                    continue;
                };
                // Under the slot's lock no stream can be picked concurrently.
                let mut conns = slot.conns();
                let opened = state.opened.load(Ordering::Relaxed);
                if state.active.load(Ordering::Acquire) == 0 && opened == last_opened {
                    debug!(conn = id, "HBONE connection idle; releasing");
                    state.dead.store(true, Ordering::Release);
                    conns.retain(|c| c.id != id);
                    released = true;
                }
                last_opened = opened;
            }
        }
    }
    state.dead.store(true, Ordering::Release);
    if let (Some(inner), Some(slot)) = (inner.upgrade(), slot.upgrade()) {
        inner.evict(&key, &slot, id);
    }
}

fn tunnel_headers(req: &ConnectRequest) -> TunnelHeaders {
    let mut forwarded = format!("for=\"{}\"", req.forwarded_for);
    if let Some(host) = &req.service_host {
        forwarded.push_str(";host=");
        forwarded.push_str(host);
    }
    TunnelHeaders {
        forwarded: Some(forwarded),
        baggage: req.baggage.clone(),
        traceparent: req.traceparent.clone(),
    }
}

fn build_request(req: &ConnectRequest, headers: &TunnelHeaders) -> Result<Request<()>, HboneError> {
    let invalid =
        |what: &str, e: &dyn std::fmt::Display| HboneError::InvalidRequest(format!("{what}: {e}"));
    let mut builder = Request::builder()
        .method(Method::CONNECT)
        .uri(req.target.to_string());
    for (name, value) in [
        (FORWARDED, &headers.forwarded),
        (BAGGAGE, &headers.baggage),
        (TRACEPARENT, &headers.traceparent),
    ] {
        if let Some(value) = value {
            let value = HeaderValue::from_str(value).map_err(|e| invalid(name, &e))?;
            builder = builder.header(name, value);
        }
    }
    builder.body(()).map_err(|e| invalid("request", &e))
}

#[cfg(test)]
pub(super) fn build_request_for_test(req: &ConnectRequest) -> Result<Request<()>, HboneError> {
    build_request(req, &tunnel_headers(req))
}

#[cfg(test)]
impl HboneClient {
    pub(super) fn inner_pool_is_empty(&self) -> bool {
        self.inner.pool().is_empty()
    }
}
