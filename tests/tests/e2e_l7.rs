//! L7 traffic management through the waypoint, end to end on the testbed:
//! bookinfo in namespace `bookinfo` (ambient, `istio.io/use-waypoint`),
//! the client's node proxy tunnels each call to the waypoint over HBONE,
//! the waypoint applies the seeds' VirtualServices and DestinationRules and
//! reaches the pods over HBONE through their node proxies. Real HTTP
//! clients and servers (`ambit-probe http`, `ambit-probe http-load`).
//!
//! Statistical bounds: a weighted split or a percentage fault over `n`
//! requests is a binomial count; each test accepts `|observed − n·p| ≤
//! 4.5σ` with `σ = √(n·p·(1−p))`. For a correct proxy that fails by chance
//! with probability ≈ 7·10⁻⁶ per check; a proxy off by 5 points on an
//! 80/20 split over 2,000 requests (≈ 5.6σ) fails it almost surely.

use std::time::{Duration, Instant};

use mesh_tests::bookinfo::{self, url, within_sigmas, Backend, Bookinfo};
use mesh_tests::http_app::{Answer, HttpLoadReport};
use mesh_tests::seed;
use mesh_tests::wait::within;

const SIGMAS: f64 = 4.5;

fn served(r: &HttpLoadReport, pod: &str) -> u64 {
    r.by_server.get(pod).copied().unwrap_or(0)
}

fn status(r: &HttpLoadReport, code: u16) -> u64 {
    r.by_status.get(&code).copied().unwrap_or(0)
}

fn start(backends: &[Backend], l7: &str) -> Bookinfo {
    let mut b = Bookinfo::start(backends).expect("bookinfo testbed (needs root)");
    b.start_waypoint(l7).expect("waypoint");
    b
}

fn reviews_and_ratings() -> Vec<Backend> {
    vec![
        Backend::new("reviews", "v1", "node-a"),
        Backend::new("reviews", "v2", "node-b"),
        Backend::new("reviews", "v3", "node-a"),
        Backend::new("ratings", "v1", "node-b"),
    ]
}

/// Seeds 06 + 07: `end-user: jason` → reviews v3, everyone else 80/20 over
/// v1/v2 — walked from productpage, which passes `end-user` on.
#[test]
fn seed_canary_jason_to_v3_everyone_else_80_20() {
    let l7 = format!("{}---\n{}", seed("06-"), seed("07-"));
    let b = start(&bookinfo::standard(), &l7);

    let jason = b
        .load(
            &url("productpage", "/productpage"),
            20,
            2,
            &["end-user: jason"],
        )
        .expect("load");
    assert_eq!(status(&jason, 200), 20, "{jason:?}");
    for body in &jason.bodies {
        let a: Answer = serde_json::from_str(body).expect("answer");
        let reviews = a
            .upstream
            .iter()
            .find(|u| u.url.contains(&bookinfo::vip("reviews").to_string()))
            .and_then(|u| u.answer.as_ref())
            .expect("productpage reached reviews");
        assert_eq!(reviews.served_by, "reviews-v3", "jason: {body}");
        assert_eq!(
            reviews.headers.get("end-user").map(String::as_str),
            Some("jason")
        );
        // reviews v3 calls ratings through the waypoint too.
        assert_eq!(
            reviews.upstream.first().map(|u| u.status),
            Some(200),
            "{body}"
        );
        let details = a
            .upstream
            .first()
            .and_then(|u| u.answer.as_ref())
            .expect("details");
        assert_eq!(details.served_by, "details-v1");
    }

    let n = 2000;
    let r = b
        .load(&url("reviews", "/reviews"), n, 8, &[])
        .expect("load");
    assert_eq!(status(&r, 200), n, "{r:?}");
    assert_eq!(served(&r, "reviews-v3"), 0, "v3 is for jason only: {r:?}");
    let v1 = served(&r, "reviews-v1");
    assert_eq!(v1 + served(&r, "reviews-v2"), n, "{r:?}");
    assert!(
        within_sigmas(v1, n, 0.8, SIGMAS),
        "80/20 split: v1 got {v1} of {n} (expected 1600 ± {:.0}): {r:?}",
        SIGMAS * (n as f64 * 0.16).sqrt()
    );
}

