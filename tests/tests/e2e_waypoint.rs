//! The waypoint end to end: namespace `bookinfo` is ambient and labelled
//! `istio.io/use-waypoint: waypoint`; the client's node proxy tunnels the
//! call to the `reviews` service to the waypoint over HBONE; the waypoint
//! (its own binary, in its own pod) terminates the tunnel, routes the HTTP
//! request by the VirtualService (`end-user: jason` → v2, else v1) and
//! reaches the chosen pod over HBONE through that pod's node proxy.
//!
//! The waypoint pod is labelled `istio.io/dataplane-mode: none`: its node
//! proxy does not enrol it (no capture of its sockets, no 15008 listener
//! of mesh-node in its netns), and the waypoint speaks HBONE itself, in
//! and out, as Istio's waypoints do. Its upstream sockets carry SO_MARK
//! anyway, so they would not be captured even if the pod were enrolled.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use mesh_tests::curl::Curl;
use mesh_tests::http_app::Answer;
use mesh_tests::mesh::{binary, LocalMesh, Service};
use mesh_tests::testbed::PodSpec;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 30);
const HOST: &str = "reviews.bookinfo.svc.cluster.local";

const L7: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews.bookinfo.svc.cluster.local]
  http:
  - match:
    - headers:
        end-user: {exact: jason}
    route:
    - destination: {host: reviews.bookinfo.svc.cluster.local, subset: v2}
  - route:
    - destination: {host: reviews.bookinfo.svc.cluster.local, subset: v1}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec:
  host: reviews.bookinfo.svc.cluster.local
  trafficPolicy:
    connectionPool:
      http: {maxRequestsPerConnection: 1}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"#;

fn curl(mesh: &LocalMesh, headers: &[&str], url: &str) -> Answer {
    let r = Curl::new(url)
        .headers(headers)
        .in_pod(&mesh.tb, "client")
        .unwrap_or_else(|e| panic!("curl {headers:?} {url}: {e:#}"));
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{url}: {e}: {r:?}"))
}

#[test]
fn header_routing_through_the_waypoint_over_hbone() {
    let mut mesh = LocalMesh::new(&["node-a", "node-b"]).expect("testbed (needs root)");
    mesh.namespace("bookinfo", true).namespace_label(
        "bookinfo",
        "istio.io/use-waypoint",
        "waypoint",
    );
    mesh.add_pod("node-a", PodSpec::new("client", "bookinfo", "client"))
        .unwrap();
    mesh.add_pod(
        "node-b",
        PodSpec::new("waypoint", "bookinfo", "waypoint")
            .label("istio.io/dataplane-mode", "none")
            .label("gateway.istio.io/managed", "istio.io-mesh-controller"),
    )
    .unwrap();
    mesh.add_pod(
        "node-a",
        PodSpec::new("reviews-v1", "bookinfo", "reviews")
            .label("app", "reviews")
            .label("version", "v1"),
    )
    .unwrap();
    mesh.add_pod(
        "node-b",
        PodSpec::new("reviews-v2", "bookinfo", "reviews")
            .label("app", "reviews")
            .label("version", "v2"),
    )
    .unwrap();
    mesh.add_service(Service {
        name: "reviews".into(),
        namespace: "bookinfo".into(),
        vip: VIP,
        port: 9080,
        target_port: 9080,
        selector: BTreeMap::from([("app".into(), "reviews".into())]),
        labels: BTreeMap::new(),
    });
    mesh.start_node("node-a", &[]).unwrap();
    mesh.start_node("node-b", &[]).unwrap();

    for pod in ["reviews-v1", "reviews-v2"] {
        let mut cmd = Command::new(binary("ambit-probe").unwrap());
        cmd.args(["http", "--name", pod, "--port", "9080"]);
        let idx = mesh
            .tb
            .spawn_in_pod(pod, &format!("{pod}:http"), cmd)
            .unwrap();
        mesh.tb
            .with_proc(idx, |p| {
                p.wait_for_line("listening", Duration::from_secs(10))
            })
            .unwrap()
            .unwrap();
    }

    // The waypoint's config: the mesh as the nodes see it, plus the L7 resources.
    let wp_config = mesh.dir().join("waypoint.yaml");
    let local = serde_yaml::to_string(&mesh.config_value()).unwrap();
    std::fs::write(&wp_config, format!("{local}---\n{L7}")).unwrap();
    let mut cmd = Command::new(binary("waypoint").unwrap());
    cmd.arg("--config")
        .arg(&wp_config)
        .args(["--name", "waypoint"])
        .env(
            "RUST_LOG",
            std::env::var("AMBIT_LOG").unwrap_or_else(|_| "info".into()),
        );
    let wp = mesh.tb.spawn_in_pod("waypoint", "waypoint", cmd).unwrap();
    mesh.tb
        .with_proc(wp, |p| {
            p.wait_for_line("waypoint ready", Duration::from_secs(10))
        })
        .unwrap()
        .unwrap();

    let url = format!("http://{VIP}:9080/reviews");
    for _ in 0..3 {
        let jason = curl(&mesh, &["end-user: jason"], &url);
        assert_eq!(jason.served_by, "reviews-v2", "jason got {jason:?}");
        assert_eq!(
            jason.headers.get("end-user").map(String::as_str),
            Some("jason")
        );
        let anon = curl(&mesh, &[], &url);
        assert_eq!(anon.served_by, "reviews-v1", "anonymous got {anon:?}");
    }
    // With the service's host name too.
    let named = curl(
        &mesh,
        &[&format!("Host: {HOST}:9080"), "end-user: jason"],
        &url,
    );
    assert_eq!(named.served_by, "reviews-v2", "{named:?}");

    // The waypoint knows who called: the client's SPIFFE identity.
    let line = mesh
        .tb
        .with_proc(wp, |p| {
            p.wait_for_line(
                "caller.identity=spiffe://cluster.local/ns/bookinfo/sa/client",
                Duration::from_secs(5),
            )
        })
        .unwrap()
        .unwrap();
    assert!(line.contains("HBONE tunnel accepted"), "{line}");
    // The client's node proxy sent it to the waypoint, not to a pod.
    mesh.wait_node_log("node-a", "via waypoint", Duration::from_secs(5))
        .unwrap();
    // The pods were reached over HBONE from the waypoint's identity (one
    // request per upstream connection, so the node proxies log each tunnel
    // as it ends).
    let line = mesh
        .wait_node_log(
            "node-b",
            "src.identity=spiffe://cluster.local/ns/bookinfo/sa/waypoint",
            Duration::from_secs(5),
        )
        .unwrap();
    assert!(line.contains("inbound connection complete"), "{line}");
    mesh.wait_node_log(
        "node-a",
        "src.identity=spiffe://cluster.local/ns/bookinfo/sa/waypoint",
        Duration::from_secs(5),
    )
    .unwrap();

    // SIGTERM: the waypoint drains and exits.
    let status = mesh
        .tb
        .with_proc(wp, |p| {
            p.signal(libc::SIGTERM);
            p.wait_timeout(Duration::from_secs(10))
        })
        .unwrap();
    assert!(status.is_some(), "the waypoint did not exit on SIGTERM");
}
