//! Pods enrolled and un-enrolled at run time, and the drain on SIGTERM.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use mesh_tests::mesh::{binary, LocalMesh};
use mesh_tests::probe::LoadReport;

fn via_mesh(mesh: &LocalMesh, from: &str, to: &str) -> bool {
    let ip = mesh.tb.pod(to).unwrap().ip;
    let r = mesh
        .send(from, SocketAddr::from((ip, 8080)), 100, "e")
        .unwrap();
    assert!(r.intact);
    r.hello.via_node_proxy()
}

#[test]
fn enrolment_follows_the_namespace_label_at_run_time() {
    let mut mesh = LocalMesh::client_and_server(false, &[]).expect("testbed (needs root)");
    assert!(
        !via_mesh(&mesh, "client", "srv"),
        "captured before opting in"
    );

    // Opt the namespace in: both pods are enrolled without restarting anything.
    mesh.namespace("demo", true);
    mesh.write_config().unwrap();
    mesh.wait_node_log("node-a", "pod enrolled", Duration::from_secs(2))
        .unwrap();
    mesh.wait_node_log("node-b", "pod enrolled", Duration::from_secs(2))
        .unwrap();
    assert!(
        via_mesh(&mesh, "client", "srv"),
        "not captured after opting in"
    );

    // Opt out again: capture stops.
    mesh.namespace("demo", false);
    mesh.write_config().unwrap();
    mesh.wait_node_log("node-a", "pod un-enrolled", Duration::from_secs(2))
        .unwrap();
    mesh.wait_node_log("node-b", "pod un-enrolled", Duration::from_secs(2))
        .unwrap();
    assert!(
        !via_mesh(&mesh, "client", "srv"),
        "still captured after opting out"
    );
}

#[test]
fn sigterm_drains_open_connections_before_exit() {
    let mesh = LocalMesh::client_and_server(true, &["--drain-timeout-secs", "10"])
        .expect("testbed (needs root)");
    let srv = mesh.tb.pod("srv").unwrap().clone();

    // A 3-second request/response stream through the mesh...
    let mut rr = Command::new(binary("ambit-probe").unwrap());
    rr.args([
        "rr",
        "--to",
        &format!("{}:8080", srv.ip),
        "--rate",
        "200",
        "--secs",
        "3",
    ]);
    let load = mesh.tb.spawn_in_pod("client", "rr", rr).unwrap();
    std::thread::sleep(Duration::from_millis(800));
    // ...while node-a's mesh-node is told to stop.
    let node_a = mesh.node_proc("node-a").unwrap();
    mesh.tb
        .with_proc(node_a, |p| p.signal(libc::SIGTERM))
        .unwrap();
    mesh.wait_node_log("node-a", "draining", Duration::from_secs(2))
        .unwrap();
    let line = mesh
        .tb
        .with_proc(load, |p| {
            p.wait_for_line("\"kind\":\"rr\"", Duration::from_secs(10))
        })
        .unwrap()
        .expect("the stream in flight failed during the drain");
    let report: LoadReport = serde_json::from_str(&line).unwrap();
    assert!(report.operations > 300, "stream cut short: {report:?}");
    let status = mesh
        .tb
        .with_proc(node_a, |p| p.wait_timeout(Duration::from_secs(5)))
        .unwrap()
        .expect("mesh-node did not exit after its connections closed");
    assert!(status.success(), "mesh-node exited with {status}");
    let log = mesh.node_log("node-a").unwrap().join("\n");
    assert!(
        !log.contains("drain timeout"),
        "drain hit its timeout:\n{log}"
    );
}
