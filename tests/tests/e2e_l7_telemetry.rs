//! Rate limiting, metrics and tracing through the waypoint, end to end on
//! the testbed: the seed's EnvoyFilter local rate limit on productpage,
//! Istio's request metrics scraped by a real Prometheus (Debian's, run in
//! the waypoint's pod), and W3C trace context carried across bookinfo's
//! productpage → reviews hop with a new span at each waypoint crossing.

use std::process::Command;
use std::time::Duration;

use mesh_tests::bookinfo::{url, Backend, Bookinfo};
use mesh_tests::curl::Curl;
use mesh_tests::http_app::{Answer, HttpLoadReport};
use mesh_tests::seed;
use mesh_tests::wait::eventually_every;

fn status(r: &HttpLoadReport, code: u16) -> u64 {
    r.by_status.get(&code).copied().unwrap_or(0)
}

/// Seed 29 (the namespace-wide local rate limit, applied in bookinfo)
/// with its bucket cut from 100 tokens per 60 s to 10 per 3 s so that the
/// test can watch it refill: after the bucket empties callers get `429
/// local_rate_limited`, after the fill interval they are served again.
/// Seed 16 is refused as written (EnvoyFilter is not served as v1beta1),
/// naming the resource and the field, and limits nothing.
#[test]
fn seed_local_rate_limit_429_then_recovers() {
    let backends = [Backend::new("productpage", "v1", "node-a")];
    let mut b = Bookinfo::start(&backends).expect("bookinfo testbed (needs root)");
    let page = url("productpage", "/productpage");

    b.start_waypoint(&seed("16-")).expect("waypoint");
    let log = b.waypoint_log().expect("log").join("\n");
    assert!(
        log.contains("EnvoyFilter bookinfo/rate-limit") && log.contains("apiVersion"),
        "seed 16 refused with its name and field: {log}"
    );
    let r = b.load(&page, 30, 1, &[]).expect("load");
    assert_eq!(
        status(&r, 200),
        30,
        "a refused filter limits nothing: {r:?}"
    );

    let filter = seed("29-");
    let filter = filter
        .replace("max_tokens: 100", "max_tokens: 10")
        .replace("tokens_per_fill: 100", "tokens_per_fill: 10")
        .replace("fill_interval: 60s", "fill_interval: 3s");
    assert!(
        filter.contains("max_tokens: 10\n"),
        "the seed changed: {filter}"
    );
    b.start_waypoint(&filter).expect("waypoint");
    // 30 sequential requests take well under a fill interval; should they
    // straddle one refill, at most 10 more pass.
    let r = b.load(&page, 30, 1, &[]).expect("load");
    let (ok, limited) = (status(&r, 200), status(&r, 429));
    assert_eq!(ok + limited, 30, "{r:?}");
    assert!((10..=20).contains(&ok), "the bucket holds 10: {r:?}");
    assert!(limited >= 10, "{r:?}");
    let r2 = b.load(&page, 3, 1, &[]).expect("load");
    assert!(
        r2.bodies.iter().all(|b| b.contains("local_rate_limited")),
        "Envoy's 429 body: {r2:?}"
    );
    std::thread::sleep(Duration::from_millis(3300));
    let after = b.load(&page, 5, 1, &[]).expect("load");
    assert_eq!(
        status(&after, 200),
        5,
        "refilled after the fill interval: {after:?}"
    );
}

fn prometheus_query(b: &Bookinfo, query: &str) -> Option<f64> {
    let out = Curl::new("http://127.0.0.1:9090/api/v1/query")
        .args(&["--data-urlencode", &format!("query={query}")])
        .max_time(Duration::from_secs(5))
        .in_pod(&b.mesh.tb, "waypoint")
        .ok()?
        .body;
    let v: serde_json::Value = serde_json::from_str(&out).ok()?;
    let result = v.pointer("/data/result")?.as_array()?;
    let first = result.first()?;
    first.pointer("/value/1")?.as_str()?.parse().ok()
}

