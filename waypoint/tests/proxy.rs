//! End-to-end tests of the waypoint: real hyper servers (the backends and
//! the waypoint) and real hyper clients, all on 127.0.0.1 with ephemeral
//! ports.
//!
//! Statistical checks use bounds of 4.5 standard deviations of the
//! binomial distribution around the configured share. With n ≥ 2000 and
//! n·p ≥ 200 the normal approximation is good; a correct implementation
//! then fails a check with probability ≈ 7e-6 (two-sided), so the tests do
//! not flake, while a wrong share (say 75/25 for 80/20) sits more than 5
//! standard deviations away and fails.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use waypoint::{Config, Endpoint, StaticDiscovery, TcpConnector, Waypoint};

const SEEDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/istio/");

fn seed(name: &str) -> String {
    std::fs::read_to_string(format!("{SEEDS}{name}")).expect("seed config")
}

// ------------------------------------------------------------ backend --

/// A tiny backend: answers with its own name; can be told to fail (every
/// n-th request, or all) and to be slow.
#[derive(Default)]
struct BackendState {
    hits: AtomicUsize,
    fail_every: AtomicUsize,
    fail_all: AtomicBool,
    fail_status: AtomicU16,
    delay_ms: AtomicU64,
    inflight: AtomicUsize,
    max_inflight: AtomicUsize,
    last: Mutex<Option<(String, HeaderMap)>>,
}

#[derive(Clone)]
struct Backend {
    name: &'static str,
    addr: SocketAddr,
    st: Arc<BackendState>,
}

impl Backend {
    async fn start(name: &'static str) -> Backend {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let st = Arc::new(BackendState::default());
        st.fail_status.store(500, Ordering::SeqCst);
        let b = Backend { name, addr, st };
        let me = b.clone();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                let me = me.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let me = me.clone();
                        async move { Ok::<_, std::convert::Infallible>(me.answer(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        b
    }

    async fn answer(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let st = &self.st;
        let n = st.hits.fetch_add(1, Ordering::SeqCst) + 1;
        let now = st.inflight.fetch_add(1, Ordering::SeqCst) + 1;
        st.max_inflight.fetch_max(now, Ordering::SeqCst);
        *st.last.lock().expect("lock") = Some((
            req.uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            req.headers().clone(),
        ));
        let _ = req.into_body().collect().await;
        let d = st.delay_ms.load(Ordering::SeqCst);
        if d > 0 {
            tokio::time::sleep(Duration::from_millis(d)).await;
        }
        let every = st.fail_every.load(Ordering::SeqCst);
        let fail = st.fail_all.load(Ordering::SeqCst) || n.checked_rem(every) == Some(0);
        st.inflight.fetch_sub(1, Ordering::SeqCst);
        let mut r = Response::new(Full::new(Bytes::from(self.name)));
        if fail {
            *r.status_mut() =
                StatusCode::from_u16(st.fail_status.load(Ordering::SeqCst)).expect("status");
        }
        r.headers_mut()
            .insert("x-backend", self.name.parse().expect("value"));
        r
    }

    fn hits(&self) -> usize {
        self.st.hits.load(Ordering::SeqCst)
    }

    fn endpoint(&self, version: &str) -> Endpoint {
        Endpoint::new(self.addr, &[("version", version)])
    }

    fn last(&self) -> (String, HeaderMap) {
        self.st
            .last
            .lock()
            .expect("lock")
            .clone()
            .expect("a request")
    }
}

// ------------------------------------------------------ proxy, client --

async fn start_proxy(yaml: &str, disc: StaticDiscovery) -> (SocketAddr, Arc<Waypoint>) {
    let (cfg, issues) = Config::from_yaml(yaml, "test.yaml");
    assert!(issues.is_empty(), "config issues: {issues:?}");
    let wp = Waypoint::new(cfg, Arc::new(disc), Arc::new(TcpConnector));
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(wp.clone().serve(l));
    (addr, wp)
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

/// An HTTP/1.1 keep-alive client to the waypoint (reconnects if needed).
struct Client {
    addr: SocketAddr,
    sender: Option<http1::SendRequest<Full<Bytes>>>,
}

impl Client {
    fn new(addr: SocketAddr) -> Self {
        Client { addr, sender: None }
    }

    async fn get(&mut self, host: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        let ready = match self.sender.as_mut() {
            Some(s) => s.ready().await.is_ok(),
            None => false,
        };
        if !ready {
            let s = TcpStream::connect(self.addr).await.expect("connect");
            let (sender, conn) = http1::handshake(TokioIo::new(s)).await.expect("handshake");
            tokio::spawn(conn);
            self.sender = Some(sender);
        }
        let mut b = Request::builder().uri(path).header("host", host);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(Bytes::new())).expect("request");
        let resp = self
            .sender
            .as_mut()
            .expect("sender")
            .send_request(req)
            .await
            .expect("response");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }
}

async fn get_once(addr: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    Client::new(addr).get(host, path, headers).await
}

/// Three reviews backends (v1, v2, v3) behind host `reviews`.
async fn reviews() -> (Vec<Backend>, StaticDiscovery) {
    let bs = vec![
        Backend::start("v1").await,
        Backend::start("v2").await,
        Backend::start("v3").await,
    ];
    let d = StaticDiscovery::new().with("reviews", bs.iter().map(|b| b.endpoint(b.name)).collect());
    (bs, d)
}

const REVIEWS_DR: &str = "
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
";

// -------------------------------------------------------------- tests --

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jason_goes_to_v2_everyone_else_to_v1() {
    let (bs, d) = reviews().await;
    let yaml = format!(
        "{}\n---\n{}",
        seed("54-004-virtualservice-reviews.yaml"),
        seed("52-004-destinationrule-destination-rule-all.yaml")
    );
    let (addr, _wp) = start_proxy(&yaml, d).await;
    let mut c = Client::new(addr);
    for _ in 0..20 {
        let r = c
            .get("reviews:9080", "/reviews/1", &[("end-user", "jason")])
            .await;
        assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "v2"));
    }
    for user in ["mary", ""] {
        for _ in 0..20 {
            let r = c.get("reviews", "/reviews/1", &[("end-user", user)]).await;
            assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "v1"));
        }
    }
    let r = c.get("reviews", "/", &[]).await;
    assert_eq!(r.body, "v1");
    assert_eq!(bs[0].hits(), 41);
    assert_eq!(bs[1].hits(), 20);
    assert_eq!(bs[2].hits(), 0);
}

