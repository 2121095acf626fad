//! The waypoint in xDS mode, end to end on the testbed: mesh-controller
//! reads bookinfo (namespace labelled `istio.io/use-waypoint: waypoint`)
//! and the seeds' VirtualService/DestinationRule from its folder; the
//! nodes and the waypoint (`waypoint --xds-address ...`, node id
//! `waypoint~bookinfo~waypoint`, the token the controller issued, its
//! certificate from the controller's CA) take their config over delta
//! xDS. Every request is real HTTP from the client pod: mesh-node → HBONE
//! → waypoint → HBONE → the chosen reviews pod.
//!
//! Routing is read from the `x-served-by` header the sample app sets.

use std::process::Command;
use std::time::{Duration, Instant};

use mesh_tests::bookinfo::{url, Backend, Bookinfo};
use mesh_tests::curl;
use mesh_tests::mesh::binary;
use mesh_tests::seed;
use mesh_tests::wait::eventually;

const WAYPOINT_NODE: &str = "waypoint~bookinfo~waypoint";
const L7_TYPE: &str = "type.googleapis.com/ambit.v1.L7Resource";
/// The propagation bound the brief sets: file rename → new routing served.
const PROPAGATION: Duration = Duration::from_secs(1);

/// Seeds 06 (subsets v1, v2, v3) + 54 (jason → v2, else v1; v1alpha3).
fn jason_to_v2() -> String {
    format!("{}---\n{}", seed("06-"), seed("54-"))
}

/// Seeds 06 + 53 (everyone → v1).
fn all_to_v1() -> String {
    format!("{}---\n{}", seed("06-"), seed("53-"))
}

/// Seed 06 + everyone → v3.
fn all_to_v3() -> String {
    format!(
        "{}---\n{}",
        seed("06-"),
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v3}
"#
    )
}

/// A VirtualService mesh-api refuses (`timeout: banana`) beside seed 06.
fn banana() -> String {
    format!(
        "{}---\n{}",
        seed("06-"),
        r#"apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - timeout: banana
    route:
    - destination: {host: reviews, subset: v3}
"#
    )
}

fn backends() -> Vec<Backend> {
    vec![
        Backend::new("reviews", "v1", "node-a"),
        Backend::new("reviews", "v2", "node-b"),
        Backend::new("reviews", "v3", "node-a"),
    ]
}

/// Bookinfo with the controller, the L7 resources in its folder, and the
/// waypoint in xDS mode.
fn start(l7: &str) -> Bookinfo {
    let mut b = Bookinfo::start_controlled(&backends()).expect("bookinfo testbed (needs root)");
    b.apply_l7(l7).expect("L7 into the folder");
    b.start_waypoint_xds(&[]).expect("waypoint in xDS mode");
    b
}

/// Which pod served one GET of /reviews (`"<status> <x-served-by>"`), or
/// the curl error.
fn served_by(b: &Bookinfo, headers: &[&str]) -> String {
    curl::served_by(&b.mesh.tb, "client", &url("reviews", "/reviews"), headers)
}

const JASON: &[&str] = &["end-user: jason"];
const ANON: &[&str] = &[];

/// Answers in a row that make a routing "in force": before the waypoint has
/// the VirtualService, reviews is balanced over v1/v2/v3, so one answer
/// from the wanted pod proves nothing (1 in 3). Ten in a row happen by
/// chance with probability 3^-10 ≈ 2e-5.
const IN_A_ROW: usize = 10;

/// Polls until `who` serves jason's (or everyone's) request [`IN_A_ROW`]
/// times in a row, starting within `limit`; returns the time since `since`
/// when the first answer of that run came.
fn until_served(
    b: &Bookinfo,
    headers: &[&str],
    who: &str,
    since: Instant,
    limit: Duration,
) -> Option<Duration> {
    let want = format!("200 {who}");
    let left = limit.saturating_sub(since.elapsed());
    eventually(left, || {
        if served_by(b, headers) != want {
            return None;
        }
        let first = since.elapsed();
        (1..IN_A_ROW)
            .all(|_| served_by(b, headers) == want)
            .then_some(first)
    })
    .map(|(first, _)| first)
}

