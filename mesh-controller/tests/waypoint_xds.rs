//! Waypoints as xDS clients, end to end on loopback: folder -> translate ->
//! delta ADS server -> mesh-node's XdsClient subscribed to the L7 type as
//! node `waypoint~<ns>~<name>`, and the CA. Real gRPC, plaintext.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_controller::Controller;
use mesh_identity::Identity;
use mesh_proto::ambit::v1 as pb;
use mesh_proto::type_urls;
use mesh_xds::{CaOptions, XdsClient, XdsOptions, XdsView};

mod support;
use mesh_tests::wait::within_async;
use prost::Message;
use support::{controller_options, http_get, waypoint_client};

const WAYPOINT_ID: &str = "waypoint~demo~waypoint";

const NAMESPACES: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: demo
  labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint}
---
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels: {istio.io/dataplane-mode: ambient}
---
apiVersion: v1
kind: Namespace
metadata: {name: istio-system}
"#;

const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: waypoint, namespace: demo, labels: {app: waypoint}}
spec: {nodeName: node-a, serviceAccountName: waypoint-sa}
status: {podIP: 10.10.1.9}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-1, namespace: demo, labels: {app: reviews, version: v1}}
spec: {nodeName: node-a, serviceAccountName: reviews}
status: {podIP: 10.10.1.2}
---
apiVersion: v1
kind: Pod
metadata: {name: cart-1, namespace: shop, labels: {app: cart}}
spec: {nodeName: node-b, serviceAccountName: cart}
status: {podIP: 10.10.2.2}
"#;

const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: demo}
spec:
  clusterIP: 10.96.0.20
  selector: {app: reviews}
  ports: [{name: http, port: 9080, targetPort: 9080}]
"#;

fn reviews_vs(timeout: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: demo}}
spec:
  hosts: [reviews]
  http:
  - timeout: {timeout}
    route:
    - destination: {{host: reviews}}
"#
    )
}

const OTHER_L7: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: cart, namespace: shop}
spec:
  hosts: [cart]
  http:
  - route:
    - destination: {host: cart}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: mesh-default, namespace: istio-system}
spec:
  host: "*.local"
  trafficPolicy: {connectionPool: {tcp: {maxConnections: 100}}}
"#;

fn write_folder(dir: &Path) {
    std::fs::write(dir.join("namespaces.yaml"), NAMESPACES).expect("write");
    std::fs::write(dir.join("pods.yaml"), PODS).expect("write");
    std::fs::write(dir.join("services.yaml"), SERVICES).expect("write");
    std::fs::write(dir.join("reviews-vs.yaml"), reviews_vs("2s")).expect("write");
    std::fs::write(dir.join("other-l7.yaml"), OTHER_L7).expect("write");
}

struct Setup {
    c: Controller,
    folder: tempfile::TempDir,
    _boot: tempfile::TempDir,
    _ca: tempfile::TempDir,
}

async fn start() -> Setup {
    let folder = tempfile::tempdir().expect("tempdir");
    let boot = tempfile::tempdir().expect("tempdir");
    let ca = tempfile::tempdir().expect("tempdir");
    write_folder(folder.path());
    let o = controller_options(folder.path(), Some(boot.path()), Some(ca.path()));
    let c = Controller::start(o).await.expect("controller");
    Setup {
        c,
        folder,
        _boot: boot,
        _ca: ca,
    }
}

/// A client subscribed like a waypoint (the node's types and the L7 type).
fn l7_client(c: &Controller, node: &str) -> XdsClient {
    XdsClient::start(waypoint_client(c, node))
}

fn l7_of(view: &XdsView) -> Vec<pb::L7Resource> {
    view.extra
        .get(type_urls::L7_RESOURCE)
        .into_iter()
        .flatten()
        .map(|(_, b)| pb::L7Resource::decode(b.as_slice()).expect("decode"))
        .collect()
}