async fn split(w1: u32, w3: u32) {
    let (bs, d) = reviews().await;
    let yaml = format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews}}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {{host: reviews, subset: v1}}
      weight: {w1}
    - destination: {{host: reviews, subset: v3}}
      weight: {w3}
---
{REVIEWS_DR}"
    );
    let (addr, _wp) = start_proxy(&yaml, d).await;
    let mut c = Client::new(addr);
    let n = 2000usize;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..n {
        let r = c.get("reviews", "/", &[]).await;
        assert_eq!(r.status, StatusCode::OK);
        *counts.entry(r.body).or_default() += 1;
    }
    let p = f64::from(w1) / 100.0;
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    let v1 = counts.get("v1").copied().unwrap_or(0) as f64;
    assert!(
        (v1 - mean).abs() <= 4.5 * sd,
        "{w1}/{w3}: v1 got {v1} of {n}, expected {mean} ± {:.0}",
        4.5 * sd
    );
    assert_eq!(
        counts.get("v1").copied().unwrap_or(0) + counts.get("v3").copied().unwrap_or(0),
        n
    );
    assert_eq!(bs[1].hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn split_80_20() {
    split(80, 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn split_90_10() {
    split(90, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fixed_delay_of_two_seconds() {
    let (_bs, d) = reviews().await;
    let yaml = format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews}}
spec:
  hosts: [reviews]
  http:
  - match: [{{headers: {{test: {{exact: delay}}}}}}]
    fault:
      delay: {{fixedDelay: 2s, percentage: {{value: 100}}}}
    route: [{{destination: {{host: reviews, subset: v1}}}}]
  - route: [{{destination: {{host: reviews, subset: v1}}}}]
---
{REVIEWS_DR}"
    );
    let (addr, _wp) = start_proxy(&yaml, d).await;
    let t = Instant::now();
    let r = get_once(addr, "reviews", "/", &[("test", "delay")]).await;
    let took = t.elapsed();
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "v1"));
    assert!(took >= Duration::from_secs(2), "{took:?}");
    assert!(took < Duration::from_millis(3500), "{took:?}");
    let t = Instant::now();
    let r = get_once(addr, "reviews", "/", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "undelayed request was slow"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_percent_abort() {
    let (bs, d) = reviews().await;
    let yaml = format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews}}
spec:
  hosts: [reviews]
  http:
  - fault:
      abort: {{httpStatus: 500, percentage: {{value: 10}}}}
    route: [{{destination: {{host: reviews, subset: v1}}}}]
---
{REVIEWS_DR}"
    );
    let (addr, _wp) = start_proxy(&yaml, d).await;
    let mut c = Client::new(addr);
    let n = 2000usize;
    let mut aborted = 0;
    for _ in 0..n {
        let r = c.get("reviews", "/", &[]).await;
        match r.status {
            StatusCode::INTERNAL_SERVER_ERROR => {
                assert_eq!(r.body, "fault filter abort");
                aborted += 1;
            }
            StatusCode::OK => assert_eq!(r.body, "v1"),
            s => panic!("unexpected {s}"),
        }
    }
    let (mean, sd) = (200.0, (n as f64 * 0.1 * 0.9).sqrt());
    assert!(
        (aborted as f64 - mean).abs() <= 4.5 * sd,
        "aborted {aborted} of {n}, expected {mean} ± {:.0}",
        4.5 * sd
    );
    // Aborted requests never reach the backend.
    assert_eq!(bs[0].hits(), n - aborted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn timeout_cuts_a_slow_backend() {
    let slow = Backend::start("slow").await;
    slow.st.delay_ms.store(3000, Ordering::SeqCst);
    let d = StaticDiscovery::new().with("slow", vec![slow.endpoint("v1")]);
    let yaml = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: slow}
spec:
  hosts: [slow]
  http:
  - timeout: 0.5s
    route: [{destination: {host: slow}}]
";
    let (addr, _wp) = start_proxy(yaml, d).await;
    let t = Instant::now();
    let r = get_once(addr, "slow", "/", &[]).await;
    let took = t.elapsed();
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(r.body, "upstream request timeout");
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_millis(1500),
        "{took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_hide_a_backend_failing_one_in_three() {
    let flaky = Backend::start("flaky").await;
    flaky.st.fail_every.store(3, Ordering::SeqCst);
    let bare = Backend::start("bare").await;
    bare.st.fail_every.store(3, Ordering::SeqCst);
    let d = StaticDiscovery::new()
        .with("flaky", vec![flaky.endpoint("v1")])
        .with("bare", vec![bare.endpoint("v1")]);
    let yaml = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: flaky}
