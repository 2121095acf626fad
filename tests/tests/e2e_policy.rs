//! L4 policy on the live data path: PeerAuthentication modes at every scope,
//! an AuthorizationPolicy table, and config changes (good and bad) applied
//! while traffic flows.

use std::net::SocketAddr;
use std::time::Duration;

use mesh_tests::mesh::LocalMesh;
use mesh_tests::testbed::PodSpec;
use mesh_tests::wait::within;

fn reaches(mesh: &LocalMesh, from: &str, to: &str, port: u16) -> bool {
    mesh.reaches(from, to, port)
}

fn peer_auth(
    scope_ns: &str,
    selector: Option<&str>,
    mode: &str,
    port_level: Option<(u16, &str)>,
) -> String {
    let mut s = format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: pa-{}\n  namespace: {scope_ns}\nspec:\n",
        selector.unwrap_or("ns")
    );
    if let Some(app) = selector {
        s += &format!("  selector:\n    matchLabels:\n      app: {app}\n");
    }
    s += &format!("  mtls:\n    mode: {mode}\n");
    if let Some((port, pmode)) = port_level {
        s += &format!("  portLevelMtls:\n    {port}:\n      mode: {pmode}\n");
    }
    s + "---\n"
}

#[test]
fn peer_authentication_strict_permissive_disable_at_each_scope() {
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
    mesh.add_pod(
        "node-b",
        PodSpec::new("friendly", "demo", "server").label("app", "friendly"),
    )
    .unwrap();
    mesh.set_policies_yaml(&peer_auth("demo", None, "STRICT", None))
        .unwrap();
    mesh.start_node("node-a", &[]).unwrap();
    mesh.start_node("node-b", &[]).unwrap();
    for (pod, port) in [("srv", 8080), ("srv", 9090), ("friendly", 8080)] {
        mesh.serve(pod, port, false).unwrap();
    }

    // Namespace STRICT: plaintext from outside the mesh is refused; mTLS works.
    assert!(
        !reaches(&mesh, "outsider", "srv", 8080),
        "STRICT let plaintext in"
    );
    assert!(
        reaches(&mesh, "client", "srv", 8080),
        "mesh client refused under STRICT"
    );

    // PERMISSIVE accepts plaintext, applied within a second of the file change.
    mesh.set_policies_yaml(&peer_auth("demo", None, "PERMISSIVE", None))
        .unwrap();
    mesh.write_config().unwrap();
    let took = within(Duration::from_secs(1), || {
        reaches(&mesh, "outsider", "srv", 8080)
    });
    assert!(took.is_some(), "PERMISSIVE not in effect within 1 s");
    let ip = mesh.tb.pod("srv").unwrap().ip;
    let r = mesh
        .send("outsider", SocketAddr::from((ip, 8080)), 10, "p")
        .unwrap();
    assert!(
        r.hello.via_node_proxy(),
        "plaintext not through the node proxy: {r:?}"
    );
    assert_eq!(
        r.hello.peer_ip(),
        Some(mesh.tb.pod("outsider").unwrap().ip.into()),
        "the app did not see the plaintext caller: {r:?}"
    );

    // DISABLE lets plaintext through untouched.
    mesh.set_policies_yaml(&peer_auth("demo", None, "DISABLE", None))
        .unwrap();
    mesh.write_config().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let r = mesh
        .send("outsider", SocketAddr::from((ip, 8080)), 100_000, "d")
        .unwrap();
    assert!(r.intact);

    // Mesh-wide STRICT (root namespace), a workload that opts out, and a
    // port that opts out on an otherwise STRICT workload.
    let docs = peer_auth("istio-system", None, "STRICT", None)
        + &peer_auth("demo", Some("friendly"), "PERMISSIVE", None)
        + &peer_auth("demo", Some("srv"), "STRICT", Some((9090, "DISABLE")));
    mesh.set_policies_yaml(&docs).unwrap();
    mesh.write_config().unwrap();
    let took = within(Duration::from_secs(1), || {
        !reaches(&mesh, "outsider", "srv", 8080)
    });
    assert!(took.is_some(), "mesh-wide STRICT not in effect within 1 s");
    assert!(
        reaches(&mesh, "outsider", "friendly", 8080),
        "workload PERMISSIVE ignored"
    );
    assert!(
        reaches(&mesh, "outsider", "srv", 9090),
        "port-level DISABLE ignored"
    );
    assert!(
        !reaches(&mesh, "outsider", "srv", 8080),
        "STRICT port let plaintext in"
    );
    assert!(
        reaches(&mesh, "client", "srv", 8080),
        "mTLS refused under STRICT"
    );
}

