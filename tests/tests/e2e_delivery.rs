//! Delivery inside the pod (issue 9, item 2): mesh-node hands inbound
//! traffic to the app at the pod's own address, from the caller's address,
//! as ztunnel's in-pod mode does — for HBONE and for PERMISSIVE plaintext,
//! cross-node and same-node. An app bound only to loopback stays private to
//! its pod.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use mesh_tests::mesh::LocalMesh;
use mesh_tests::testbed::PodSpec;

/// The app bound to the pod's IP.
const POD_IP_PORT: u16 = 8080;
/// The app bound to 127.0.0.1 only.
const LOOPBACK_PORT: u16 = 8081;

/// client (mesh, HBONE) and outsider (not in the mesh, plaintext) on
/// node-a; srv-a on node-a, srv-b on node-b, each serving on its pod IP and
/// on loopback. No PeerAuthentication: PERMISSIVE.
fn mesh() -> LocalMesh {
    let mut mesh = LocalMesh::new(&["node-a", "node-b"]).expect("testbed (needs root)");
    mesh.namespace("demo", true).namespace("legacy", false);
    mesh.add_pod("node-a", PodSpec::new("client", "demo", "client"))
        .unwrap();
    mesh.add_pod("node-a", PodSpec::new("outsider", "legacy", "default"))
        .unwrap();
    mesh.add_pod("node-a", PodSpec::new("srv-a", "demo", "server"))
        .unwrap();
    mesh.add_pod("node-b", PodSpec::new("srv-b", "demo", "server"))
        .unwrap();
    mesh.start_node("node-a", &[]).unwrap();
    mesh.start_node("node-b", &[]).unwrap();
    for srv in ["srv-a", "srv-b"] {
        let ip = mesh.tb.pod(srv).unwrap().ip;
        mesh.serve_at(srv, ip.into(), POD_IP_PORT, false).unwrap();
        mesh.serve_at(srv, Ipv4Addr::LOCALHOST.into(), LOOPBACK_PORT, false)
            .unwrap();
    }
    mesh
}

/// Both nodes' logs, for a failure's message.
fn node_logs(mesh: &LocalMesh) -> String {
    ["node-a", "node-b"]
        .iter()
        .map(|n| {
            format!(
                "--- {n}\n{}",
                mesh.node_log(n).unwrap_or_default().join("\n")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

const CASES: [(&str, &str, &str); 4] = [
    ("client", "srv-b", "HBONE cross-node"),
    ("client", "srv-a", "HBONE same-node"),
    ("outsider", "srv-b", "plaintext cross-node"),
    ("outsider", "srv-a", "plaintext same-node"),
];

#[test]
fn an_app_bound_to_the_pod_ip_sees_the_callers_ip() {
    let mesh = mesh();
    for (client, server, what) in CASES {
        let client_ip = IpAddr::from(mesh.tb.pod(client).unwrap().ip);
        let ip = mesh.tb.pod(server).unwrap().ip;
        let r = mesh
            .send(client, SocketAddr::from((ip, POD_IP_PORT)), 10_000, "d")
            .unwrap_or_else(|e| panic!("{what}: {e:#}\n{}", node_logs(&mesh)));
        assert!(r.intact, "{what}: {r:?}");
        assert_eq!(r.hello.server, server, "{what}");
        // Delivered by the server's node proxy (the mark its delivery socket
        // carries, inherited by the app's socket), not straight from the caller.
        assert!(
            r.hello.via_node_proxy(),
            "{what}: not via the node proxy: {r:?}"
        );
        assert_eq!(r.hello.local, format!("{ip}:{POD_IP_PORT}"), "{what}");
        assert_eq!(
            r.hello.peer_ip(),
            Some(client_ip),
            "{what}: the app did not see its caller's address: {r:?}"
        );
    }
}

#[test]
fn an_app_bound_to_loopback_is_not_reachable_through_the_mesh() {
    let mesh = mesh();
    for (client, server, what) in CASES {
        let ip = mesh.tb.pod(server).unwrap().ip;
        let started = Instant::now();
        let r = mesh.send(client, SocketAddr::from((ip, LOOPBACK_PORT)), 100, "l");
        assert!(
            !matches!(&r, Ok(r) if r.intact),
            "{what}: an app bound to 127.0.0.1 answered a caller from outside its pod: {r:?}"
        );
        // Refused at once (the pod's RST reaches mesh-node), not timed out.
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(5),
            "{what}: refusal took {took:?}"
        );
    }
    // The app is up: inside its own pod, loopback reaches it (not captured).
    for server in ["srv-a", "srv-b"] {
        let r = mesh
            .send(
                server,
                SocketAddr::from((Ipv4Addr::LOCALHOST, LOOPBACK_PORT)),
                100,
                "o",
            )
            .unwrap();
        assert!(r.intact && !r.hello.via_node_proxy(), "{server}: {r:?}");
    }
}

/// `ip rule` in a pod's netns.
fn rules_in(mesh: &LocalMesh, pod: &str, family: &str) -> String {
    let netns = mesh.tb.pod(pod).unwrap().netns.clone();
    let out = Command::new("ip")
        .args(["-n", &netns, family, "rule", "show"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_reply_routing_is_in_enrolled_pods_only() {
    let mesh = mesh();
    let table = format!("lookup {}", mesh_common::DELIVERY_TABLE);
    for family in ["-4", "-6"] {
        for pod in ["client", "srv-a", "srv-b"] {
            let rules = rules_in(&mesh, pod, family);
            assert!(rules.contains(&table), "{pod} {family}: {rules}");
        }
        let rules = rules_in(&mesh, "outsider", family);
        assert!(!rules.contains(&table), "outsider {family}: {rules}");
    }
}