spec:
  hosts: [flaky]
  http:
  - retries: {attempts: 3, perTryTimeout: 2s, retryOn: 5xx}
    route: [{destination: {host: flaky}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bare}
spec:
  hosts: [bare]
  http:
  - retries: {attempts: 0}
    route: [{destination: {host: bare}}]
";
    let (addr, _wp) = start_proxy(yaml, d).await;
    let mut c = Client::new(addr);
    let n = 300;
    let mut ok_retry = 0;
    let mut ok_bare = 0;
    for _ in 0..n {
        if c.get("flaky", "/", &[]).await.status == StatusCode::OK {
            ok_retry += 1;
        }
        if c.get("bare", "/", &[]).await.status == StatusCode::OK {
            ok_bare += 1;
        }
    }
    assert!(ok_retry * 100 > n * 99, "with retries: {ok_retry}/{n}");
    // Without retries, exactly one in three fails.
    assert_eq!(ok_bare, n * 2 / 3, "without retries: {ok_bare}/{n}");
    // The failed tries were retried: the flaky backend saw more requests.
    assert!(flaky.hits() > n, "{}", flaky.hits());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mirror_gets_copies_caller_sees_primary() {
    let v1 = Backend::start("v1").await;
    let v2 = Backend::start("v2").await;
    // The mirror is slow and failing: the caller must not notice.
    v2.st.fail_all.store(true, Ordering::SeqCst);
    v2.st.delay_ms.store(300, Ordering::SeqCst);
    let d = StaticDiscovery::new().with("myapp", vec![v1.endpoint("v1"), v2.endpoint("v2")]);
    let yaml = format!(
        "{}\n---\napiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: myapp, namespace: production}}
spec:
  host: myapp
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
",
        seed("44-003-virtualservice-myapp-mirror.yaml")
    );
    let (addr, _wp) = start_proxy(&yaml, d).await;
    let mut c = Client::new(addr);
    let n = 30;
    let t = Instant::now();
    for _ in 0..n {
        let r = c.get("myapp", "/orders", &[]).await;
        assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "v1"));
    }
    // 30 requests do not wait for a 300 ms mirror each.
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    let deadline = Instant::now() + Duration::from_secs(10);
    while v2.hits() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(v1.hits(), n);
    assert_eq!(v2.hits(), n, "mirror copies");
    let (path, headers) = v2.last();
    assert_eq!(path, "/orders");
    assert_eq!(
        headers.get("host").map(|h| h.as_bytes()),
        Some(&b"myapp-shadow"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connection_pool_overflow_is_503_overloaded() {
    let b = Backend::start("busy").await;
    b.st.delay_ms.store(500, Ordering::SeqCst);
    let d = StaticDiscovery::new().with("busy", vec![b.endpoint("v1")]);
    let yaml = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: busy}
spec:
  host: busy
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 1}
      http: {http1MaxPendingRequests: 1}
";
    let (addr, _wp) = start_proxy(yaml, d).await;
    let callers = 10;
    let barrier = Arc::new(tokio::sync::Barrier::new(callers));
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Client::new(addr);
            // Connect first, then fire together.
            let _ = c.get("unknown-host-warmup", "/", &[]).await;
            barrier.wait().await;
            c.get("busy", "/", &[]).await
        }));
    }
    let mut ok = 0;
    let mut overloaded = 0;
    for t in tasks {
        let r = t.await.expect("task");
        match r.status {
            StatusCode::OK => ok += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(
                    r.headers.get("x-envoy-overloaded").map(|v| v.as_bytes()),
                    Some(&b"true"[..])
                );
                overloaded += 1;
            }
            s => panic!("unexpected {s}: {}", r.body),
        }
    }
    // One request on the one connection, one pending; the rest overflow.
    assert!(ok >= 2, "ok {ok}");
    assert!(overloaded >= callers - 3, "overloaded {overloaded}");
    assert_eq!(ok + overloaded, callers);
    assert_eq!(
        b.st.max_inflight.load(Ordering::SeqCst),
        1,
        "maxConnections 1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outlier_is_ejected_then_returns() {
    let good = Backend::start("good").await;
    let bad = Backend::start("bad").await;
    bad.st.fail_all.store(true, Ordering::SeqCst);
    let d = StaticDiscovery::new().with("ratings", vec![good.endpoint("v1"), bad.endpoint("v1")]);
    let yaml = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - retries: {attempts: 0}
    route: [{destination: {host: ratings}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings}
spec:
  host: ratings
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    outlierDetection:
      consecutive5xxErrors: 3
      interval: 50ms
      baseEjectionTime: 1s
      maxEjectionPercent: 100
";
    let (addr, _wp) = start_proxy(yaml, d).await;
    let mut c = Client::new(addr);
    let ejected_at;
    let mut i = 0;
    loop {
        c.get("ratings", "/", &[]).await;
        i += 1;
        if bad.hits() == 3 {
            ejected_at = Instant::now();
            break;
        }
        assert!(i < 20, "the bad endpoint never reached 3 failures");
    }
    // Ejected: everything goes to the good one.
    for _ in 0..40 {
        let r = c.get("ratings", "/", &[]).await;
        assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "good"));
    }
    assert!(
        ejected_at.elapsed() < Duration::from_secs(1),
        "test too slow to observe the ejection"
    );
    assert_eq!(bad.hits(), 3);
    // Healed; after the ejection time it takes traffic again.
    bad.st.fail_all.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100).saturating_sub(ejected_at.elapsed())).await;
    let mut from_bad = 0;
    for _ in 0..20 {
        let r = c.get("ratings", "/", &[]).await;
        assert_eq!(r.status, StatusCode::OK);
        if r.body == "bad" {
            from_bad += 1;
        }
    }
    assert!(from_bad >= 5, "returned endpoint got {from_bad} of 20");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rewrite_and_headers_reach_the_backend() {
    let b = Backend::start("api").await;
    let d = StaticDiscovery::new().with("api", vec![b.endpoint("v1")]);
    let yaml = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api}
