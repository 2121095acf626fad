//! Upstream connections of one destination and its circuit breakers
//! (`connectionPool`), with Envoy's semantics for HTTP/1.1 upstreams:
//!
//! * `tcp.maxConnections`: connections open at once, across endpoints.
//! * `http.http1MaxPendingRequests`: requests waiting for a connection
//!   when every connection is busy and no more may open.
//! * `http.http2MaxRequests`: requests in flight at once (Envoy applies
//!   `max_requests` whatever the protocol).
//! * `http.maxRequestsPerConnection`: a connection is closed after that
//!   many requests (0: unlimited).
//! * `tcp.connectTimeout` (default 10 s) bounds connection set-up.
//!
//! A request over a limit is refused at once; the proxy answers it `503`
//! with `x-envoy-overloaded: true`. Each connection carries one request at
//! a time and goes back to the idle list when its response body has been
//! read to the end.
//!
//! HTTP/2 upstreams (prior knowledge) are multiplexed: a
//! lease carries a clone of the connection's `http2::SendRequest` while
//! the connection has room (`maxRequestsPerConnection` not reached); the
//! same `maxConnections`, pending and `http2MaxRequests` limits apply.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_api::networking::ConnectionPoolSettings;
use mesh_api::util::parse_duration;
use tokio::sync::Notify;

use crate::body::OnEnd;
use crate::connector::Connector;
use crate::discovery::Endpoint;
use crate::replay::UpstreamBody;

// Upstream protocol.
/// The HTTP version spoken to an upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proto {
    Http1,
    /// HTTP/2 with prior knowledge (h2c; TLS is the connector's business).
    Http2,
}

/// A leased connection's request sender.
pub enum Sender {
    H1(http1::SendRequest<UpstreamBody>),
    /// A clone of a multiplexed connection's sender.
    H2(http2::SendRequest<UpstreamBody>),
}

pub type SendResult = Result<
    http::Response<hyper::body::Incoming>,
    hyper::client::conn::TrySendError<http::Request<UpstreamBody>>,
>;

impl Sender {
    pub fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }

    pub async fn ready(&mut self) -> hyper::Result<()> {
        match self {
            Sender::H1(s) => s.ready().await,
            Sender::H2(s) => s.ready().await,
        }
    }

    pub fn proto(&self) -> Proto {
        match self {
            Sender::H1(_) => Proto::Http1,
            Sender::H2(_) => Proto::Http2,
        }
    }

    /// Sends `req`; a request that was not written comes back in the error.
    pub async fn try_send_request(&mut self, req: http::Request<UpstreamBody>) -> SendResult {
        match self {
            Sender::H1(s) => s.try_send_request(req).await,
            Sender::H2(s) => s.try_send_request(req).await,
        }
    }
}