/// Seeds 31 + 32 (no namespace: applied in bookinfo): jason → v2, others
/// 90/10 over v1/v3, with the LEAST_CONN balancer inside each subset.
#[test]
fn seed_canary_90_10() {
    let l7 = format!("{}---\n{}", seed("31-"), seed("32-"));
    let b = start(&reviews_and_ratings(), &l7);
    let jason = b
        .load(&url("reviews", "/reviews"), 50, 2, &["end-user: jason"])
        .expect("load");
    assert_eq!(served(&jason, "reviews-v2"), 50, "{jason:?}");
    let n = 2000;
    let r = b
        .load(&url("reviews", "/reviews"), n, 8, &[])
        .expect("load");
    assert_eq!(status(&r, 200), n, "{r:?}");
    let v1 = served(&r, "reviews-v1");
    assert_eq!(served(&r, "reviews-v2"), 0, "{r:?}");
    assert_eq!(v1 + served(&r, "reviews-v3"), n, "{r:?}");
    assert!(
        within_sigmas(v1, n, 0.9, SIGMAS),
        "90/10 split: v1 got {v1} of {n} (expected 1800 ± {:.0}): {r:?}",
        SIGMAS * (n as f64 * 0.09).sqrt()
    );
}

const FAULTS: &str = r#"
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - match:
    - headers: {test: {exact: delay}}
    fault:
      delay: {percentage: {value: 100.0}, fixedDelay: 2s}
    route:
    - destination: {host: ratings}
  - match:
    - headers: {test: {exact: abort}}
    fault:
      abort: {percentage: {value: 10.0}, httpStatus: 500}
    route:
    - destination: {host: ratings}
  - route:
    - destination: {host: ratings}
"#;

/// A fixed delay of 2 s is observed; a 10% abort lands within bounds; the
/// unmatched route is untouched.
#[test]
fn fixed_delay_and_abort_percentage() {
    let b = start(&reviews_and_ratings(), FAULTS);
    let plain = b
        .load(&url("ratings", "/ratings"), 20, 1, &[])
        .expect("load");
    assert_eq!(status(&plain, 200), 20, "{plain:?}");
    assert!(
        plain.max_us < 1_000_000.0,
        "no delay without the header: {plain:?}"
    );

    let delayed = b
        .load(&url("ratings", "/ratings"), 3, 3, &["test: delay"])
        .expect("load");
    assert_eq!(status(&delayed, 200), 3, "{delayed:?}");
    assert!(
        delayed.p50_us >= 2_000_000.0 && delayed.max_us < 3_500_000.0,
        "2 s delay: p50 {} µs, max {} µs",
        delayed.p50_us,
        delayed.max_us
    );

    let n = 1000;
    let aborted = b
        .load(&url("ratings", "/ratings"), n, 8, &["test: abort"])
        .expect("load");
    let e500 = status(&aborted, 500);
    assert_eq!(e500 + status(&aborted, 200), n, "{aborted:?}");
    assert!(
        within_sigmas(e500, n, 0.1, SIGMAS),
        "10% abort: {e500} of {n} (expected 100 ± {:.0})",
        SIGMAS * (n as f64 * 0.09).sqrt()
    );
}

/// A route timeout of 0.5 s cuts a backend that takes 2 s: `504` after
/// about half a second.
#[test]
fn route_timeout_cuts_a_slow_backend() {
    let l7 = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - timeout: 0.5s
    route:
    - destination: {host: reviews}
"#;
    let b = start(&[Backend::new("reviews", "v1", "node-a").slow(2000)], l7);
    let t = Instant::now();
    let r = b
        .load(&url("reviews", "/reviews"), 4, 4, &[])
        .expect("load");
    assert_eq!(status(&r, 504), 4, "{r:?}");
    assert!(
        r.p50_us >= 450_000.0 && r.max_us < 1_500_000.0,
        "timeout at 0.5 s: p50 {} µs, max {} µs",
        r.p50_us,
        r.max_us
    );
    assert!(t.elapsed() < Duration::from_secs(30));
}

/// Seed 17 (reviews-retry: 3 attempts on 5xx, reset, connect-failure,
/// refused-stream) turns a backend that fails one request in three into a
/// success rate above 99%; without it a third fail (the control: the
/// backend answers `500`, which Istio's default retry policy, 503 and
/// connect failures only, does not retry).
#[test]
fn retries_hide_a_backend_failing_one_in_three() {
    let backends = [
        Backend::new("reviews", "v1", "node-a").failing_every(3, 500),
        Backend::new("reviews", "v2", "node-b"),
    ];
    let dr = seed("06-");
    let mut b = start(&backends, &dr);
    let n = 600;
    let control = b
        .load(&url("reviews", "/reviews"), n, 1, &[])
        .expect("load");
    let v1 = served(&control, "reviews-v1");
    assert!(
        v1 > 0 && status(&control, 500) >= v1 / 4,
        "control: {control:?}"
    );

    b.start_waypoint(&format!("{dr}---\n{}", seed("17-")))
        .expect("waypoint with retries");
    let r = b
        .load(&url("reviews", "/reviews"), n, 4, &[])
        .expect("load");
    let ok = status(&r, 200);
    assert!(
        ok as f64 / n as f64 > 0.99,
        "success with retries: {ok} of {n}: {r:?}"
    );
    assert_eq!(served(&r, "reviews-v1"), n, "subset v1 only: {r:?}");
    assert!(
        b.requests_seen("reviews-v1").expect("count") as u64 >= v1 + n + n / 4,
        "the retries reached the backend"
    );
}

