//! Policy changes reach connections already open (issue 9, item 7): a DENY
//! added while a cross-node HBONE stream is open ends that stream within a
//! second, and STRICT ends an open PERMISSIVE plaintext connection, as
//! ztunnel does. New connections are refused as before; streams the change
//! does not deny go on.

use std::process::Command;
use std::time::{Duration, Instant};

use mesh_tests::curl::Curl;
use mesh_tests::mesh::{binary, LocalMesh};
use mesh_tests::probe::StreamReport;
use mesh_tests::testbed::PodSpec;

/// How long a config change may take to end an open connection.
const CUT_WITHIN: Duration = Duration::from_secs(1);

/// Starts `ambit-probe stream` from `from` to pod `to` on 8080 and waits
/// until echoes flow on it.
fn open_stream(mesh: &LocalMesh, from: &str, to: &str) -> usize {
    let ip = mesh.tb.pod(to).unwrap().ip;
    let mut cmd = Command::new(binary("ambit-probe").unwrap());
    cmd.args(["stream", "--to", &format!("{ip}:8080"), "--secs", "60"]);
    let idx = mesh
        .tb
        .spawn_in_pod(from, &format!("stream {from}->{to}"), cmd)
        .unwrap();
    mesh.tb
        .with_proc(idx, |p| p.wait_for_line("echo 5", Duration::from_secs(10)))
        .unwrap()
        .unwrap_or_else(|e| panic!("no data on the stream {from} -> {to}: {e:#}"));
    idx
}

/// The stream's report, if it has ended.
fn ended(mesh: &LocalMesh, idx: usize) -> Option<StreamReport> {
    let lines = mesh.tb.with_proc(idx, |p| p.lines()).unwrap();
    lines
        .iter()
        .find(|l| l.contains("\"kind\":\"stream\""))
        .map(|l| serde_json::from_str(l).unwrap())
}

fn echoes(mesh: &LocalMesh, idx: usize) -> usize {
    let lines = mesh.tb.with_proc(idx, |p| p.lines()).unwrap();
    lines.iter().filter(|l| l.starts_with("echo ")).count()
}

/// Waits (bounded by [`CUT_WITHIN`] from `since`, plus the time to notice)
/// for the stream to end, and returns its report.
fn cut_within_a_second(mesh: &LocalMesh, idx: usize, since: Instant) -> StreamReport {
    let limit = since + CUT_WITHIN;
    loop {
        if let Some(r) = ended(mesh, idx) {
            let took = since.elapsed();
            assert!(
                took <= CUT_WITHIN + Duration::from_millis(50),
                "the stream ended only {took:?} after the change: {r:?}"
            );
            assert_ne!(r.ended, "time limit", "{r:?}");
            return r;
        }
        assert!(
            Instant::now() < limit,
            "the open stream still flows {CUT_WITHIN:?} after the change ({} echoes)",
            echoes(mesh, idx)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn node_metrics(mesh: &LocalMesh, node: &str) -> String {
    Curl::new("http://127.0.0.1:15000/metrics")
        .in_node(&mesh.tb, node)
        .unwrap()
        .body
}

const DENY_CLIENT: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-client, namespace: demo}
spec:
  selector: {matchLabels: {app: srv}}
  action: DENY
  rules:
  - from: [{source: {principals: ["cluster.local/ns/demo/sa/client"]}}]
"#;

#[test]
fn a_deny_closes_an_open_hbone_stream_within_a_second() {
    let mut mesh = LocalMesh::new(&["node-a", "node-b"]).expect("testbed (needs root)");
    mesh.namespace("demo", true);
    mesh.add_pod("node-a", PodSpec::new("client", "demo", "client"))
        .unwrap();
    mesh.add_pod("node-a", PodSpec::new("bystander", "demo", "other"))
        .unwrap();
    mesh.add_pod(
        "node-b",
        PodSpec::new("srv", "demo", "server").label("app", "srv"),
    )
    .unwrap();
    mesh.start_node("node-a", &[]).unwrap();
    mesh.start_node("node-b", &[]).unwrap();
    mesh.serve("srv", 8080, false).unwrap();

    // Two long-lived streams across nodes (HBONE), data flowing on both.
    let denied = open_stream(&mesh, "client", "srv");
    let kept = open_stream(&mesh, "bystander", "srv");

    // A DENY that matches the client's identity only.
    mesh.set_policies_yaml(DENY_CLIENT).unwrap();
    mesh.write_config().unwrap();
    let changed = Instant::now();
    let report = cut_within_a_second(&mesh, denied, changed);
    eprintln!(
        "denied stream ended after {:?}: {report:?}",
        changed.elapsed()
    );

    // The bystander's stream is not denied: it goes on.
    let before = echoes(&mesh, kept);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        echoes(&mesh, kept) > before + 5 && ended(&mesh, kept).is_none(),
        "a stream the DENY does not match was cut: {:?}",
        ended(&mesh, kept)
    );

    // A new connection is refused, the bystander's still admitted.
    assert!(
        !mesh.reaches("client", "srv", 8080),
        "a new connection passed the DENY"
    );
    assert!(mesh.reaches("bystander", "srv", 8080));

    // node-b logged the close with the identities and the policy, and counted it.
    let line = mesh
        .wait_node_log("node-b", "open connection closed", Duration::from_secs(1))
        .unwrap();
    for needle in [
        "spiffe://cluster.local/ns/demo/sa/client",
        "demo/srv",
        "denied by DENY policy demo/deny-client",
    ] {
        assert!(line.contains(needle), "{needle:?} not in {line}");
    }
    let metrics = node_metrics(&mesh, "node-b");
    assert!(
        metrics.contains("ambit_connections_closed_by_policy_total 1\n"),
        "{metrics}"
    );
}

const STRICT: &str = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: demo}
spec: {mtls: {mode: STRICT}}
"#;