fn names(view: &XdsView) -> BTreeSet<String> {
    l7_of(view)
        .iter()
        .map(|r| format!("{}/{}/{}", r.kind, r.namespace, r.name))
        .collect()
}

async fn wait_view(
    client: &XdsClient,
    within: Duration,
    pred: impl Fn(&XdsView) -> bool,
) -> Arc<XdsView> {
    let mut rx = client.view.clone();
    support::wait_pushed(&mut rx, within, pred, |v| {
        format!("L7 held: {:?}", names(v))
    })
    .await
}

fn reviews_timeout(view: &XdsView) -> Option<String> {
    let vs = l7_of(view)
        .into_iter()
        .find(|r| r.kind == "VirtualService" && r.name == "reviews")?;
    let doc: serde_json::Value = serde_json::from_slice(&vs.json).expect("json");
    doc["spec"]["http"][0]["timeout"]
        .as_str()
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waypoint_receives_the_l7_resources_of_its_namespaces_only() {
    let s = start().await;
    // A token was issued for the waypoint's node id.
    assert!(s.c.tokens.token_of(WAYPOINT_ID).is_some());
    let wp = l7_client(&s.c, WAYPOINT_ID);
    let v = wait_view(&wp, Duration::from_secs(5), |v| !l7_of(v).is_empty()).await;
    // Its namespace's VirtualService and the root namespace's
    // DestinationRule; not shop's VirtualService.
    assert_eq!(
        names(&v),
        BTreeSet::from([
            "VirtualService/demo/reviews".to_string(),
            "DestinationRule/istio-system/mesh-default".to_string(),
        ])
    );
    let vs = l7_of(&v)
        .into_iter()
        .find(|r| r.kind == "VirtualService")
        .expect("vs");
    assert_eq!(vs.api_version, "networking.istio.io/v1");
    // The JSON is the whole object, as mesh-api reads it.
    let docs = mesh_api::parse_documents(std::str::from_utf8(&vs.json).expect("utf8"), "vs");
    assert!(docs[0].is_valid(), "{:?}", docs[0].diagnostics);
    assert_eq!(reviews_timeout(&v).as_deref(), Some("2s"));
    // And the mesh view to route with: the services and workloads, its own
    // pod with it.
    assert!(v.state.workload("demo", "waypoint").is_some());
    assert!(v.state.workload("shop", "cart-1").is_some());
    assert_eq!(v.state.services().len(), 1);

    // proxy-status: the waypoint is listed like a node, with the L7 type.
    let synced = within_async(Duration::from_secs(2), || {
        let st =
            s.c.status
                .get(WAYPOINT_ID)
                .expect("waypoint in the registry");
        let l7 = st
            .types
            .get(type_urls::L7_RESOURCE)
            .cloned()
            .unwrap_or_default();
        st.connected && l7.resources == 2 && l7.acked_nonce == l7.sent_nonce
    })
    .await;
    assert!(
        synced.is_some(),
        "status: {:?}",
        s.c.status.get(WAYPOINT_ID)
    );
    let body = http_get(s.c.status_addr, "/debug/syncz").await;
    assert!(body.contains(WAYPOINT_ID), "{body}");
    assert!(body.contains("ambit.v1.L7Resource"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_receive_no_l7_resources() {
    let s = start().await;
    // Even a node that asks for the L7 type gets none.
    let node = l7_client(&s.c, "node-a");
    let v = wait_view(&node, Duration::from_secs(5), |v| {
        v.state.workload("demo", "reviews-1").is_some()
    })
    .await;
    assert!(l7_of(&v).is_empty(), "{:?}", names(&v));
    let st = s.c.status.get("node-a").expect("node-a");
    assert_eq!(
        st.types
            .get(type_urls::L7_RESOURCE)
            .map(|t| t.resources)
            .unwrap_or(0),
        0
    );
    // A node's own name is not a waypoint's: its token does not open a
    // waypoint's stream.
    let mut o = XdsOptions::new(format!("http://{}", s.c.addr), WAYPOINT_ID);
    o.token = s.c.tokens.token_of("node-a");
    o.extra_types = vec![type_urls::L7_RESOURCE.to_string()];
    let imposter = XdsClient::start(o);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(l7_of(&imposter.view.borrow()).is_empty());
    assert!(imposter
        .errors
        .borrow()
        .as_deref()
        .is_some_and(|e| e.contains("node-a")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_virtual_service_is_pushed_and_a_bad_one_refused() {
    let s = start().await;
    let wp = l7_client(&s.c, WAYPOINT_ID);
    wait_view(&wp, Duration::from_secs(5), |v| {
        reviews_timeout(v).as_deref() == Some("2s")
    })
    .await;

    // An edit reaches the waypoint within a second.
    std::fs::write(s.folder.path().join("reviews-vs.yaml"), reviews_vs("5s")).expect("write");
    let t0 = Instant::now();
    wait_view(&wp, Duration::from_secs(1), |v| {
        reviews_timeout(v).as_deref() == Some("5s")
    })
    .await;
    assert!(t0.elapsed() < Duration::from_secs(1));

    // A bad one is refused with its name and field; the previous one keeps
    // being served.
    std::fs::write(
        s.folder.path().join("reviews-vs.yaml"),
        reviews_vs("banana"),
    )
    .expect("write");
    let mut errs = s.c.config_errors.clone();
    let msg = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            if let Some(m) = errs.borrow_and_update().clone() {
                return m;
            }
            errs.changed().await.expect("errors");
        }
    })
    .await
    .expect("the error is reported");
    assert!(msg.contains("VirtualService demo/reviews"), "{msg}");
    assert!(msg.contains("spec.http[0].timeout"), "{msg}");
    assert!(msg.contains("reviews-vs.yaml"), "{msg}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(reviews_timeout(&wp.view.borrow()).as_deref(), Some("5s"));

    // Fixed: pushed again.
    std::fs::write(s.folder.path().join("reviews-vs.yaml"), reviews_vs("7s")).expect("write");
    wait_view(&wp, Duration::from_secs(1), |v| {
        reviews_timeout(v).as_deref() == Some("7s")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_signs_only_the_waypoints_own_identity() {
    let s = start().await;
    let mut opts = CaOptions::new(format!("http://{}", s.c.addr), WAYPOINT_ID);
    opts.token = s.c.tokens.token_of(WAYPOINT_ID);
    // Its own identity (its pod's service account): granted.
    let own = Identity::new("cluster.local", "demo", "waypoint-sa");
    let (chain, _key) = mesh_xds::request_certificate(&opts, &own)
        .await
        .expect("own identity");
    assert_eq!(chain.len(), 2);
    // Another pod's identity in its own namespace, on the same node: refused.
    let other = Identity::new("cluster.local", "demo", "reviews");
    let err = mesh_xds::request_certificate(&opts, &other)
        .await
        .expect_err("another identity");
    assert!(err.contains("PermissionDenied"), "{err}");
    let elsewhere = Identity::new("cluster.local", "shop", "cart");
    let err = mesh_xds::request_certificate(&opts, &elsewhere)
        .await
        .expect_err("another namespace");
    assert!(err.contains("PermissionDenied"), "{err}");
    // The node the waypoint pod runs on may still get it (as before).
    let mut node = CaOptions::new(format!("http://{}", s.c.addr), "node-a");
    node.token = s.c.tokens.token_of("node-a");
    mesh_xds::request_certificate(&node, &own)
        .await
        .expect("node-a runs the waypoint pod");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_sees_a_waypoint_pod_that_is_not_enrolled() {
    let s = start().await;
    // The waypoint pod opts out of the data plane (as waypoints do), and a
    // new pod marks when the change has landed.
    let pods = PODS.replace(
        "metadata: {name: waypoint, namespace: demo, labels: {app: waypoint}}",
        "metadata: {name: waypoint, namespace: demo, labels: {app: waypoint, istio.io/dataplane-mode: none}}",
    );
    assert_ne!(pods, PODS);
    let marker = "---\napiVersion: v1\nkind: Pod\nmetadata: {name: reviews-2, namespace: demo, labels: {app: reviews}}\nspec: {nodeName: node-a, serviceAccountName: reviews}\nstatus: {podIP: 10.10.1.3}\n";
    std::fs::write(s.folder.path().join("pods.yaml"), format!("{pods}{marker}")).expect("write");
    // node-b runs none of demo's pods: it knows the waypoint only from the
    // shared workloads, and must, to tunnel demo's services to it.
    let node = l7_client(&s.c, "node-b");
    let v = wait_view(&node, Duration::from_secs(5), |v| {
        v.state.workload("demo", "reviews-2").is_some()
    })
    .await;
    assert!(
        v.state.workload("demo", "waypoint").is_some(),
        "node-b does not see the waypoint"
    );
}

/// Namespace `shop` names no waypoint; its Service `cart` names `cart-wp`
/// with its own label, and `orders` none.
const SHOP_SERVICES: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: cart-wp, namespace: shop, labels: {istio.io/dataplane-mode: none}}
spec: {nodeName: node-a, serviceAccountName: cart-waypoint}
status: {podIP: 10.10.1.8}
---
apiVersion: v1
kind: Service
metadata:
  name: cart
  namespace: shop
  labels: {istio.io/use-waypoint: cart-wp, app: cart}
spec:
  clusterIP: 10.96.1.1
  selector: {app: cart}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: orders, namespace: shop}
spec:
  clusterIP: 10.96.1.2
  selector: {app: cart}
  ports: [{name: http, port: 80, targetPort: 8080}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waypoint_named_by_a_service_label_is_served_like_a_namespace_one() {
    const CART_WP: &str = "waypoint~shop~cart-wp";
    let s = start().await;
    assert!(s.c.tokens.token_of(CART_WP).is_none());
    std::fs::write(s.folder.path().join("shop.yaml"), SHOP_SERVICES).expect("write");
    // The controller issues the waypoint its token once it has read it.
    let issued = within_async(Duration::from_secs(5), || {
        s.c.tokens.token_of(CART_WP).is_some()
    })
    .await;
    assert!(issued.is_some(), "no token for {CART_WP}");
    // It receives its namespace's L7 resources (and the root's).
    let wp = l7_client(&s.c, CART_WP);
    let v = wait_view(&wp, Duration::from_secs(5), |v| !l7_of(v).is_empty()).await;
    assert_eq!(
        names(&v),
        BTreeSet::from([
            "VirtualService/shop/cart".to_string(),
            "DestinationRule/istio-system/mesh-default".to_string(),
        ])
    );
    // Its CA identity is its pod's service account.
    let mut opts = CaOptions::new(format!("http://{}", s.c.addr), CART_WP);
    opts.token = s.c.tokens.token_of(CART_WP);
    let own = Identity::new("cluster.local", "shop", "cart-waypoint");
    mesh_xds::request_certificate(&opts, &own)
        .await
        .expect("its own identity");

    // A node that runs none of it knows the waypoint and tunnels cart to
    // it; orders, unlabelled in an unlabelled namespace, goes direct.
    let node = l7_client(&s.c, "node-b");
    let v = wait_view(&node, Duration::from_secs(5), |v| {
        v.state.workload("shop", "cart-wp").is_some() && v.state.services().len() == 3
    })
    .await;
    let waypoint_of = |vip: &str| {
        let svc = v
            .state
            .service_by_vip(vip.parse().expect("addr"))
            .expect("service");
        v.state.waypoint_for(svc).map(|w| w.key())
    };
    assert_eq!(waypoint_of("10.96.1.1:80").as_deref(), Some("shop/cart-wp"));
    assert_eq!(waypoint_of("10.96.1.2:80"), None);
    // The namespace's waypoint still serves demo's service.
    assert_eq!(
        waypoint_of("10.96.0.20:9080").as_deref(),
        Some("demo/waypoint")
    );
}
