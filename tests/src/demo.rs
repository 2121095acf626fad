//! The sample application that `cargo xtask up` brings up, and the checks
//! that show the mesh working. An end-to-end test runs the same code, so the
//! README's first command stays true.
//!
//! ```text
//!  node-a: client (demo, sa client)   server-1 (demo, sa server, app=server)
//!  node-b: server-2 (demo, sa server)  outsider (legacy, not in the mesh)
//!  service server.demo 10.96.0.10:80 -> :8080 on app=server
//!  demo: PeerAuthentication STRICT; only sa client may call app=server
//! ```
//!
//! mesh-controller reads the same as Kubernetes-shaped YAML from a folder,
//! signs the pods' certificates and pushes config to both nodes over xDS.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Result};

use crate::mesh::{LocalMesh, Service};
use crate::testbed::PodSpec;
use crate::wire::{contains_plaintext, has_tls_client_hello, Capture};

pub const SERVICE_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
pub const MARKER: &str = "AMBIT-PLAINTEXT-MARKER-7f3a";

pub const POLICIES: &str = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: demo
spec:
  mtls:
    mode: STRICT
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: server-allow-client
  namespace: demo
spec:
  selector:
    matchLabels:
      app: server
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/demo/sa/client"]
    to:
    - operation:
        ports: ["8080"]
"#;

/// Builds the sample app's pods, service and policies, starts mesh-node on
/// both nodes and the two server replicas.
pub fn bring_up(step: &dyn Fn(&str)) -> Result<LocalMesh> {
    step("creating nodes node-a and node-b (network namespaces, a bridge between them)");
    let mut mesh = LocalMesh::new(&["node-a", "node-b"])?;
    mesh.namespace("demo", true).namespace("legacy", false);
    step("creating pods (netns, veth, routes, cgroup each)");
    mesh.add_pod(
        "node-a",
        PodSpec::new("client", "demo", "client").label("app", "client"),
    )?;
    mesh.add_pod(
        "node-a",
        PodSpec::new("server-1", "demo", "server").label("app", "server"),
    )?;
    mesh.add_pod(
        "node-b",
        PodSpec::new("server-2", "demo", "server").label("app", "server"),
    )?;
    mesh.add_pod("node-b", PodSpec::new("outsider", "legacy", "default"))?;
    mesh.add_service(Service {
        name: "server".into(),
        namespace: "demo".into(),
        vip: SERVICE_VIP,
        port: 80,
        target_port: 8080,
        selector: BTreeMap::from([("app".to_string(), "server".to_string())]),
    });
    mesh.set_policies_yaml(POLICIES)?;
    step("starting mesh-controller (the folder of YAML, the CA, delta xDS)");
    mesh.use_controller()?;
    step("starting mesh-node on node-a and node-b (loading eBPF, enrolling pods)");
    mesh.start_node("node-a", &[])?;
    mesh.start_node("node-b", &[])?;
    step("starting the server replicas");
    mesh.serve("server-1", 8080, false)?;
    mesh.serve("server-2", 8080, false)?;
    Ok(mesh)
}

/// What the demonstration observed.
#[derive(Debug, Default)]
pub struct DemoReport {
    pub answered_by: BTreeMap<String, usize>,
    pub identity_lines: Vec<String>,
    pub tls_on_wire: bool,
    pub plaintext_on_wire: bool,
    pub outsider_refused: bool,
}

/// Runs the sample traffic and prints what it shows through `say`.
pub fn demonstrate(mesh: &LocalMesh, say: &dyn Fn(&str)) -> Result<DemoReport> {
    let mut report = DemoReport::default();
    let capture = Capture::start(&mesh.tb, &mesh.dir().join("wire.pcap"))?;
    let vip = SocketAddr::from((SERVICE_VIP, 80));
    say(&format!(
        "client (demo/sa client) -> service server.demo {vip}, 6 connections:"
    ));
    for i in 0..6 {
        let r = mesh.send("client", vip, 4096, MARKER)?;
        if !r.intact {
            bail!("connection {i}: payload damaged: {r:?}");
        }
        say(&format!(
            "  #{i}: answered by {:<9} reached {:<16} (the app sees the mesh deliver it from {})",
            r.hello.server, r.hello.local, r.hello.peer
        ));
        *report.answered_by.entry(r.hello.server).or_default() += 1;
    }
    let segments = capture.finish(&mesh.tb)?;
    report.tls_on_wire = has_tls_client_hello(&segments, mesh_common::HBONE_PORT);
    report.plaintext_on_wire = contains_plaintext(&segments, MARKER.as_bytes());
    say("who called whom (mesh-node's log, identities from the mTLS certificates):");
    for node in ["node-a", "node-b"] {
        for l in mesh.node_log(node)? {
            if l.contains("inbound connection complete (HBONE") {
                let short = summarize(&l);
                say(&format!("  {node}: {short}"));
                report.identity_lines.push(l);
            }
        }
    }
    say(&format!(
        "on the wire between the nodes: {} segments captured; TLS ClientHello to :15008 {}; payload marker in plaintext {}",
        segments.len(),
        if report.tls_on_wire { "SEEN" } else { "NOT seen" },
        if report.plaintext_on_wire { "FOUND (bad)" } else { "absent" },
    ));
    let server2 = mesh.tb.pod("server-2")?.ip;
    let target = SocketAddr::from((server2, 8080));
    match mesh.send("outsider", target, 16, MARKER) {
        Ok(r) => say(&format!(
            "outsider (not in the mesh) -> {target} plaintext: ANSWERED (bad): {r:?}"
        )),
        Err(_) => {
            report.outsider_refused = true;
            say(&format!(
                "outsider (legacy namespace, not in the mesh) -> server-2 {target} in plaintext: refused (PeerAuthentication STRICT)"
            ));
        }
    }
    Ok(report)
}

/// Keeps the interesting fields of a log line.
fn summarize(line: &str) -> String {
    let field = |k: &str| -> String {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .unwrap_or("?")
            .to_string()
    };
    format!(
        "{} -> {} at {}",
        field("src.identity"),
        field("dst.identity"),
        field("dst.addr")
    )
}

/// Waits a moment for log lines that are written when connections close.
pub fn settle() {
    std::thread::sleep(Duration::from_millis(300));
}