/// One HTTP/2 connection shared by the leases that carry its sender.
struct H2Conn {
    id: u64,
    sender: http2::SendRequest<UpstreamBody>,
    /// Requests it was handed (for `maxRequestsPerConnection`).
    used: u32,
    in_flight: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolLimits {
    pub max_connections: usize,
    pub max_pending: usize,
    pub max_requests: usize,
    /// 0: unlimited.
    pub max_requests_per_connection: u32,
    pub connect_timeout: Duration,
    /// `h2UpgradePolicy: UPGRADE`: HTTP/1.1 requests go
    /// upstream over HTTP/2.
    pub h2_upgrade: bool,
}

impl Default for PoolLimits {
    /// Istio's defaults: no limits (2^32 - 1), connect timeout 10 s.
    fn default() -> Self {
        PoolLimits {
            max_connections: u32::MAX as usize,
            max_pending: u32::MAX as usize,
            max_requests: u32::MAX as usize,
            max_requests_per_connection: 0,
            connect_timeout: Duration::from_secs(10),
            h2_upgrade: false,
        }
    }
}

impl PoolLimits {
    pub fn from_istio(cp: &ConnectionPoolSettings) -> Result<Self, String> {
        let mut l = PoolLimits::default();
        let lim = |v: Option<i64>, d: usize| match v {
            Some(n) if n > 0 => usize::try_from(n).unwrap_or(d),
            _ => d,
        };
        if let Some(t) = &cp.tcp {
            l.max_connections = lim(t.max_connections, l.max_connections);
            if let Some(ct) = &t.connect_timeout {
                l.connect_timeout = parse_duration(ct)?;
            }
        }
        if let Some(h) = &cp.http {
            l.max_pending = lim(h.http1_max_pending_requests, l.max_pending);
            l.max_requests = lim(h.http2_max_requests, l.max_requests);
            l.max_requests_per_connection =
                u32::try_from(h.max_requests_per_connection.unwrap_or(0).max(0)).unwrap_or(0);
            l.h2_upgrade =
                h.h2_upgrade_policy == Some(mesh_api::networking::H2UpgradePolicy::Upgrade);
        }
        Ok(l)
    }
}

/// Why no connection was leased.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("overflow: {0} limit reached")]
    Overflow(&'static str),
    #[error("connect failure: {0}")]
    Connect(std::io::Error),
    #[error("connect timeout")]
    ConnectTimeout,
}

struct Idle {
    sender: Sender,
    used: u32,
}

#[derive(Default)]
struct State {
    idle: HashMap<SocketAddr, Vec<Idle>>,
    connections: usize,
    pending: usize,
    active: usize,
    active_by_host: HashMap<SocketAddr, usize>,
    // HTTP/2 connections (open ones count in `connections`).
    h2: HashMap<SocketAddr, Vec<H2Conn>>,
    /// HTTP/2 connections being opened per endpoint: requests wait for them
    /// rather than open their own.
    h2_connecting: HashMap<SocketAddr, usize>,
    next_h2_id: u64,
    /// Endpoints that answered over HTTP/2, and those that failed it
    /// before ever answering (HTTP/1.1-only servers: spoken to in HTTP/1.1).
    h2_works: std::collections::HashSet<SocketAddr>,
    h1_only: std::collections::HashSet<SocketAddr>,
}

/// Counters, for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub connections: usize,
    pub pending: usize,
    pub active: usize,
    pub idle: usize,
}

pub struct Pool {
    pub limits: PoolLimits,
    connector: Arc<dyn Connector>,
    state: Mutex<State>,
    released: Notify,
}

/// A connection leased for one request. Dropped: the connection goes back
/// (if `reusable`) or is closed, and the request stops counting as active.
pub struct Lease {
    pool: Arc<Pool>,
    addr: SocketAddr,
    sender: Option<Sender>,
    used: u32,
    /// The HTTP/2 connection this lease shares (0: HTTP/1.1).
    h2_conn: u64,
    /// Set when the response was read to the end and the connection may
    /// carry another request.
    pub reusable: bool,
}

