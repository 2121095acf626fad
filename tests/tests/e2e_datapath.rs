//! The data path end to end: real eBPF capture, real mTLS between nodes,
//! real sockets in namespaced pods.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use mesh_tests::mesh::{LocalMesh, Service};
use mesh_tests::testbed::PodSpec;
use mesh_tests::wire::{contains_plaintext, has_tls_client_hello, Capture};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);

/// client and srv-a on node-a, srv-b on node-b, all in the ambient
/// namespace `demo`; a service over both servers.
fn two_node_mesh() -> LocalMesh {
    let mut mesh = LocalMesh::new(&["node-a", "node-b"]).expect("testbed (needs root)");
    mesh.namespace("demo", true).namespace("legacy", false);
    mesh.add_pod("node-a", PodSpec::new("client", "demo", "client"))
        .unwrap();
    mesh.add_pod(
        "node-a",
        PodSpec::new("srv-a", "demo", "server").label("app", "server"),
    )
    .unwrap();
    mesh.add_pod(
        "node-b",
        PodSpec::new("srv-b", "demo", "server").label("app", "server"),
    )
    .unwrap();
    mesh.add_service(Service {
        name: "server".into(),
        namespace: "demo".into(),
        vip: VIP,
        port: 80,
        target_port: 8080,
        selector: BTreeMap::from([("app".into(), "server".into())]),
        labels: BTreeMap::new(),
    });
    mesh
}

fn start(mesh: &mut LocalMesh) {
    mesh.start_node("node-a", &[]).unwrap();
    mesh.start_node("node-b", &[]).unwrap();
    mesh.serve("srv-a", 8080, false).unwrap();
    mesh.serve("srv-b", 8080, false).unwrap();
}

#[test]
fn payloads_arrive_intact_cross_node_and_same_node() {
    let mut mesh = two_node_mesh();
    start(&mut mesh);
    let client_ip = mesh.tb.pod("client").unwrap().ip;
    for (server, what) in [("srv-b", "cross-node"), ("srv-a", "same-node")] {
        let ip = mesh.tb.pod(server).unwrap().ip;
        for bytes in [1u64, 1000, 1 << 20, 64 << 20] {
            let r = mesh
                .send("client", SocketAddr::from((ip, 8080)), bytes, "m")
                .unwrap_or_else(|e| panic!("{what} {bytes} bytes: {e:#}"));
            assert!(r.intact, "{what} {bytes} bytes damaged: {r:?}");
            assert_eq!(r.received, bytes, "{what}");
            assert_eq!(r.hello.server, server);
            // The app sees its own address and original port, the caller's
            // address, and the connection delivered by its node proxy (the
            // delivery mark): it went through the mesh.
            assert_eq!(r.hello.local, format!("{ip}:8080"), "{what}: {r:?}");
            assert!(r.hello.via_node_proxy(), "{what} not via the mesh: {r:?}");
            assert_eq!(
                r.hello.peer_ip(),
                Some(client_ip.into()),
                "{what}: the app did not see its caller: {r:?}"
            );
        }
    }
    let log = mesh.node_log("node-b").unwrap().join("\n");
    assert!(
        log.contains("src.identity=spiffe://cluster.local/ns/demo/sa/client"),
        "node-b did not see the client's identity:\n{log}"
    );
}

#[test]
fn wire_between_nodes_carries_only_tls() {
    let mut mesh = two_node_mesh();
    start(&mut mesh);
    let marker = "KNOWN-PAYLOAD-MARKER-4242";
    let capture = Capture::start(&mesh.tb, &mesh.dir().join("wire.pcap")).unwrap();
    let srv_b = mesh.tb.pod("srv-b").unwrap().ip;
    let r = mesh
        .send("client", SocketAddr::from((srv_b, 8080)), 200_000, marker)
        .unwrap();
    assert!(r.intact);
    let segments = capture.finish(&mesh.tb).unwrap();
    assert!(!segments.is_empty(), "nothing captured on the wire");
    assert!(
        has_tls_client_hello(&segments, mesh_common::HBONE_PORT),
        "no TLS ClientHello to :15008 on the wire"
    );
    assert!(
        !contains_plaintext(&segments, marker.as_bytes()),
        "the payload marker crossed the wire in plaintext"
    );
    // Every payload segment between the nodes is on the HBONE port.
    assert!(segments
        .iter()
        .all(|s| s.dst.port() == 15008 || s.src.port() == 15008));
    // The server's proxy took the caller's identity from its certificate.
    mesh.wait_node_log(
        "node-b",
        "src.identity=spiffe://cluster.local/ns/demo/sa/client",
        std::time::Duration::from_secs(3),
    )
    .unwrap();
}

#[test]
fn service_address_spreads_over_both_endpoints() {
    let mut mesh = two_node_mesh();
    start(&mut mesh);
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..20 {
        let r = mesh
            .send("client", SocketAddr::from((VIP, 80)), 10, "s")
            .unwrap();
        assert!(r.intact);
        assert!(
            r.hello.local.ends_with(":8080"),
            "target port not applied: {r:?}"
        );
        *seen.entry(r.hello.server).or_default() += 1;
    }
    assert_eq!(seen.len(), 2, "both endpoints should answer: {seen:?}");
    assert!(seen.values().all(|n| *n >= 3), "lopsided spread: {seen:?}");
}

#[test]
fn pod_outside_opted_in_namespaces_is_never_captured() {
    let mut mesh = two_node_mesh();
    mesh.add_pod("node-a", PodSpec::new("legacy-client", "legacy", "default"))
        .unwrap();
    let legacy_srv = mesh
        .add_pod("node-b", PodSpec::new("legacy-srv", "legacy", "default"))
        .unwrap();
    start(&mut mesh);
    mesh.serve("legacy-srv", 8080, false).unwrap();
    let me = mesh.tb.pod("legacy-client").unwrap().ip;
    let r = mesh
        .send(
            "legacy-client",
            SocketAddr::from((legacy_srv.ip, 8080)),
            1000,
            "x",
        )
        .unwrap();
    assert!(r.intact);
    // Not captured: the server sees the client's own pod address, not a proxy.
    assert_eq!(r.local.split(':').next(), Some(me.to_string().as_str()));
    assert!(r.hello.peer.starts_with(&format!("{me}:")), "{r:?}");
    assert!(!r.hello.via_node_proxy(), "{r:?}");
    // Had connect4 captured it, it would have gone to 127.0.0.1:15001 in a
    // netns with no listener and failed; mesh-node logged nothing about it.
    let log = mesh.node_log("node-a").unwrap().join("\n");
    assert!(
        !log.contains("legacy-client"),
        "legacy pod appeared in node-a's log:\n{log}"
    );
}
