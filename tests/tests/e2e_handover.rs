//! Restart and upgrade without loss (issue 9, item 5). A new mesh-node
//! started beside a running one reuses the pinned maps, swaps the links and
//! listens beside the old one (SO_REUSEPORT, with `tcp_migrate_req` so the
//! old listeners' queues move to the new ones when they close); the old one
//! is then told to drain. Under steady load no new connection is refused, no
//! long-lived stream is cut, and nothing crosses the wire in plaintext.

use std::process::Command;
use std::time::Duration;

use mesh_tests::mesh::{binary, LocalMesh};
use mesh_tests::probe::LoadReport;
use mesh_tests::wire::Capture;

const SECS: f64 = 8.0;
const STREAMS: usize = 50;

/// Starts a second mesh-node on `node` (its own admin port), waits until it
/// is ready, then SIGTERMs the first and returns when the first has exited.
fn hand_over(mesh: &mut LocalMesh, node: &str, admin_port: u16) {
    let old = mesh.node_proc(node).unwrap();
    let admin = format!("127.0.0.1:{admin_port}");
    mesh.start_node(node, &["--admin", &admin])
        .unwrap_or_else(|e| panic!("the new mesh-node on {node} did not start: {e:#}"));
    mesh.tb.with_proc(old, |p| p.signal(libc::SIGTERM)).unwrap();
    let status = mesh
        .tb
        .with_proc(old, |p| p.wait_timeout(Duration::from_secs(15)))
        .unwrap();
    assert!(
        matches!(status, Some(s) if s.success()),
        "the old mesh-node on {node} did not drain and exit cleanly: {status:?}"
    );
}

fn report(mesh: &LocalMesh, idx: usize, what: &str) -> LoadReport {
    let line = mesh
        .tb
        .with_proc(idx, |p| {
            p.wait_for_line("\"kind\":", Duration::from_secs_f64(SECS + 20.0))
        })
        .unwrap()
        .unwrap_or_else(|e| panic!("{what} failed during the hand-over: {e:#}"));
    serde_json::from_str(&line).unwrap()
}

#[test]
fn a_new_mesh_node_takes_over_under_load_with_nothing_lost() {
    // Drain long enough for the streams to finish on the old processes.
    let mut mesh = LocalMesh::client_and_server(true, &["--drain-timeout-secs", "20"])
        .expect("testbed (needs root)");
    let srv = mesh.tb.pod("srv").unwrap().ip;
    let to = format!("{srv}:8080");
    let capture = Capture::start(&mesh.tb, &mesh.dir().join("handover.pcap")).unwrap();

    let mut streams = Command::new(binary("ambit-probe").unwrap());
    streams.args(["rr", "--to", &to, "--size", "64", "--rate", "500"]);
    streams.args(["--conns", &STREAMS.to_string(), "--secs", &SECS.to_string()]);
    let streams = mesh.tb.spawn_in_pod("client", "streams", streams).unwrap();
    let mut cps = Command::new(binary("ambit-probe").unwrap());
    cps.args(["cps", "--to", &to, "--secs", &SECS.to_string()]);
    let cps = mesh.tb.spawn_in_pod("client", "cps", cps).unwrap();

    std::thread::sleep(Duration::from_millis(1500));
    // The server's node (inbound, steered by sk_lookup), then the client's
    // (outbound, 127.0.0.1:15001 in the pod).
    hand_over(&mut mesh, "node-b", 15010);
    hand_over(&mut mesh, "node-a", 15010);

    let cps = report(&mesh, cps, "new connections");
    let streams = report(&mesh, streams, "the long-lived streams");
    let segments = capture.finish(&mesh.tb).unwrap();
    println!(
        "hand-over under load: {} new connections in {:.1} s ({:.0}/s), 0 refused; \
         {STREAMS} long-lived streams, {} round trips, 0 cut; {} segments on the wire, all HBONE",
        cps.operations,
        cps.seconds,
        cps.operations as f64 / cps.seconds,
        streams.operations,
        segments.len()
    );
    assert!(
        cps.operations as f64 / cps.seconds >= 200.0,
        "fewer than 200 new connections/s: {cps:?}"
    );
    assert!(
        streams.operations as f64 >= 0.8 * 500.0 * SECS,
        "the streams stalled: {streams:?}"
    );
    assert!(
        segments
            .iter()
            .all(|s| s.dst.port() == mesh_common::HBONE_PORT
                || s.src.port() == mesh_common::HBONE_PORT),
        "a segment between the nodes was not HBONE (plaintext)"
    );
    assert!(
        mesh.reaches("client", "srv", 8080),
        "the new mesh-nodes do not work"
    );
}