const AUTHZ: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: api-allow, namespace: demo}
spec:
  selector: {matchLabels: {app: api}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/demo/sa/client"]}}]
    to: [{operation: {ports: ["8080"]}}]
  - from: [{source: {namespaces: ["other"]}}]
    to: [{operation: {ports: ["9090"]}}]
  - from: [{source: {notPrincipals: ["cluster.local/ns/demo/sa/client"]}}]
    to: [{operation: {ports: ["6060"]}}]
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: db-allow-authenticated, namespace: demo}
spec:
  selector: {matchLabels: {app: db}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["*"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: db-deny-other-on-7070, namespace: demo}
spec:
  selector: {matchLabels: {app: db}}
  action: DENY
  rules:
  - from: [{source: {principals: ["*/sa/other"]}}]
    to: [{operation: {ports: ["7070"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: db-audit-other-ns, namespace: demo}
spec:
  selector: {matchLabels: {app: db}}
  action: AUDIT
  rules:
  - from: [{source: {namespaces: ["other"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mesh-deny-block, namespace: istio-system}
spec:
  action: DENY
  rules:
  - from: [{source: {ipBlocks: ["FOREIGN_IP/32"]}}]
    to: [{operation: {ports: ["8080"]}}]
"#;

#[test]
fn authorization_policy_table() {
    let mut mesh = LocalMesh::new(&["node-a", "node-b"]).expect("testbed (needs root)");
    mesh.namespace("demo", true)
        .namespace("other", true)
        .namespace("legacy", false);
    mesh.add_pod("node-a", PodSpec::new("c-client", "demo", "client"))
        .unwrap();
    mesh.add_pod("node-a", PodSpec::new("c-other", "demo", "other"))
        .unwrap();
    let foreign = mesh
        .add_pod("node-a", PodSpec::new("c-foreign", "other", "client"))
        .unwrap();
    mesh.add_pod("node-a", PodSpec::new("outsider", "legacy", "default"))
        .unwrap();
    mesh.add_pod(
        "node-b",
        PodSpec::new("api", "demo", "api").label("app", "api"),
    )
    .unwrap();
    mesh.add_pod(
        "node-b",
        PodSpec::new("db", "demo", "db").label("app", "db"),
    )
    .unwrap();
    // The same-node caller of db exercises policy on the same node as well.
    mesh.add_pod("node-b", PodSpec::new("c-near", "demo", "other"))
        .unwrap();
    mesh.set_policies_yaml(&AUTHZ.replace("FOREIGN_IP", &foreign.ip.to_string()))
        .unwrap();
    mesh.start_node("node-a", &[]).unwrap();
    mesh.start_node("node-b", &[]).unwrap();
    for (pod, port) in [
        ("api", 8080),
        ("api", 9090),
        ("api", 6060),
        ("db", 8080),
        ("db", 7070),
    ] {
        mesh.serve(pod, port, false).unwrap();
    }
    // (source pod, destination pod, port, allowed?, why)
    let table: &[(&str, &str, u16, bool, &str)] = &[
        (
            "c-client",
            "api",
            8080,
            true,
            "principal matches the ALLOW rule",
        ),
        (
            "c-client",
            "api",
            9090,
            false,
            "ALLOW exists, no rule for this port: implicit deny",
        ),
        (
            "c-other",
            "api",
            8080,
            false,
            "principal not allowed on 8080",
        ),
        (
            "c-foreign",
            "api",
            9090,
            true,
            "namespace other allowed on 9090",
        ),
        (
            "c-foreign",
            "api",
            8080,
            false,
            "namespace other not allowed on 8080",
        ),
        (
            "c-other",
            "api",
            6060,
            true,
            "notPrincipals excludes only sa client",
        ),
        (
            "c-client",
            "api",
            6060,
            false,
            "notPrincipals excludes sa client",
        ),
        ("c-client", "db", 8080, true, "any authenticated principal"),
        ("c-other", "db", 8080, true, "any authenticated principal"),
        (
            "c-other",
            "db",
            7070,
            false,
            "DENY suffix wildcard */sa/other on 7070",
        ),
        (
            "c-near",
            "db",
            7070,
            false,
            "DENY holds for a same-node caller too",
        ),
        (
            "c-client",
            "db",
            7070,
            true,
            "DENY does not match sa client",
        ),
        (
            "c-foreign",
            "db",
            7070,
            true,
            "AUDIT never changes the decision",
        ),
        (
            "c-foreign",
            "db",
            8080,
            false,
            "mesh-wide DENY by source ipBlock on 8080",
        ),
        (
            "outsider",
            "db",
            8080,
            false,
            "plaintext has no principal: '*' does not match",
        ),
        ("outsider", "api", 8080, false, "plaintext: implicit deny"),
    ];
    let mut failures = Vec::new();
    for (from, to, port, allowed, why) in table {
        let got = reaches(&mesh, from, to, *port);
        if got != *allowed {
            failures.push(format!(
                "{from} -> {to}:{port}: expected {}, got {} ({why})",
                if *allowed { "allow" } else { "deny" },
                if got { "allow" } else { "deny" }
            ));
        }
    }
    let log = mesh.node_log("node-b").unwrap().join("\n");
    assert!(
        failures.is_empty(),
        "{}\nnode-b log:\n{log}",
        failures.join("\n")
    );
    assert!(
        log.contains("connection denied by policy"),
        "denials were not logged"
    );
}

#[test]
fn malformed_config_is_refused_and_traffic_keeps_flowing() {
    let mut mesh = LocalMesh::client_and_server(true, &[]).expect("testbed (needs root)");
    assert!(reaches(&mesh, "client", "srv", 8080));

    // A workload with an impossible address: refused, named, last good kept.
    let mut bad = mesh.config_value();
    bad["workloads"][1]["ip"] = serde_json::json!("10.10.2.300");
    mesh.raw_override = Some(serde_yaml::to_string(&bad).unwrap());
    mesh.write_config().unwrap();
    let line = mesh
        .wait_node_log("node-a", "10.10.2.300", Duration::from_secs(2))
        .unwrap();
    assert!(
        line.contains("workloads[1]") && line.contains("ip"),
        "error does not name the entry and field: {line}"
    );
    assert!(
        reaches(&mesh, "client", "srv", 8080),
        "traffic stopped after a bad config"
    );

    // Not YAML at all: same.
    mesh.raw_override = Some("workloads: [unclosed\n".into());
    mesh.write_config().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        reaches(&mesh, "client", "srv", 8080),
        "traffic stopped after unparsable config"
    );

    // Fixed again: a policy change in the good file takes effect.
    mesh.raw_override = None;
    mesh.set_policies_yaml(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-all, namespace: demo}\nspec:\n  action: DENY\n  rules: [{}]\n",
    )
    .unwrap();
    mesh.write_config().unwrap();
    let took = within(Duration::from_secs(1), || {
        !reaches(&mesh, "client", "srv", 8080)
    });
    assert!(
        took.is_some(),
        "deny-all not in effect within 1 s of a good file"
    );
}
