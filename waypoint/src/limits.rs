//! Timeouts and limits wherever a client can hold resources: how long a
//! request head may take, how long a connection may sit idle, how many
//! connections a listener keeps, how many HTTP/2 streams one connection
//! may open, and how many bytes of request bodies the process buffers.
//!
//! Defaults follow Envoy's, as an Istio operator knows them:
//!
//! | limit | default | Envoy |
//! |---|---|---|
//! | request head read | 30 s | `request_headers_timeout` (off by default) |
//! | idle connection | 1 h | `common_http_protocol_options.idle_timeout` (1 h), tcp_proxy `idle_timeout` (1 h) |
//! | connections per listener | 10,000 | overload manager `max_active_downstream_connections` |
//! | HTTP/2 streams per connection | 100 | `max_concurrent_streams` as Istio sets it |
//! | buffered request bodies, all requests | 64 MiB | overload manager (`x-envoy-overloaded: true`) |
//!
//! Envoy leaves the header timeout off; a slowloris client (one byte of
//! head per second) then holds a connection and a task for as long as it
//! likes, so it is on here, with hyper's own default of 30 s.
//!
//! The header and idle timers are this module's, not hyper's: hyper's
//! `header_read_timeout` starts when it begins waiting for a head, so it
//! also cuts a keep-alive connection idle between requests at 30 s, and
//! hyper-util's protocol detection runs with no timer at all. Here, as in
//! Envoy, the head timer starts at the first byte of a head and the idle
//! timer when the last request of the connection has ended.
//!
//! At the connection cap the listener closes the connection that has been
//! without a request the longest to make room, and only when every
//! connection has a request in flight refuses the new one (accepted and
//! closed at once). Envoy refuses the new connection; then 10,000 idle
//! connections from one client shut out everyone else, which is what the
//! cap is meant to prevent.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rand::Rng;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tracing::debug;

use crate::body::{BoxError, ProxyBody};

