//! The mesh driven by mesh-controller: config over delta xDS, certificates
//! from its CA, and what happens when a resource is bad or the controller dies.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use mesh_tests::mesh::{binary, LocalMesh};
use mesh_tests::probe::LoadReport;
use mesh_tests::testbed::PodSpec;
use mesh_tests::wait::within;

const DENY_ALL: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-all, namespace: demo}\nspec:\n  action: DENY\n  rules: [{}]\n";

fn controller_mesh() -> LocalMesh {
    let mut mesh = LocalMesh::new(&["node-a", "node-b"]).expect("testbed (needs root)");
    mesh.namespace("demo", true).namespace("legacy", false);
    mesh.add_pod("node-a", PodSpec::new("client", "demo", "client"))
        .unwrap();
    mesh.add_pod(
        "node-b",
        PodSpec::new("srv", "demo", "server").label("app", "srv"),
    )
    .unwrap();
    mesh.use_controller().expect("mesh-controller");
    mesh.start_node("node-a", &[]).unwrap();
    mesh.start_node("node-b", &[]).unwrap();
    mesh.serve("srv", 8080, false).unwrap();
    mesh
}

#[test]
fn config_and_certificates_come_from_the_controller() {
    let mut mesh = controller_mesh();
    let srv = mesh.tb.pod("srv").unwrap().ip;
    let r = mesh
        .send("client", SocketAddr::from((srv, 8080)), 100_000, "c")
        .unwrap();
    let client = mesh.tb.pod("client").unwrap().ip;
    assert!(r.intact && r.hello.via_node_proxy(), "{r:?}");
    assert_eq!(r.hello.peer_ip(), Some(client.into()), "{r:?}");
    // The identity the server's node saw came from a CA-issued certificate.
    mesh.wait_node_log(
        "node-b",
        "src.identity=spiffe://cluster.local/ns/demo/sa/client",
        Duration::from_secs(3),
    )
    .unwrap();

    // A policy added to the folder reaches the nodes within a second.
    mesh.set_policies_yaml(DENY_ALL).unwrap();
    mesh.write_config().unwrap();
    assert!(
        within(Duration::from_secs(1), || !mesh
            .reaches("client", "srv", 8080))
        .is_some(),
        "deny-all not in effect within 1 s"
    );
    mesh.set_policies_yaml("").unwrap();
    mesh.write_config().unwrap();
    assert!(
        within(Duration::from_secs(1), || mesh
            .reaches("client", "srv", 8080))
        .is_some(),
        "deny-all not lifted within 1 s"
    );

    // A bad resource is refused, named with its field; the last good config serves.
    let mut bad = mesh.tb.pod("srv").unwrap().clone();
    bad.name = "broken".into();
    mesh.raw_override = Some(format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: broken, namespace: demo}}\nspec: {{nodeName: node-b}}\nstatus: {{podIP: 10.10.2.300}}\n---\n{}",
        std::fs::read_to_string(mesh.folder().join("mesh.yaml")).unwrap()
    ));
    mesh.write_config().unwrap();
    let refused = within(Duration::from_secs(2), || {
        mesh.controller_log()
            .unwrap()
            .iter()
            .any(|l| l.contains("demo/broken") && l.contains("status.podIP"))
    })
    .is_some();
    assert!(
        refused,
        "refusal not logged with name and field:\n{}",
        mesh.controller_log().unwrap().join("\n")
    );
    assert!(
        mesh.reaches("client", "srv", 8080),
        "traffic stopped after a bad resource"
    );
    mesh.raw_override = None;
    mesh.write_config().unwrap();
}

#[test]
fn controller_killed_under_traffic_then_nodes_resynchronise() {
    let mut mesh = controller_mesh();
    let srv = mesh.tb.pod("srv").unwrap().ip;
    let mut rr = Command::new(binary("ambit-probe").unwrap());
    rr.args([
        "rr",
        "--to",
        &format!("{srv}:8080"),
        "--rate",
        "200",
        "--secs",
        "3",
    ]);
    let load = mesh.tb.spawn_in_pod("client", "rr", rr).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    mesh.kill_controller().unwrap();

    // Established and new connections keep working on the last good config.
    for _ in 0..5 {
        assert!(
            mesh.reaches("client", "srv", 8080),
            "new connection failed without the controller"
        );
    }
    let line = mesh
        .tb
        .with_proc(load, |p| {
            p.wait_for_line("\"kind\":\"rr\"", Duration::from_secs(10))
        })
        .unwrap()
        .expect("the stream in flight failed when the controller died");
    let report: LoadReport = serde_json::from_str(&line).unwrap();
    assert!(report.operations > 300, "stream cut short: {report:?}");

    // A change made while the controller is away lands when it returns.
    mesh.set_policies_yaml(DENY_ALL).unwrap();
    mesh.write_config().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        mesh.reaches("client", "srv", 8080),
        "a change applied without a controller"
    );
    mesh.start_controller().unwrap();
    assert!(
        within(Duration::from_secs(10), || !mesh
            .reaches("client", "srv", 8080))
        .is_some(),
        "nodes did not resynchronise after the controller came back"
    );
}
