//! A pod whose enrolment fails is an error the operator sees (issue 9,
//! item 4, the operator-visibility part): a port mesh-node needs in the
//! pod's netns is taken before mesh-node starts; node-b answers not-ready
//! naming the pod and its error, counts it in its metrics, and `meshctl
//! proxy-status --node` shows it. Once the port is free again, the retry
//! enrols the pod and readiness returns.
//!
//! Meanwhile the pod fails closed: it is held in the kernel (captured, with
//! no listener to take its connections), so plaintext to it is refused
//! rather than handed to the app unmeshed.

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use mesh_tests::curl::{Curl, Reply};
use mesh_tests::mesh::{binary, LocalMesh};
use mesh_tests::netns_thread::in_netns;
use mesh_tests::testbed::PodSpec;
use mesh_tests::wait::within;

fn admin(mesh: &LocalMesh, node: &str, path: &str) -> Reply {
    Curl::new(format!("http://127.0.0.1:15000{path}"))
        .in_node(&mesh.tb, node)
        .unwrap_or_else(|e| panic!("{node} {path}: {e:#}"))
}

fn proxy_status(mesh: &LocalMesh, node: &str) -> String {
    let mut cmd = Command::new(binary("meshctl").unwrap());
    cmd.args(["proxy-status", "--node", "127.0.0.1:15000"]);
    mesh.tb
        .run_in_node(node, cmd, Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("meshctl proxy-status on {node}: {e:#}"))
}

fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn a_pod_that_cannot_enrol_is_named_in_readiness_metrics_and_proxy_status() {
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
    let blocked = mesh
        .add_pod(
            "node-b",
            PodSpec::new("blocked", "demo", "server").label("app", "blocked"),
        )
        .unwrap();
    // A process in the pod holds 15001 (mesh-node's outbound listener)
    // before mesh-node enrols it.
    let squatter = in_netns(&blocked.netns_path(), || {
        TcpListener::bind("127.0.0.1:15001")
    })
    .unwrap()
    .expect("binding 15001 in the pod");
    mesh.start_node("node-a", &[]).unwrap();
    mesh.start_node("node-b", &[]).unwrap();
    mesh.serve("srv", 8080, false).unwrap();
    mesh.serve("blocked", 8080, false).unwrap();

    // Held, not unmeshed: plaintext from outside the mesh is refused (the
    // namespace is PERMISSIVE, so once enrolled the same connection works).
    assert!(
        !mesh.reaches("outsider", "blocked", 8080),
        "a pod whose enrolment failed took plaintext unmeshed"
    );

    // Readiness: 503, naming the pod and why.
    let ready = admin(&mesh, "node-b", "/healthz/ready");
    assert_eq!(ready.status, 503, "{ready:?}");
    for needle in ["demo/blocked", "127.0.0.1:15001", "in use"] {
        assert!(
            ready.body.contains(needle),
            "{needle:?} in {:?}",
            ready.body
        );
    }
    // Metrics: one pod failing, at least one failed attempt.
    let m = admin(&mesh, "node-b", "/metrics").body;
    assert_eq!(metric(&m, "ambit_pod_enrolments_failing"), Some(1), "{m}");
    assert!(
        metric(&m, "ambit_pod_enrolment_failures_total").is_some_and(|n| n >= 1),
        "{m}"
    );
    // meshctl proxy-status --node: the node is not ready, the pod and its error listed.
    let status = proxy_status(&mesh, "node-b");
    println!("$ meshctl proxy-status --node 127.0.0.1:15000 (node-b)\n{status}");
    let row = status
        .lines()
        .find(|l| l.starts_with("node-b"))
        .unwrap_or_else(|| panic!("no node-b row: {status}"));
    assert!(row.contains("NO"), "{status}");
    assert!(
        status.lines().any(|l| l.contains("node-b demo/blocked")
            && l.contains("127.0.0.1:15001")
            && l.contains("in use")),
        "{status}"
    );

    // The others are unaffected: node-a is ready, srv on node-b is meshed.
    assert_eq!(admin(&mesh, "node-a", "/healthz/ready").status, 200);
    assert!(mesh.reaches("client", "srv", 8080));

    // The port is freed: the retry enrols the pod and readiness returns.
    drop(squatter);
    let back = within(Duration::from_secs(5), || {
        admin(&mesh, "node-b", "/healthz/ready").status == 200
    });
    assert!(
        back.is_some(),
        "still not ready after the port was freed: {:?}",
        admin(&mesh, "node-b", "/healthz/ready")
    );
    let line = mesh
        .wait_node_log("node-b", "pod enrolled", Duration::from_secs(1))
        .unwrap();
    assert!(
        mesh.node_log("node-b")
            .unwrap()
            .iter()
            .any(|l| l.contains("pod enrolled") && l.contains("demo/blocked")),
        "{line}"
    );
    let m = admin(&mesh, "node-b", "/metrics").body;
    assert_eq!(metric(&m, "ambit_pod_enrolments_failing"), Some(0), "{m}");
    assert!(
        mesh.reaches("outsider", "blocked", 8080),
        "the enrolled pod does not take PERMISSIVE plaintext"
    );
    let status = proxy_status(&mesh, "node-b");
    assert!(!status.contains("demo/blocked"), "{status}");
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("node-b") && l.contains("yes")),
        "{status}"
    );
}
