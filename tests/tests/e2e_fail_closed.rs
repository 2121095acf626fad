//! Capture never fails open (issue 9, item 4). mesh-node pins the links
//! that capture and steer, so with it killed (`kill -9`) an enrolled pod's
//! connections are refused, never sent in plaintext, and a STRICT pod takes
//! no plaintext; a new mesh-node adopts the pods and traffic flows again.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use mesh_tests::mesh::{binary, LocalMesh};
use mesh_tests::testbed::PodSpec;
use mesh_tests::wire::{contains_plaintext, Capture};

const STRICT_DEMO: &str = "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: strict
  namespace: demo
spec:
  mtls:
    mode: STRICT
";

fn kill_9(mesh: &LocalMesh, node: &str) {
    let idx = mesh.node_proc(node).unwrap();
    let status = mesh
        .tb
        .with_proc(idx, |p| {
            p.signal(libc::SIGKILL);
            p.wait_timeout(Duration::from_secs(5))
        })
        .unwrap();
    assert!(status.is_some(), "mesh-node on {node} outlived SIGKILL");
}

#[test]
fn kill_9_under_traffic_fails_closed_and_a_restart_adopts_the_pods() {
    let mut mesh = LocalMesh::new(&["node-a", "node-b"]).expect("testbed (needs root)");
    mesh.namespace("demo", true).namespace("legacy", false);
    mesh.add_pod("node-a", PodSpec::new("client", "demo", "client"))
        .unwrap();
    mesh.add_pod("node-a", PodSpec::new("outsider", "legacy", "default"))
        .unwrap();
    mesh.add_pod(
        "node-b",
        PodSpec::new("srv", "demo", "server").label("app", "srv"),
    )
    .unwrap();
    mesh.set_policies_yaml(STRICT_DEMO).unwrap();
    mesh.start_node("node-a", &[]).unwrap();
    mesh.start_node("node-b", &[]).unwrap();
    mesh.serve("srv", 8080, false).unwrap();
    let srv = mesh.tb.pod("srv").unwrap().ip;
    let client_ip = mesh.tb.pod("client").unwrap().ip;
    assert!(
        mesh.reaches("client", "srv", 8080),
        "the mesh does not work"
    );
    assert!(
        !mesh.reaches("outsider", "srv", 8080),
        "STRICT let plaintext in"
    );

    // Traffic under way when both mesh-nodes die.
    let mut rr = Command::new(binary("ambit-probe").unwrap());
    rr.args([
        "rr",
        "--to",
        &format!("{srv}:8080"),
        "--rate",
        "200",
        "--secs",
        "2",
    ]);
    let load = mesh.tb.spawn_in_pod("client", "rr", rr).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let capture = Capture::start(&mesh.tb, &mesh.dir().join("gap.pcap")).unwrap();
    kill_9(&mesh, "node-a");
    kill_9(&mesh, "node-b");

    // The gap: the enrolled client's connections are refused in its own
    // netns (nothing leaves it), and plaintext to the STRICT pod is refused.
    let marker = "PLAINTEXT-IN-THE-GAP-7781";
    for _ in 0..5 {
        let r = mesh.send("client", SocketAddr::from((srv, 8080)), 64, marker);
        assert!(
            !matches!(&r, Ok(r) if r.intact),
            "with no mesh-node, the enrolled client reached the server: {r:?}"
        );
        assert!(
            !mesh.reaches("outsider", "srv", 8080),
            "with no mesh-node, plaintext reached the STRICT pod"
        );
    }
    let segments = capture.finish(&mesh.tb).unwrap();
    assert!(
        !contains_plaintext(&segments, marker.as_bytes()),
        "the enrolled client's payload crossed the wire in plaintext"
    );
    let leaked: Vec<_> = segments
        .iter()
        .filter(|s| std::net::IpAddr::V4(*s.src.ip()) == client_ip && s.dst.port() == 8080)
        .collect();
    assert!(
        leaked.is_empty(),
        "the enrolled client sent {} segments straight to :8080 while no mesh-node ran",
        leaked.len()
    );
    let _ = mesh
        .tb
        .with_proc(load, |p| p.wait_timeout(Duration::from_secs(10)));

    // New mesh-nodes adopt the pods the pins kept captured.
    mesh.start_node("node-a", &[]).unwrap();
    mesh.start_node("node-b", &[]).unwrap();
    mesh.wait_node_log("node-b", "still_enrolled=1", Duration::from_secs(1))
        .unwrap();
    assert!(
        mesh.reaches("client", "srv", 8080),
        "the restarted mesh-nodes do not carry the client's traffic"
    );
    assert!(
        !mesh.reaches("outsider", "srv", 8080),
        "after the restart STRICT let plaintext in"
    );
}