impl Lease {
    pub fn sender(&mut self) -> Option<&mut Sender> {
        self.sender.as_mut()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The protocol of the leased connection.
    pub fn proto(&self) -> Option<Proto> {
        self.sender.as_ref().map(Sender::proto)
    }
}

impl OnEnd for Lease {
    fn finish(&mut self, complete: bool) {
        self.reusable = complete;
        // Dropping the lease happens with the body; releasing early lets the
        // next request in as soon as the response has ended.
        self.release();
    }
}

impl Lease {
    fn release(&mut self) {
        let Some(sender) = self.sender.take() else {
            return;
        };
        let pool = self.pool.clone();
        // An HTTP/2 lease gives back a stream, not the connection.
        if let Sender::H2(_) = sender {
            pool.release_h2(self.addr, self.h2_conn);
            return;
        }
        {
            let mut st = pool.lock();
            st.active = st.active.saturating_sub(1);
            if let Some(n) = st.active_by_host.get_mut(&self.addr) {
                *n = n.saturating_sub(1);
            }
            let limit = pool.limits.max_requests_per_connection;
            let keep = self.reusable && !sender.is_closed() && (limit == 0 || self.used < limit);
            if keep {
                st.idle.entry(self.addr).or_default().push(Idle {
                    sender,
                    used: self.used,
                });
            } else {
                st.connections = st.connections.saturating_sub(1);
            }
        }
        pool.released.notify_waiters();
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.release();
    }
}

enum Step {
    Use(Idle),
    Connect,
    Wait,
}

impl Pool {
    pub fn new(limits: PoolLimits, connector: Arc<dyn Connector>) -> Arc<Self> {
        Arc::new(Pool {
            limits,
            connector,
            state: Mutex::new(State::default()),
            released: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn stats(&self) -> PoolStats {
        let st = self.lock();
        PoolStats {
            connections: st.connections,
            pending: st.pending,
            active: st.active,
            idle: st.idle.values().map(Vec::len).sum::<usize>()
                + st.h2
                    .values()
                    .flatten()
                    .filter(|c| c.in_flight == 0)
                    .count(),
        }
    }

    /// Requests in flight to `addr`.
    pub fn active_to(&self, addr: SocketAddr) -> usize {
        self.lock().active_by_host.get(&addr).copied().unwrap_or(0)
    }

    /// Leases a connection to `ep`, opening one or waiting as the limits
    /// allow.
    pub async fn acquire(self: &Arc<Self>, ep: &Endpoint) -> Result<Lease, PoolError> {
        {
            let mut st = self.lock();
            if st.active >= self.limits.max_requests {
                return Err(PoolError::Overflow("max requests"));
            }
            st.active += 1;
            *st.active_by_host.entry(ep.addr).or_default() += 1;
        }
        // From here the request counts as active; undo on failure.
        let mut admitted = Admitted {
            pool: self,
            addr: ep.addr,
            pending: false,
            armed: true,
        };
        loop {
            let notified = self.released.notified();
            tokio::pin!(notified);
            let step = {
                let mut st = self.lock();
                let mut found = None;
                let mut dead = 0;
                if let Some(list) = st.idle.get_mut(&ep.addr) {
                    while let Some(i) = list.pop() {
                        if i.sender.is_closed() {
                            dead += 1;
                            continue;
                        }
                        found = Some(i);
                        break;
                    }
                }
                st.connections = st.connections.saturating_sub(dead);
                match found {
                    Some(i) => Step::Use(i),
                    None => {
                        if st.connections < self.limits.max_connections {
                            st.connections += 1;
                            Step::Connect
                        } else if let Some(victim) = st
                            .idle
                            .iter_mut()
                            .find(|(a, l)| **a != ep.addr && !l.is_empty())
                            .and_then(|(_, l)| l.pop())
                        {
                            // Close an idle connection to another endpoint
                            // and open one to this one in its place.
                            drop(victim);
                            Step::Connect
                        } else {
                            if !admitted.pending {
                                if st.pending >= self.limits.max_pending {
                                    return Err(PoolError::Overflow("pending requests"));
                                }
                                st.pending += 1;
                                admitted.pending = true;
                            }
                            notified.as_mut().enable();
                            Step::Wait
                        }
                    }
                }
            };
            match step {
                Step::Use(mut idle) => {
                    // Counted in `connections`: given back if the idle
                    // connection is dead or this request goes away.
                    let slot = Slot::new(self);
                    if idle.sender.ready().await.is_ok() {
                        slot.keep();
                        admitted.armed = false;
                        return Ok(self.lease(ep.addr, idle.sender, idle.used + 1, &mut admitted));
                    }
                    // A dead idle connection: forget it and try again.
                }
                Step::Connect => {
                    // Counted when decided; given back unless it opens
                    // (also when this request is cancelled meanwhile).
                    let slot = Slot::new(self);
                    let opened =
                        tokio::time::timeout(self.limits.connect_timeout, self.open(ep)).await;
                    match opened {
                        Ok(Ok(sender)) => {
                            slot.keep();
                            admitted.armed = false;
                            return Ok(self.lease(ep.addr, sender, 1, &mut admitted));
                        }
                        Ok(Err(e)) => return Err(PoolError::Connect(e)),
                        Err(_) => return Err(PoolError::ConnectTimeout),
                    }
                }
                Step::Wait => notified.await,
            }
        }
    }

    fn lease(
        self: &Arc<Self>,
        addr: SocketAddr,
        sender: Sender,
        used: u32,
        a: &mut Admitted<'_>,
    ) -> Lease {
        if a.pending {
            let mut st = self.lock();
            st.pending = st.pending.saturating_sub(1);
            a.pending = false;
        }
        Lease {
            pool: self.clone(),
            addr,
            sender: Some(sender),
            used,
            h2_conn: 0,
            reusable: false,
        }
    }

    async fn open(&self, ep: &Endpoint) -> std::io::Result<Sender> {
        let io = self.connector.connect(ep).await?;
        let (sender, conn) = http1::handshake(TokioIo::new(io))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(Sender::H1(sender))
    }
}

// HTTP/2 upstreams.
enum H2Step {
    Use(u64, http2::SendRequest<UpstreamBody>, u32),
    Connect,
    Wait,
}

impl Pool {
    /// Leases a connection to `ep` speaking `proto`.
    pub async fn acquire_proto(
        self: &Arc<Self>,
        ep: &Endpoint,
        proto: Proto,
    ) -> Result<Lease, PoolError> {
        match proto {
            Proto::Http1 => self.acquire(ep).await,
            Proto::Http2 => self.acquire_h2(ep).await,
        }
    }

    /// Leases a stream on an HTTP/2 connection to `ep`: an open one with
    /// room, one being opened, or a new one as `maxConnections` allows.
    async fn acquire_h2(self: &Arc<Self>, ep: &Endpoint) -> Result<Lease, PoolError> {
        {
            let mut st = self.lock();
            if st.active >= self.limits.max_requests {
                return Err(PoolError::Overflow("max requests"));
            }
            st.active += 1;
            *st.active_by_host.entry(ep.addr).or_default() += 1;
        }
        let mut admitted = Admitted {
            pool: self,
            addr: ep.addr,
            pending: false,
            armed: true,
        };
        let limit = self.limits.max_requests_per_connection;
        loop {
            let notified = self.released.notified();
            tokio::pin!(notified);
            let step = {
                let mut guard = self.lock();
                let st = &mut *guard;
                let mut found = None;
                let mut dead = 0;
                if let Some(list) = st.h2.get_mut(&ep.addr) {
                    list.retain(|c| {
                        let gone = c.in_flight == 0 && c.sender.is_closed();
                        dead += usize::from(gone);
                        !gone
                    });
                    if let Some(c) = list
                        .iter_mut()
                        .find(|c| !c.sender.is_closed() && (limit == 0 || c.used < limit))
                    {
                        c.used += 1;
                        c.in_flight += 1;
                        found = Some(H2Step::Use(c.id, c.sender.clone(), c.used));
                    }
                }
                st.connections = st.connections.saturating_sub(dead);
                let connecting = st.h2_connecting.get(&ep.addr).copied().unwrap_or(0) > 0;
                match found {
                    Some(s) => s,
                    None if !connecting && st.connections < self.limits.max_connections => {
                        st.connections += 1;
                        H2Step::Connect
                    }
                    None if !connecting && evict_idle(st, ep.addr) => H2Step::Connect,
                    None => {
                        if !admitted.pending {
                            if st.pending >= self.limits.max_pending {
                                return Err(PoolError::Overflow("pending requests"));
                            }
                            st.pending += 1;
                            admitted.pending = true;
                        }
                        notified.as_mut().enable();
                        H2Step::Wait
                    }
                }
            };
            match step {
                H2Step::Use(id, sender, used) => {
                    admitted.armed = false;
                    let mut l = self.lease(ep.addr, Sender::H2(sender), used, &mut admitted);
                    l.h2_conn = id;
                    return Ok(l);
                }
                H2Step::Wait => notified.await,
                H2Step::Connect => {
                    // Counted as connecting until it ends, even if this
                    // future is dropped (a per-try timeout).
                    let mut connecting = Connecting::new(self, ep.addr);
                    let opened =
                        tokio::time::timeout(self.limits.connect_timeout, self.open_h2(ep)).await;
                    let sender = match opened {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => return Err(PoolError::Connect(e)),
                        Err(_) => return Err(PoolError::ConnectTimeout),
                    };
                    let id = {
                        let mut st = self.lock();
                        st.next_h2_id += 1;
                        let id = st.next_h2_id;
                        st.h2.entry(ep.addr).or_default().push(H2Conn {
                            id,
                            sender: sender.clone(),
                            used: 1,
                            in_flight: 1,
                        });
                        id
                    };
                    connecting.opened = true;
                    drop(connecting);
                    admitted.armed = false;
                    let mut l = self.lease(ep.addr, Sender::H2(sender), 1, &mut admitted);
                    l.h2_conn = id;
                    return Ok(l);
                }
            }
        }
    }

    /// Whether `addr` is known not to speak HTTP/2.
    pub fn h1_only(&self, addr: SocketAddr) -> bool {
        self.lock().h1_only.contains(&addr)
    }

    /// `addr` answered (`ok`) or failed a request over HTTP/2. Returns true
    /// when it has never answered over HTTP/2 and is now taken for an
    /// HTTP/1.1-only server.
    pub fn h2_result(&self, addr: SocketAddr, ok: bool) -> bool {
        let mut st = self.lock();
        if ok {
            st.h2_works.insert(addr);
            return false;
        }
        !st.h2_works.contains(&addr) && st.h1_only.insert(addr)
    }

    /// One request on HTTP/2 connection `id` ended. A connection that is
    /// closed or spent closes once its last stream ends.
    fn release_h2(&self, addr: SocketAddr, id: u64) {
        let limit = self.limits.max_requests_per_connection;
        {
            let mut guard = self.lock();
            let st = &mut *guard;
            st.active = st.active.saturating_sub(1);
            if let Some(n) = st.active_by_host.get_mut(&addr) {
                *n = n.saturating_sub(1);
            }
            if let Some(list) = st.h2.get_mut(&addr) {
                if let Some(i) = list.iter().position(|c| c.id == id) {
                    let c = &mut list[i];
                    c.in_flight = c.in_flight.saturating_sub(1);
                    let spent = limit != 0 && c.used >= limit;
                    if c.in_flight == 0 && (spent || c.sender.is_closed()) {
                        // Dropping the last sender ends the connection.
                        list.swap_remove(i);
                        st.connections = st.connections.saturating_sub(1);
                    }
                }
            }
        }
        self.released.notify_waiters();
    }

    async fn open_h2(&self, ep: &Endpoint) -> std::io::Result<http2::SendRequest<UpstreamBody>> {
        let io = self.connector.connect(ep).await?;
        let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream h2 connection ended");
            }
        });
        Ok(sender)
    }
}

/// Closes an idle connection (HTTP/1.1, or HTTP/2 without streams) to an
/// endpoint other than `addr`, so one to `addr` may open in its place.
fn evict_idle(st: &mut State, addr: SocketAddr) -> bool {
    if let Some(victim) = st
        .idle
        .iter_mut()
        .find(|(a, l)| **a != addr && !l.is_empty())
        .and_then(|(_, l)| l.pop())
    {
        drop(victim);
        return true;
    }
    for (a, list) in st.h2.iter_mut() {
        if *a == addr {
            continue;
        }
        if let Some(i) = list.iter().position(|c| c.in_flight == 0) {
            list.swap_remove(i);
            return true;
        }
    }
    false
}

/// An HTTP/2 connection being opened to `addr`; dropped unopened (failure
/// or cancellation) it gives its slot back and wakes the requests waiting.
struct Connecting<'a> {
    pool: &'a Pool,
    addr: SocketAddr,
    opened: bool,
}