/// `n` requests all served by `who`.
fn all_served(b: &Bookinfo, headers: &[&str], who: &str, n: usize) {
    for i in 0..n {
        let got = served_by(b, headers);
        assert_eq!(
            got,
            format!("200 {who}"),
            "request {i} with {headers:?}: expected {who}"
        );
    }
}

/// The waypoint's xDS stream as the controller's `/debug/syncz` reports it.
fn waypoint_syncz(b: &Bookinfo) -> serde_json::Value {
    let body = b.mesh.controller_status("/debug/syncz").expect("syncz");
    let all: Vec<serde_json::Value> = serde_json::from_str(&body).expect("syncz JSON");
    all.into_iter()
        .find(|c| c["node"] == WAYPOINT_NODE)
        .unwrap_or_else(|| panic!("{WAYPOINT_NODE} not in /debug/syncz: {body}"))
}

#[test]
fn seed_routing_hot_changes_and_a_refused_virtual_service() {
    let b = start(&jason_to_v2());

    // (a) Seed 54: jason → v2, everyone else → v1 (the first sync may land
    // just after "ready": give it the propagation bound).
    let t0 = Instant::now();
    assert!(
        until_served(&b, JASON, "reviews-v2", t0, Duration::from_secs(5)).is_some(),
        "jason never reached v2: {}\nwaypoint:\n{}",
        served_by(&b, JASON),
        b.waypoint_log().unwrap().join("\n")
    );
    all_served(&b, JASON, "reviews-v2", 10);
    all_served(&b, ANON, "reviews-v1", 10);
    // Through the waypoint, which knows the caller, with the identity the
    // controller's CA signed for it.
    let log = b.waypoint_log().unwrap();
    assert!(
        log.iter()
            .any(|l| l.contains("caller.identity=spiffe://cluster.local/ns/bookinfo/sa/client")),
        "the waypoint saw no request from the client:\n{}",
        log.join("\n")
    );
    // Its certificate (which reviews' node proxies check on HBONE) came
    // from the controller's CA.
    assert!(
        log.iter()
            .any(|l| l.contains("certificate from the CA installed")
                && l.contains("identity=spiffe://cluster.local/ns/bookinfo/sa/waypoint")),
        "no CA-issued certificate for the waypoint:\n{}",
        log.join("\n")
    );
    let s = waypoint_syncz(&b);
    assert_eq!(s["connected"], true, "{s}");
    assert_eq!(s["types"][L7_TYPE]["resources"], 2, "VS + DR: {s}");

    // (b) Seed 53 (everyone → v1): jason moves within a second of the rename.
    let mut measured = Vec::new();
    let at = b.apply_l7(&all_to_v1()).unwrap();
    let took = until_served(&b, JASON, "reviews-v1", at, PROPAGATION);
    assert!(
        took.is_some(),
        "seed 53 not in force within {PROPAGATION:?}"
    );
    measured.extend(took);
    all_served(&b, JASON, "reviews-v1", 10);
    // And back to seed 54.
    let at = b.apply_l7(&jason_to_v2()).unwrap();
    let took = until_served(&b, JASON, "reviews-v2", at, PROPAGATION);
    assert!(
        took.is_some(),
        "seed 54 not in force again within {PROPAGATION:?}"
    );
    measured.extend(took);
    all_served(&b, ANON, "reviews-v1", 5);
    eprintln!("propagation (rename → routing served): {measured:?}");

    // (c) A bad VirtualService is refused with its name and field; seed 54
    // keeps serving (the bad one would send everyone to v3).
    b.apply_l7_raw(&mesh_tests::bookinfo::in_bookinfo(&banana()).unwrap())
        .unwrap();
    let refused = eventually(Duration::from_secs(3), || {
        b.mesh.controller_log().unwrap().into_iter().find(|l| {
            l.contains("VirtualService") && l.contains("bookinfo/reviews") && l.contains("timeout")
        })
    })
    .map(|(line, _)| line);
    assert!(
        refused.is_some(),
        "refusal not logged with the resource and field:\n{}",
        b.mesh.controller_log().unwrap().join("\n")
    );
    let why = b.mesh.controller_status("/debug/config_error").unwrap();
    assert!(
        why.contains("bookinfo/reviews") && why.contains("timeout"),
        "/debug/config_error: {why:?}"
    );
    all_served(&b, JASON, "reviews-v2", 10);
    all_served(&b, ANON, "reviews-v1", 10);
    let s = waypoint_syncz(&b);
    assert!(s["types"][L7_TYPE]["last_nack"].is_null(), "{s}");

    // Fixed: the folder is in force again and the next change applies.
    let at = b.apply_l7(&all_to_v3()).unwrap();
    let took = until_served(&b, ANON, "reviews-v3", at, PROPAGATION);
    assert!(
        took.is_some(),
        "the change after a refusal not in force within {PROPAGATION:?}"
    );
    eprintln!("propagation after the fix: {took:?}");
    assert_eq!(b.mesh.controller_status("/debug/config_error").unwrap(), "");
}