spec:
  hosts: [api]
  http:
  - match: [{uri: {prefix: /old/}}]
    rewrite: {uri: /new/, authority: api.internal}
    headers:
      request: {set: {x-set: one}, add: {x-add: two}, remove: [x-secret]}
      response: {set: {x-resp: three}, remove: [x-backend]}
    route: [{destination: {host: api}}]
  - match: [{uri: {prefix: /go}}]
    redirect: {uri: /gone, authority: example.org}
";
    let (addr, _wp) = start_proxy(yaml, d).await;
    let r = get_once(
        addr,
        "api",
        "/old/thing?x=1",
        &[("x-secret", "s"), ("x-keep", "k")],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.headers.get("x-resp").map(|v| v.as_bytes()),
        Some(&b"three"[..])
    );
    assert!(r.headers.get("x-backend").is_none());
    let (path, h) = b.last();
    assert_eq!(path, "/new/thing?x=1");
    assert_eq!(
        h.get("host").map(|v| v.as_bytes()),
        Some(&b"api.internal"[..])
    );
    assert_eq!(h.get("x-set").map(|v| v.as_bytes()), Some(&b"one"[..]));
    assert_eq!(h.get("x-add").map(|v| v.as_bytes()), Some(&b"two"[..]));
    assert_eq!(h.get("x-keep").map(|v| v.as_bytes()), Some(&b"k"[..]));
    assert!(h.get("x-secret").is_none());
    assert!(h.get("x-request-id").is_some());

    let r = get_once(addr, "api", "/go/x", &[]).await;
    assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        r.headers.get("location").map(|v| v.as_bytes()),
        Some(&b"http://example.org/gone"[..])
    );
    // A host with routes where none matches: 404 like Envoy.
    let r = get_once(addr, "api", "/elsewhere", &[]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(b.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http2_callers_and_default_route_and_consistent_hash() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let c3 = Backend::start("c").await;
    let d = StaticDiscovery::new().with(
        "users",
        vec![a.endpoint("v1"), b.endpoint("v1"), c3.endpoint("v1")],
    );
    // No VirtualService: the default route sends `users` to itself.
    let yaml = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: users}
spec:
  host: users
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpHeaderName: x-user}
";
    let (addr, _wp) = start_proxy(yaml, d).await;
    let s = TcpStream::connect(addr).await.expect("connect");
    let (mut h2, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(s))
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    let mut seen: HashMap<String, String> = HashMap::new();
    for round in 0..3 {
        for u in 0..30 {
            let user = format!("user-{u}");
            let req = Request::builder()
                .uri("http://users/profile")
                .header("x-user", &user)
                .body(Full::new(Bytes::new()))
                .expect("request");
            let resp = h2.send_request(req).await.expect("h2 response");
            assert_eq!(resp.version(), http::Version::HTTP_2);
            assert_eq!(resp.status(), StatusCode::OK);
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            let name = String::from_utf8_lossy(&body).into_owned();
            if round == 0 {
                seen.insert(user, name);
            } else {
                assert_eq!(seen.get(&user), Some(&name), "{user} moved");
            }
        }
    }
    // The 30 users spread over more than one endpoint.
    let distinct: std::collections::HashSet<_> = seen.values().collect();
    assert!(distinct.len() >= 2, "{distinct:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connect_failure_is_retried_on_another_endpoint() {
    let good = Backend::start("good").await;
    // A port on 127.0.0.1 with nothing listening: connection refused.
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        l.local_addr().expect("addr")
    };
    let eps = vec![
        good.endpoint("v1"),
        Endpoint::new(dead, &[("version", "v1")]),
    ];
    let d = StaticDiscovery::new()
        .with("svc", eps.clone())
        .with("svc-noretry", eps);
    // `svc` keeps Istio's default retry policy (connect-failure included).
    let yaml = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: noretry}
spec:
  hosts: [svc-noretry]
  http:
  - retries: {attempts: 0}
    route: [{destination: {host: svc-noretry}}]
";
    let (addr, _wp) = start_proxy(yaml, d).await;
    let mut c = Client::new(addr);
    for _ in 0..50 {
        let r = c.get("svc", "/", &[]).await;
        assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "good"));
    }
    let mut failed = 0;
    for _ in 0..50 {
        let r = c.get("svc-noretry", "/", &[]).await;
        if r.status == StatusCode::SERVICE_UNAVAILABLE {
            assert!(r.body.contains("connection failure"), "{}", r.body);
            failed += 1;
        }
    }
    assert!(
        failed > 0,
        "without retries some requests must hit the dead endpoint"
    );
}