/// See the module docs for each default and why.
#[derive(Clone, Debug)]
pub struct Limits {
    /// From the first byte of a request head to its end (HTTP/1.1, and
    /// the HTTP/2 connection preface).
    pub header_read_timeout: Duration,
    /// A connection with no request in flight (an HBONE connection with
    /// no tunnel, a TCP relay with no byte either way) is closed after it.
    pub idle_timeout: Duration,
    /// Connections one listener keeps open.
    pub max_connections: usize,
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS` of downstream connections.
    pub max_concurrent_streams: u32,
    /// Bytes of request bodies buffered (mirrors, retry buffers) across
    /// all requests of the process.
    pub buffered_body_budget: usize,
}

pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
pub const MAX_CONNECTIONS: usize = 10_000;
pub const MAX_CONCURRENT_STREAMS: u32 = 100;
pub const BUFFERED_BODY_BUDGET: usize = 64 << 20;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: HEADER_READ_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
            max_concurrent_streams: MAX_CONCURRENT_STREAMS,
            buffered_body_budget: BUFFERED_BODY_BUDGET,
        }
    }
}

/// The `waypoint` binary's flags for [`Limits`].
#[derive(clap::Args, Debug, Clone)]
pub struct LimitArgs {
    /// Seconds from a request head's first byte to its end.
    #[arg(long, default_value_t = HEADER_READ_TIMEOUT.as_secs())]
    pub header_read_timeout_secs: u64,
    /// Seconds a connection may have no request in flight.
    #[arg(long, default_value_t = IDLE_TIMEOUT.as_secs())]
    pub idle_timeout_secs: u64,
    /// Connections each listener keeps open.
    #[arg(long, default_value_t = MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// HTTP/2 streams per downstream connection.
    #[arg(long, default_value_t = MAX_CONCURRENT_STREAMS)]
    pub max_concurrent_streams: u32,
    /// Bytes of request bodies buffered across all requests.
    #[arg(long, default_value_t = BUFFERED_BODY_BUDGET)]
    pub buffered_body_budget: usize,
}

impl LimitArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(self.header_read_timeout_secs),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            max_connections: self.max_connections,
            max_concurrent_streams: self.max_concurrent_streams,
            buffered_body_budget: self.buffered_body_budget,
        }
    }
}

// ------------------------------------------------------------- metrics --

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabel {
    listener: String,
}

/// The limits' metrics, named after Envoy's stats where Envoy has one.
#[derive(Clone, Debug)]
pub struct LimitMetrics {
    cx_active: Family<ListenerLabel, Gauge>,
    cx_overflow: Family<ListenerLabel, Counter>,
    cx_evicted: Family<ListenerLabel, Counter>,
    cx_idle_timeout: Family<ListenerLabel, Counter>,
    rq_header_timeout: Family<ListenerLabel, Counter>,
    body_bytes: Gauge,
    body_overflow: Counter,
}

impl LimitMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = LimitMetrics {
            cx_active: Family::default(),
            cx_overflow: Family::default(),
            cx_evicted: Family::default(),
            cx_idle_timeout: Family::default(),
            rq_header_timeout: Family::default(),
            body_bytes: Gauge::default(),
            body_overflow: Counter::default(),
        };
        registry.register(
            "envoy_listener_downstream_cx_active",
            "Open downstream connections",
            m.cx_active.clone(),
        );
        registry.register(
            "envoy_listener_downstream_cx_overflow",
            "Connections refused at the cap (every open one had a request in flight)",
            m.cx_overflow.clone(),
        );
        registry.register(
            "ambit_listener_downstream_cx_evicted",
            "Idle connections closed at the cap to make room for a new one",
            m.cx_evicted.clone(),
        );
        registry.register(
            "envoy_http_downstream_cx_idle_timeout",
            "Connections closed by the idle timeout",
            m.cx_idle_timeout.clone(),
        );
        registry.register(
            "envoy_http_downstream_rq_header_timeout",
            "Connections cut because a request head was not complete in time",
            m.rq_header_timeout.clone(),
        );
        registry.register(
            "ambit_buffered_request_body_bytes",
            "Request body bytes buffered across all requests",
            m.body_bytes.clone(),
        );
        registry.register(
            "ambit_buffered_request_body_overflow",
            "Requests that could not buffer their body within the process-wide budget",
            m.body_overflow.clone(),
        );
        m
    }

    /// The counters of one listener (`hbone`, `gateway:443`, ...).
    pub fn listener(&self, name: &str) -> ListenerStats {
        let l = ListenerLabel {
            listener: name.to_string(),
        };
        ListenerStats {
            active: self.cx_active.get_or_create(&l).clone(),
            overflow: self.cx_overflow.get_or_create(&l).clone(),
            evicted: self.cx_evicted.get_or_create(&l).clone(),
            idle_timeout: self.cx_idle_timeout.get_or_create(&l).clone(),
            header_timeout: self.rq_header_timeout.get_or_create(&l).clone(),
        }
    }
}

/// One listener's counters.
#[derive(Clone, Debug, Default)]
pub struct ListenerStats {
    active: Gauge,
    overflow: Counter,
    evicted: Counter,
    idle_timeout: Counter,
    header_timeout: Counter,
}

impl ListenerStats {
    /// One connection (or relay) closed by its idle timeout.
    pub fn count_idle_timeout(&self) {
        self.idle_timeout.inc();
    }
}

// ---------------------------------------------------------- body budget --

/// The bytes of request bodies the process may buffer, shared by every
/// request (a per-request limit alone lets many requests add up).
#[derive(Debug)]
pub struct BodyBudget {
    max: usize,
    used: AtomicUsize,
    gauge: Gauge,
    overflow: Counter,
}

impl BodyBudget {
    pub fn new(max: usize, metrics: &LimitMetrics) -> Arc<Self> {
        Arc::new(BodyBudget {
            max,
            used: AtomicUsize::new(0),
            gauge: metrics.body_bytes.clone(),
            overflow: metrics.body_overflow.clone(),
        })
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// An empty reservation, grown as a body is buffered.
    pub fn reservation(self: &Arc<Self>) -> Reservation {
        Reservation {
            budget: self.clone(),
            bytes: 0,
        }
    }
}

/// Bytes one request holds of the [`BodyBudget`]; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<BodyBudget>,
    bytes: usize,
}

impl Reservation {
    /// Takes `n` more bytes; `false` (nothing taken, counted as an
    /// overflow) when the budget cannot spare them.
    pub fn grow(&mut self, n: usize) -> bool {
        let b = &self.budget;
        let taken = b
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&u| u <= b.max)
            });
        if taken.is_err() {
            b.overflow.inc();
            return false;
        }
        self.bytes += n;
        b.gauge.inc_by(n as i64);
        true
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
            self.budget.gauge.dec_by(self.bytes as i64);
        }
    }
}

// ------------------------------------------------------ one connection --

/// Milliseconds since the first call (a process-wide clock for atomics).
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    ms(START.get_or_init(Instant::now).elapsed())
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What one connection is doing, as its timers and its listener see it.
#[derive(Debug)]
pub struct ConnState {
    /// Requests (or tunnels) in flight: from the complete head to the end
    /// of the response body.
    active: AtomicUsize,
    /// When `active` last fell to 0 (or the connection opened).
    idle_since: AtomicU64,
    /// When the first byte of a head came in, plus 1; 0: no head started.
    head_since: AtomicU64,
    /// The connection speaks HTTP/2 (its preface was read): heads are
    /// frames of streams, no longer timed here.
    h2: AtomicBool,
    /// Closed by its listener to make room.
    evicted: AtomicBool,
    /// Last byte read or written.
    last_io: AtomicU64,
    /// Position in its listener's table (`usize::MAX`: not in one).
    index: AtomicUsize,
    changed: Notify,
}

/// Why a connection's timers ended it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expired {
    Evicted,
    HeaderTimeout,
    Idle,
}

impl ConnState {
    pub fn new() -> Arc<Self> {
        let now = now_ms();
        Arc::new(ConnState {
            active: AtomicUsize::new(0),
            idle_since: AtomicU64::new(now),
            head_since: AtomicU64::new(0),
            h2: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            last_io: AtomicU64::new(now),
            index: AtomicUsize::new(usize::MAX),
            changed: Notify::new(),
        })
    }

    /// A request (or tunnel) starts; it is in flight while the guard lives.
    pub fn begin(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::AcqRel);
        self.head_since.store(0, Ordering::Release);
        ActiveGuard(self.clone())
    }

    /// No request in flight.
    pub fn is_idle(&self) -> bool {
        self.active.load(Ordering::Acquire) == 0
    }

    fn evict(&self) {
        self.evicted.store(true, Ordering::Release);
        self.changed.notify_waiters();
    }

    /// The idle period starts over now.
    fn restart_idle(&self) {
        self.idle_since.store(now_ms(), Ordering::Release);
    }

    fn saw_head_byte(&self) {
        if self.h2.load(Ordering::Acquire) || !self.is_idle() {
            return;
        }
        if self
            .head_since
            .compare_exchange(0, now_ms() + 1, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.changed.notify_waiters();
        }
    }

    /// Resolves when the connection is evicted, when a head started and
    /// was not complete within `header` (if any), or when it has had no
    /// request in flight for `idle`.
    pub async fn expired(&self, header: Option<Duration>, idle: Duration) -> Expired {
        loop {
            // Registered before the state is read: no change is missed.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.evicted.load(Ordering::Acquire) {
                return Expired::Evicted;
            }
            let deadline = if !self.is_idle() {
                None
            } else {
                match (self.head_since.load(Ordering::Acquire), header) {
                    (h, Some(t)) if h != 0 => {
                        Some(((h - 1).saturating_add(ms(t)), Expired::HeaderTimeout))
                    }
                    _ => Some((
                        self.idle_since
                            .load(Ordering::Acquire)
                            .saturating_add(ms(idle)),
                        Expired::Idle,
                    )),
                }
            };
            match deadline {
                None => changed.await,
                Some((at, why)) => {
                    let now = now_ms();
                    if at <= now {
                        return why;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(at - now)) => {}
                        _ = changed => {}
                    }
                }
            }
        }
    }

    /// Resolves once the connection is evicted.
    pub async fn evicted(&self) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.evicted.load(Ordering::Acquire) {
                return;
            }
            changed.await;
        }
    }

    /// Resolves once no byte went either way for `idle`.
    pub async fn io_idle(&self, idle: Duration) {
        loop {
            let at = self
                .last_io
                .load(Ordering::Acquire)
                .saturating_add(ms(idle));
            let now = now_ms();
            if at <= now {
                return;
            }
            tokio::time::sleep(Duration::from_millis(at - now)).await;
        }
    }
}

/// A request (or tunnel) in flight on its connection.
#[derive(Debug)]
pub struct ActiveGuard(Arc<ConnState>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.restart_idle();
            self.0.changed.notify_waiters();
        }
    }
}

/// A response body that keeps its request in flight until it ends.
struct Held {
    inner: ProxyBody,
    _guard: ActiveGuard,
}

impl Body for Held {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// [`Tracked::preface`] once the connection is known not to be HTTP/2.
const NOT_H2: usize = usize::MAX;

/// A connection's bytes, watched: the first byte of a head starts the
/// head timer; any byte stamps the last I/O time.
pub struct Tracked<I> {
    inner: I,
    state: Arc<ConnState>,
    /// Bytes of the HTTP/2 preface matched so far.
    preface: usize,
}

impl<I> Tracked<I> {
    pub fn new(inner: I, state: Arc<ConnState>) -> Self {
        Tracked {
            inner,
            state,
            preface: 0,
        }
    }

    fn saw(&mut self, bytes: &[u8]) {
        self.state.last_io.store(now_ms(), Ordering::Release);
        if self.preface < H2_PREFACE.len() {
            let want = &H2_PREFACE[self.preface..];
            let n = bytes.len().min(want.len());
            if bytes[..n] == want[..n] {
                self.preface += n;
                if self.preface == H2_PREFACE.len() {
                    self.state.h2.store(true, Ordering::Release);
                    self.state.head_since.store(0, Ordering::Release);
                    return;
                }
            } else {
                self.preface = NOT_H2;
            }
        }
        // A preface trickled in is timed as a head is.
        self.state.saw_head_byte();
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Tracked<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            if buf.filled().len() > before {
                let new = &buf.filled()[before..];
                this.saw(new);
            }
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tracked<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            if n > 0 {
                this.state.last_io.store(now_ms(), Ordering::Release);
            }
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Serves HTTP/1.1 or HTTP/2 on `io` with `handle` per request, under the
/// head and idle timers of `limits` and its HTTP/2 stream limit. A head
/// not complete in time, or an eviction, closes the connection at once
/// (no request is in flight then); the idle timeout closes it gracefully
/// (HTTP/2: GOAWAY), and cuts it if a late request then outlasts the
/// head timeout.
pub async fn serve_http<I, F, Fut>(
    io: I,
    state: Arc<ConnState>,
    limits: &Limits,
    stats: &ListenerStats,
    handle: F,
) -> Result<(), BoxError>
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    F: Fn(Request<Incoming>) -> Fut + Send + 'static,
    Fut: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Off: this module's timer replaces hyper's (see the module docs).
    builder.http1().header_read_timeout(None);
    builder
        .http2()
        .max_concurrent_streams(limits.max_concurrent_streams);
    let st = state.clone();
    let svc = service_fn(move |req: Request<Incoming>| {
        let guard = st.begin();
        let fut = handle(req);
        async move {
            let resp = fut.await;
            Ok::<_, Infallible>(resp.map(|inner| {
                Held {
                    inner,
                    _guard: guard,
                }
                .boxed_unsync()
            }))
        }
    });
    let conn = builder.serve_connection(TokioIo::new(Tracked::new(io, state.clone())), svc);
    tokio::pin!(conn);
    let mut idle = limits.idle_timeout;
    let mut closing = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => return r,
            why = state.expired(Some(limits.header_read_timeout), idle) => match why {
                Expired::HeaderTimeout => {
                    stats.header_timeout.inc();
                    debug!("request head not complete in time: connection closed");
                    return Ok(());
                }
                Expired::Evicted => {
                    debug!("idle connection closed to make room for another");
                    return Ok(());
                }
                Expired::Idle if closing => return Ok(()),
                Expired::Idle => {
                    stats.idle_timeout.inc();
                    debug!("idle timeout: connection closed");
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                    idle = limits.header_read_timeout;
                    state.restart_idle();
                }
            },
        }
    }
}

// --------------------------------------------------------- a listener --

/// The open connections of one listener, at most `max`.
#[derive(Debug)]
pub struct ConnectionTracker {
    max: usize,
    conns: Mutex<Vec<Arc<ConnState>>>,
    stats: ListenerStats,
}

/// A connection counted by its listener until dropped.
#[derive(Debug)]
pub struct Slot {
    tracker: Arc<ConnectionTracker>,
    pub state: Arc<ConnState>,
}

/// How many connections are looked at to choose one to evict (an
/// approximate least-recently-used choice, as Redis's: a scan of all
/// 10,000 on every accept at the cap would cost more than the attack).
const EVICTION_SAMPLE: usize = 32;

impl ConnectionTracker {
    pub fn new(max: usize, stats: ListenerStats) -> Arc<Self> {
        Arc::new(ConnectionTracker {
            max,
            conns: Mutex::new(Vec::new()),
            stats,
        })
    }

    pub fn stats(&self) -> &ListenerStats {
        &self.stats
    }

    /// Counts a new connection; at the cap an idle connection makes room,
    /// and with none idle the new one is refused (`None`: close it).
    pub fn admit(self: &Arc<Self>) -> Option<Slot> {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        if conns.len() >= self.max {
            match idlest(&conns) {
                Some(i) => {
                    let victim = remove_at(&mut conns, i);
                    victim.evict();
                    self.stats.evicted.inc();
                }
                None => {
                    self.stats.overflow.inc();
                    return None;
                }
            }
        }
        let state = ConnState::new();
        state.index.store(conns.len(), Ordering::Release);
        conns.push(state.clone());
        self.stats.active.set(conns.len() as i64);
        Some(Slot {
            tracker: self.clone(),
            state,
        })
    }

    /// Connections counted now.
    pub fn len(&self) -> usize {
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The connection among a sample that has been without a request the
/// longest; the whole table is scanned when the sample has none idle.
fn idlest(conns: &[Arc<ConnState>]) -> Option<usize> {
    let best = |it: &mut dyn Iterator<Item = usize>| {
        it.filter(|&i| conns[i].is_idle())
            .min_by_key(|&i| conns[i].idle_since.load(Ordering::Acquire))
    };
    if conns.len() > EVICTION_SAMPLE {
        let mut rng = rand::thread_rng();
        let mut sample = (0..EVICTION_SAMPLE).map(|_| rng.gen_range(0..conns.len()));
        if let Some(i) = best(&mut sample) {
            return Some(i);
        }
    }
    best(&mut (0..conns.len()))
}

fn remove_at(conns: &mut Vec<Arc<ConnState>>, i: usize) -> Arc<ConnState> {
    let gone = conns.swap_remove(i);
    gone.index.store(usize::MAX, Ordering::Release);
    if let Some(moved) = conns.get(i) {
        moved.index.store(i, Ordering::Release);
    }
    gone
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut conns = self.tracker.conns.lock().unwrap_or_else(|e| e.into_inner());
        let i = self.state.index.load(Ordering::Acquire);
        if conns.get(i).is_some_and(|c| Arc::ptr_eq(c, &self.state)) {
            remove_at(&mut conns, i);
        }
        self.tracker.stats.active.set(conns.len() as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker(max: usize) -> Arc<ConnectionTracker> {
        ConnectionTracker::new(max, ListenerStats::default())
    }

    #[test]
    fn at_the_cap_the_idlest_connection_makes_room() {
        let t = tracker(2);
        let a = t.admit().expect("a");
        let b = t.admit().expect("b");
        let _busy = a.state.begin();
        let c = t.admit().expect("c evicts the idle b");
        assert!(b.state.evicted.load(Ordering::Acquire));
        assert!(!a.state.evicted.load(Ordering::Acquire));
        assert_eq!(t.len(), 2);
        drop(b);
        assert_eq!(t.len(), 2, "an evicted slot is no longer counted");
        let _busy_c = c.state.begin();
        assert!(t.admit().is_none(), "every connection busy: refused");
        drop(c);
        assert_eq!(t.len(), 1);
        assert_eq!(t.stats().overflow.get(), 1);
        assert_eq!(t.stats().evicted.get(), 1);
    }

    #[test]
    fn the_budget_is_shared_and_given_back() {
        let m = LimitMetrics::register(&mut Registry::default());
        let b = BodyBudget::new(10, &m);
        let mut r1 = b.reservation();
        let mut r2 = b.reservation();
        assert!(r1.grow(6));
        assert!(!r2.grow(5), "6 + 5 is over 10");
        assert!(r2.grow(4));
        assert_eq!(b.used(), 10);
        drop(r1);
        assert_eq!(b.used(), 4);
        assert!(r2.grow(6));
        drop(r2);
        assert_eq!(b.used(), 0);
        assert_eq!(m.body_overflow.get(), 1);
        assert_eq!(m.body_bytes.get(), 0);
    }

    #[test]
    fn the_h2_preface_stops_the_head_timer() {
        let s = ConnState::new();
        let mut t = Tracked::new(tokio::io::empty(), s.clone());
        t.saw(b"PRI * HT");
        assert_ne!(
            s.head_since.load(Ordering::Acquire),
            0,
            "a preface is timed"
        );
        t.saw(b"TP/2.0\r\n\r\nSM\r\n\r\n");
        assert!(s.h2.load(Ordering::Acquire));
        assert_eq!(s.head_since.load(Ordering::Acquire), 0);
        t.saw(b"\x00\x00\x00\x04");
        assert_eq!(
            s.head_since.load(Ordering::Acquire),
            0,
            "frames are not heads"
        );

        let s = ConnState::new();
        let mut t = Tracked::new(tokio::io::empty(), s.clone());
        t.saw(b"G");
        assert_ne!(s.head_since.load(Ordering::Acquire), 0);
        let g = s.begin();
        assert_eq!(s.head_since.load(Ordering::Acquire), 0, "head complete");
        t.saw(b"body");
        assert_eq!(
            s.head_since.load(Ordering::Acquire),
            0,
            "body bytes are not heads"
        );
        drop(g);
        t.saw(b"GET");
        assert_ne!(s.head_since.load(Ordering::Acquire), 0, "the next head");
    }
}
