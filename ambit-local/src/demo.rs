//! The sample application that `cargo xtask up` brings up, and the checks
//! that show the mesh working. An end-to-end test runs the same code, so the
//! README's first command stays true.
//!
//! ```text
//!  node-a: client (demo, sa client)   server-1 (demo, sa server, app=server)
//!  node-b: server-2 (demo, sa server)  outsider (legacy, not in the mesh)
//!  service server.demo 10.96.0.10:80 -> :8080 on app=server
//!  demo: PeerAuthentication STRICT; only sa client may call app=server
//!  shop (use-waypoint: waypoint): reviews-v1 (node-a), reviews-v2 and the
//!    waypoint (node-b); service reviews.shop 10.96.0.20:9080;
//!    VirtualService: end-user jason -> v2, everyone else -> v1
//! ```
//!
//! mesh-controller reads the same as Kubernetes-shaped YAML from a folder,
//! signs the pods' certificates and pushes config to both nodes over xDS.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use mesh_tests::mesh::{LocalMesh, Service};
use mesh_tests::testbed::PodSpec;
use mesh_tests::wire::{contains_plaintext, has_tls_client_hello, Capture};

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
        labels: BTreeMap::new(),
    });
    mesh.set_policies_yaml(POLICIES)?;
    add_shop(&mut mesh)?;
    step("starting mesh-controller (the folder of YAML, the CA, delta xDS)");
    mesh.use_controller()?;
    step("starting mesh-node on node-a and node-b (loading eBPF, enrolling pods)");
    mesh.start_node("node-a", &[])?;
    mesh.start_node("node-b", &[])?;
    step("starting the server replicas");
    mesh.serve("server-1", 8080, false)?;
    mesh.serve("server-2", 8080, false)?;
    step("starting the shop's reviews and its waypoint (L7 config over xDS)");
    start_shop(&mut mesh)?;
    Ok(mesh)
}

// ---- The shop: L7 routing by a waypoint in xDS mode ----

pub const SHOP_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);
pub const SHOP_PORT: u16 = 9080;

/// The shop's L7 resources, in the controller's folder beside the rest.
pub const SHOP_L7: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - match:
    - headers:
        end-user: {exact: jason}
    route:
    - destination: {host: reviews, subset: v2}
  - route:
    - destination: {host: reviews, subset: v1}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"#;

/// Namespace `shop` (ambient, `istio.io/use-waypoint: waypoint`): pods
/// reviews-v1 (node-a) and reviews-v2 (node-b) behind service reviews, and
/// the waypoint (node-b, not enrolled), which takes its config from
/// mesh-controller over xDS.
fn add_shop(mesh: &mut LocalMesh) -> Result<()> {
    mesh.namespace("shop", true)
        .namespace_label("shop", "istio.io/use-waypoint", "waypoint");
    mesh.add_pod(
        "node-b",
        PodSpec::new("waypoint", "shop", "waypoint")
            .label("istio.io/dataplane-mode", "none")
            .label("gateway.istio.io/managed", "istio.io-mesh-controller"),
    )?;
    for (version, node) in [("v1", "node-a"), ("v2", "node-b")] {
        mesh.add_pod(
            node,
            PodSpec::new(&format!("reviews-{version}"), "shop", "reviews")
                .label("app", "reviews")
                .label("version", version),
        )?;
    }
    mesh.add_service(Service {
        name: "reviews".into(),
        namespace: "shop".into(),
        vip: SHOP_VIP,
        port: SHOP_PORT,
        target_port: SHOP_PORT,
        selector: BTreeMap::from([("app".to_string(), "reviews".to_string())]),
        labels: BTreeMap::new(),
    });
    Ok(())
}

fn start_shop(mesh: &mut LocalMesh) -> Result<()> {
    mesh.write_folder_file("shop-l7.yaml", SHOP_L7)?;
    for pod in ["reviews-v1", "reviews-v2"] {
        let mut cmd = std::process::Command::new(mesh_tests::mesh::binary("ambit-probe")?);
        cmd.args(["http", "--name", pod, "--port", &SHOP_PORT.to_string()]);
        let idx = mesh.tb.spawn_in_pod(pod, &format!("{pod}:http"), cmd)?;
        mesh.tb.with_proc(idx, |p| {
            p.wait_for_line("listening", Duration::from_secs(10))
        })??;
    }
    mesh.start_waypoint_xds("waypoint", "shop", &[])?;
    Ok(())
}

/// Who served `n` GETs from the client to reviews.shop with `headers`.
fn shop_served_by(mesh: &LocalMesh, headers: &[&str], n: u64) -> Result<BTreeMap<String, u64>> {
    let mut cmd = std::process::Command::new(mesh_tests::mesh::binary("ambit-probe")?);
    cmd.args([
        "http-load",
        "--url",
        &format!("http://{SHOP_VIP}:{SHOP_PORT}/reviews"),
        "--requests",
        &n.to_string(),
    ]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = mesh.tb.run_in_pod("client", cmd, Duration::from_secs(30))?;
    let line = out.lines().last().unwrap_or("");
    let r: mesh_tests::http_app::HttpLoadReport =
        serde_json::from_str(line).with_context(|| format!("load report: {out}"))?;
    Ok(r.by_server)
}

/// The L7 fact: `end-user: jason` → v2, everyone else → v1. The first
/// L7 sync may land just after the waypoint's start: retried briefly.
fn demonstrate_shop(mesh: &LocalMesh, report: &mut DemoReport, say: &dyn Fn(&str)) -> Result<()> {
    let n = 5;
    let only = |m: &BTreeMap<String, u64>, pod: &str| m.get(pod) == Some(&n) && m.len() == 1;
    let start = std::time::Instant::now();
    let (jason, others) = loop {
        let jason = shop_served_by(mesh, &["end-user: jason"], n)?;
        let others = shop_served_by(mesh, &[], n)?;
        if (only(&jason, "reviews-v2") && only(&others, "reviews-v1"))
            || start.elapsed() > Duration::from_secs(5)
        {
            break (jason, others);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    report.l7_routed = only(&jason, "reviews-v2") && only(&others, "reviews-v1");
    let show = |m: &BTreeMap<String, u64>| {
        m.iter()
            .map(|(k, v)| format!("{k} x{v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    say(&format!(
        "L7 via the shop's waypoint (VirtualService over xDS): end-user: jason -> {}; everyone else -> {}",
        show(&jason),
        show(&others)
    ));
    Ok(())
}

/// What the demonstration observed.
#[derive(Debug, Default)]
pub struct DemoReport {
    pub answered_by: BTreeMap<String, usize>,
    pub identity_lines: Vec<String>,
    pub tls_on_wire: bool,
    pub plaintext_on_wire: bool,
    pub outsider_refused: bool,
    /// The shop's waypoint sent jason to v2 and everyone else to v1.
    pub l7_routed: bool,
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
    demonstrate_shop(mesh, &mut report, say)?;
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