/// Mirroring with mirrorPercentage 100: v2 receives a copy of every
/// request (with the `-shadow` host), callers only ever see v1.
#[test]
fn mirror_receives_copies_callers_see_the_primary() {
    let l7 = format!(
        "{}---\n{}",
        seed("06-"),
        r#"
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: reviews-mirror}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
    mirror: {host: reviews, subset: v2}
    mirrorPercentage: {value: 100.0}
"#
    );
    let b = start(&reviews_and_ratings(), &l7);
    let n = 200;
    let r = b
        .load(&url("reviews", "/reviews"), n, 4, &[])
        .expect("load");
    assert_eq!(
        served(&r, "reviews-v1"),
        n,
        "callers see the primary only: {r:?}"
    );
    // Copies are fire-and-forget: give the last ones a moment.
    let mut copies = 0;
    within(Duration::from_secs(5), || {
        copies = b.requests_seen("reviews-v2").expect("count");
        copies as u64 >= n
    });
    assert_eq!(copies as u64, n, "the mirror got every request");
    assert_eq!(b.requests_seen("reviews-v3").expect("count"), 0);
    let log = b.server_log("reviews-v2").expect("log");
    assert!(
        log.iter().any(|l| l.contains("-shadow")),
        "copies carry the -shadow host: {:?}",
        log.first()
    );
}

/// Seed 08 (productpage: maxConnections 1, http1MaxPendingRequests 1):
/// ten concurrent callers against a slow productpage get `503` overflows
/// at once (one request in flight and one pending are all the pool
/// admits), while a lone caller is always served.
#[test]
fn seed_circuit_breaker_overflows_with_503() {
    let b = start(
        &[Backend::new("productpage", "v1", "node-a").slow(100)],
        &seed("08-"),
    );
    let r = b
        .load(&url("productpage", "/productpage"), 100, 10, &[])
        .expect("load");
    let (ok, overflow) = (status(&r, 200), status(&r, 503));
    assert_eq!(ok + overflow, 100, "{r:?}");
    assert!(ok >= 1, "some are served: {r:?}");
    assert!(
        overflow >= 50,
        "maxConnections 1 with 10 callers overflows: {r:?}"
    );
    assert!(
        r.bodies
            .iter()
            .any(|b| b.contains("reset reason: overflow")),
        "Envoy's overflow reply: {r:?}"
    );
    // Sequential callers never overflow.
    let r = b
        .load(&url("productpage", "/productpage"), 10, 1, &[])
        .expect("load");
    assert_eq!(status(&r, 200), 10, "{r:?}");
}

/// Outlier detection: an endpoint that answers 503 is ejected after one
/// error and traffic moves to the healthy one; after baseEjectionTime it is
/// tried again.
#[test]
fn failing_endpoint_is_ejected_then_returns() {
    let l7 = r#"
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: details}
spec:
  host: details
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    outlierDetection:
      consecutive5xxErrors: 1
      interval: 1s
      baseEjectionTime: 3s
      maxEjectionPercent: 100
"#;
    let backends = [
        Backend::new("details", "v1", "node-a"),
        Backend::new("details", "v2", "node-b").failing_every(1, 503),
    ];
    let b = start(&backends, l7);
    let r = b
        .load(&url("details", "/details"), 100, 1, &[])
        .expect("load");
    let bad = b.requests_seen("details-v2").expect("count");
    assert!(
        (1..=3).contains(&bad),
        "the failing endpoint is ejected after its first error: it saw {bad}: {r:?}"
    );
    assert!(status(&r, 200) >= 97, "{r:?}");
    // After the ejection time it gets traffic again (and is ejected again).
    std::thread::sleep(Duration::from_millis(3500));
    let r = b
        .load(&url("details", "/details"), 20, 1, &[])
        .expect("load");
    let again = b.requests_seen("details-v2").expect("count");
    assert!(
        again > bad,
        "returned after baseEjectionTime: {bad} → {again}: {r:?}"
    );
    assert!(status(&r, 200) >= 18, "{r:?}");
}