#[test]
fn strict_closes_an_open_permissive_plaintext_connection() {
    let mut mesh = LocalMesh::new(&["node-a", "node-b"]).expect("testbed (needs root)");
    mesh.namespace("demo", true).namespace("legacy", false);
    mesh.add_pod("node-a", PodSpec::new("outsider", "legacy", "default"))
        .unwrap();
    mesh.add_pod("node-a", PodSpec::new("client", "demo", "client"))
        .unwrap();
    mesh.add_pod(
        "node-b",
        PodSpec::new("srv", "demo", "server").label("app", "srv"),
    )
    .unwrap();
    mesh.start_node("node-a", &[]).unwrap();
    mesh.start_node("node-b", &[]).unwrap();
    mesh.serve("srv", 8080, false).unwrap();

    // No PeerAuthentication: PERMISSIVE, plaintext from outside the mesh is
    // let in (through node-b's 15006) and an mTLS stream runs beside it.
    let plaintext = open_stream(&mesh, "outsider", "srv");
    let mtls = open_stream(&mesh, "client", "srv");

    mesh.set_policies_yaml(STRICT).unwrap();
    mesh.write_config().unwrap();
    let changed = Instant::now();
    let report = cut_within_a_second(&mesh, plaintext, changed);
    eprintln!(
        "plaintext stream ended after {:?}: {report:?}",
        changed.elapsed()
    );

    let before = echoes(&mesh, mtls);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        echoes(&mesh, mtls) > before + 5 && ended(&mesh, mtls).is_none(),
        "STRICT cut an mTLS stream: {:?}",
        ended(&mesh, mtls)
    );
    assert!(
        !mesh.reaches("outsider", "srv", 8080),
        "STRICT let a new plaintext connection in"
    );
    assert!(mesh.reaches("client", "srv", 8080));

    let line = mesh
        .wait_node_log("node-b", "open connection closed", Duration::from_secs(1))
        .unwrap();
    assert!(
        line.contains("PeerAuthentication STRICT on port 8080") && line.contains("Plaintext"),
        "{line}"
    );
    let metrics = node_metrics(&mesh, "node-b");
    assert!(
        metrics.contains("ambit_connections_closed_by_policy_total 1\n"),
        "{metrics}"
    );
}