impl<'a> Connecting<'a> {
    fn new(pool: &'a Pool, addr: SocketAddr) -> Self {
        *pool.lock().h2_connecting.entry(addr).or_default() += 1;
        Connecting {
            pool,
            addr,
            opened: false,
        }
    }
}

impl Drop for Connecting<'_> {
    fn drop(&mut self) {
        {
            let mut st = self.pool.lock();
            if let Some(n) = st.h2_connecting.get_mut(&self.addr) {
                *n = n.saturating_sub(1);
            }
            if !self.opened {
                st.connections = st.connections.saturating_sub(1);
            }
        }
        self.pool.released.notify_waiters();
    }
}

/// A place in `connections` taken for a connection being opened or
/// checked; dropped before [`Slot::keep`] it is given back and the
/// requests waiting for one are woken.
struct Slot<'a> {
    pool: &'a Pool,
    kept: bool,
}

impl<'a> Slot<'a> {
    fn new(pool: &'a Pool) -> Self {
        Slot { pool, kept: false }
    }

    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        {
            let mut st = self.pool.lock();
            st.connections = st.connections.saturating_sub(1);
        }
        self.pool.released.notify_waiters();
    }
}

/// Undoes the admission of a request that got no connection.
struct Admitted<'a> {
    pool: &'a Pool,
    addr: SocketAddr,
    pending: bool,
    armed: bool,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        let mut st = self.pool.lock();
        if self.pending {
            st.pending = st.pending.saturating_sub(1);
        }
        if self.armed {
            st.active = st.active.saturating_sub(1);
            if let Some(n) = st.active_by_host.get_mut(&self.addr) {
                *n = n.saturating_sub(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::connector::{BoxIo, ConnectFuture};

    /// Its first connect never completes; the later ones reach `addr`.
    struct FirstHangs {
        calls: AtomicUsize,
        addr: SocketAddr,
    }

    impl Connector for FirstHangs {
        fn connect<'a>(&'a self, _: &'a Endpoint) -> ConnectFuture<'a> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                if n == 0 {
                    std::future::pending::<()>().await;
                }
                let s = tokio::net::TcpStream::connect(self.addr).await?;
                Ok(Box::new(s) as BoxIo)
            })
        }
    }

    /// A request cancelled while its connection is being opened (a route
    /// timeout, the caller gone) gives its place under `maxConnections`
    /// back: the next request opens a connection instead of waiting for
    /// one that will never come.
    #[tokio::test]
    async fn a_connect_cancelled_midway_frees_its_connection_slot() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                // Held open; the test never sends a request.
                tokio::spawn(async move {
                    let _s = s;
                    std::future::pending::<()>().await;
                });
            }
        });
        let limits = PoolLimits {
            max_connections: 1,
            ..Default::default()
        };
        let connector = Arc::new(FirstHangs {
            calls: AtomicUsize::new(0),
            addr,
        });
        let pool = Pool::new(limits, connector.clone());
        let ep = Endpoint::new(addr, &[]);
        let cancelled = tokio::time::timeout(Duration::from_millis(100), pool.acquire(&ep)).await;
        assert!(cancelled.is_err(), "the first connect hangs");
        let lease = tokio::time::timeout(Duration::from_secs(2), pool.acquire(&ep))
            .await
            .expect("the second request is not left waiting")
            .expect("a connection");
        drop(lease);
        assert_eq!(connector.calls.load(Ordering::SeqCst), 2);
    }
}