#[test]
fn controller_killed_under_traffic_then_the_waypoint_resynchronises() {
    let mut b = start(&jason_to_v2());
    assert!(
        until_served(
            &b,
            JASON,
            "reviews-v2",
            Instant::now(),
            Duration::from_secs(5)
        )
        .is_some(),
        "jason never reached v2: {}",
        served_by(&b, JASON)
    );
    let s = waypoint_syncz(&b);
    assert_eq!(s["types"][L7_TYPE]["resources"], 2, "VS + DR ACKed: {s}");

    // 3 s of jason's traffic; the controller dies 0.5 s in.
    let mut load = Command::new(binary("ambit-probe").unwrap());
    load.args(["http-load", "--url", &url("reviews", "/reviews")])
        .args(["--secs", "3", "--rate", "200", "--concurrency", "4"])
        .args(["-H", "end-user: jason"]);
    let idx = b.mesh.tb.spawn_in_pod("client", "http-load", load).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    b.mesh.kill_controller().unwrap();

    // New connections are served on the last good config.
    all_served(&b, JASON, "reviews-v2", 5);
    all_served(&b, ANON, "reviews-v1", 5);
    let line = b
        .mesh
        .tb
        .with_proc(idx, |p| {
            p.wait_for_line("\"by_status\"", Duration::from_secs(15))
        })
        .unwrap()
        .expect("the load did not finish");
    let r: mesh_tests::http_app::HttpLoadReport = serde_json::from_str(&line).unwrap();
    // At least half of the 600 paced requests (a loaded machine paces
    // slower): traffic went on well past the kill at 0.5 s.
    assert!(r.requests >= 300, "load cut short: {r:?}");
    assert_eq!(r.errors, 0, "{r:?}");
    assert_eq!(r.by_status.get(&200).copied(), Some(r.requests), "{r:?}");
    // Every one of jason's requests is routed, before and after the kill.
    assert_eq!(
        r.by_server.get("reviews-v2").copied(),
        Some(r.requests),
        "{r:?}"
    );

    // A change made while the controller is away does not apply...
    b.apply_l7(&all_to_v1()).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    all_served(&b, JASON, "reviews-v2", 3);
    // ...and lands once it is back (the waypoint reconnects with its token).
    let back = Instant::now();
    b.mesh.start_controller().unwrap();
    let took = until_served(&b, JASON, "reviews-v1", back, Duration::from_secs(15));
    assert!(
        took.is_some(),
        "the waypoint did not resynchronise:\n{}",
        b.waypoint_log().unwrap().join("\n")
    );
    eprintln!("resynchronised {took:?} after the restart began");
    // A further change applies within the bound.
    let at = b.apply_l7(&all_to_v3()).unwrap();
    let took = until_served(&b, JASON, "reviews-v3", at, PROPAGATION);
    assert!(
        took.is_some(),
        "a change after the restart not in force within {PROPAGATION:?}"
    );
    eprintln!("propagation after the restart: {took:?}");
    all_served(&b, ANON, "reviews-v3", 5);
}