/// Istio's `istio_requests_total` and `istio_request_duration_milliseconds`
/// as a real Prometheus scrapes them from the waypoint's admin port, with
/// Istio's labels (reporter, source and destination workloads, service,
/// response code, mTLS).
#[test]
fn request_metrics_scraped_by_prometheus() {
    if Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("prometheus is not installed: `cargo xtask setup` installs Debian's");
    }
    let backends = [
        Backend::new("reviews", "v1", "node-b"),
        Backend::new("ratings", "v1", "node-a").failing_every(1, 503),
    ];
    let mut b = Bookinfo::start(&backends).expect("bookinfo testbed (needs root)");
    b.start_waypoint("").expect("waypoint");
    let dir = b.mesh.dir().join("prometheus");
    std::fs::create_dir_all(dir.join("data")).expect("dir");
    let cfg = dir.join("prometheus.yml");
    std::fs::write(
        &cfg,
        "global: {scrape_interval: 1s}\nscrape_configs:\n- job_name: waypoint\n  static_configs:\n  - targets: ['127.0.0.1:15020']\n",
    )
    .expect("config");
    let mut prom = Command::new("prometheus");
    prom.arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .args(["--web.listen-address=127.0.0.1:9090", "--log.level=warn"]);
    b.mesh
        .tb
        .spawn_in_pod("waypoint", "prometheus", prom)
        .expect("prometheus");

    let n = 40;
    let r = b
        .load(&url("reviews", "/reviews"), n, 2, &[])
        .expect("load");
    assert_eq!(status(&r, 200), n, "{r:?}");
    // ratings answers 503 each time (and Istio's default policy retries
    // 503s twice, so the caller sees its third answer).
    let bad = b
        .load(&url("ratings", "/ratings"), 5, 1, &[])
        .expect("load");
    assert_eq!(status(&bad, 503), 5, "{bad:?}");

    let ok_query = "sum(istio_requests_total{reporter=\"waypoint\",\
        destination_service_name=\"reviews\",destination_service_namespace=\"bookinfo\",\
        destination_workload=\"reviews-v1\",source_workload=\"client\",\
        source_workload_namespace=\"bookinfo\",response_code=\"200\",\
        connection_security_policy=\"mutual_tls\"})";
    let hist_query = "sum(istio_request_duration_milliseconds_count{\
        destination_service_name=\"reviews\",response_code=\"200\"})";
    let err_query = "sum(istio_requests_total{destination_service_name=\"ratings\",\
        response_code=\"503\"})";
    let mut seen = (None, None, None);
    eventually_every(Duration::from_secs(30), Duration::from_millis(500), || {
        seen = (
            prometheus_query(&b, ok_query),
            prometheus_query(&b, hist_query),
            prometheus_query(&b, err_query),
        );
        (seen.0 == Some(n as f64) && seen.1 == Some(n as f64) && seen.2 == Some(5.0)).then_some(())
    });
    assert_eq!(
        seen.0,
        Some(n as f64),
        "istio_requests_total for reviews 200 (seen {seen:?})"
    );
    assert_eq!(
        seen.1,
        Some(n as f64),
        "duration histogram count (seen {seen:?})"
    );
    assert_eq!(seen.2, Some(5.0), "ratings' 503s (seen {seen:?})");
}

/// `traceparent` `00-<trace>-<span>-01`: (trace id, span id).
fn trace_ids(tp: &str) -> (String, String) {
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent {tp:?}");
    (parts[1].to_string(), parts[2].to_string())
}

/// W3C trace context across two waypoint crossings (client → productpage,
/// productpage → reviews): one trace id end to end, a new span id at each
/// crossing. With seed 14 (Telemetry, 100% sampling) a request without a
/// trace gets one, in W3C and B3 form.
#[test]
fn trace_context_propagates_with_a_new_span_per_hop() {
    let backends = [
        Backend::new("productpage", "v1", "node-a").calling(&["reviews"]),
        Backend::new("reviews", "v1", "node-b"),
    ];
    let mut b = Bookinfo::start(&backends).expect("bookinfo testbed (needs root)");
    b.start_waypoint(&seed("14-")).expect("waypoint");
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let span = "00f067aa0ba902b7";
    let tp = format!("traceparent: 00-{trace}-{span}-01");
    let r = b
        .load(&url("productpage", "/productpage"), 1, 1, &[&tp])
        .expect("load");
    let a: Answer = serde_json::from_str(r.bodies.first().expect("a body")).expect("answer");
    let (t1, s1) = trace_ids(
        a.headers
            .get("traceparent")
            .expect("productpage got a trace"),
    );
    assert_eq!(t1, trace, "same trace at productpage");
    assert_ne!(s1, span, "a new span at the first crossing");
    let reviews = a
        .upstream
        .first()
        .and_then(|u| u.answer.as_ref())
        .expect("reviews answered");
    let (t2, s2) = trace_ids(
        reviews
            .headers
            .get("traceparent")
            .expect("reviews got a trace"),
    );
    assert_eq!(t2, trace, "same trace at reviews");
    assert_ne!(s2, s1, "a new span at the second crossing");
    assert_ne!(s2, span);
    // No trace in: 100% sampling starts one, the same in both forms.
    let r = b
        .load(&url("reviews", "/reviews"), 3, 1, &[])
        .expect("load");
    assert_eq!(r.bodies.len(), 3, "{r:?}");
    for body in &r.bodies {
        let a: Answer = serde_json::from_str(body).expect("answer");
        let tp = a.headers.get("traceparent").expect("a trace was started");
        let (t, s) = trace_ids(tp);
        assert_eq!((t.len(), s.len()), (32, 16), "{tp}");
        assert!(tp.ends_with("-01"), "sampled: {tp}");
        assert_eq!(
            a.headers.get("x-b3-traceid"),
            Some(&t),
            "B3 carries the trace: {body}"
        );
    }
}
