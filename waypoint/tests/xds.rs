//! `waypoint::xds` against a real mesh-controller on loopback: the folder's
//! VirtualService reaches the waypoint over delta xDS, and editing it
//! re-routes a real hyper request from v1 to v2 without a restart; the
//! last good config keeps serving when the controller goes away.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use mesh_controller::{Controller, ControllerOptions};
use mesh_xds::XdsClient;
use tokio::net::{TcpListener, TcpStream};
use waypoint::hbone::MeshDiscovery;
use waypoint::xds::{client_options, XdsApplier};
use waypoint::{Config, TcpConnector, Waypoint};

/// A backend on `ip` answering every request with `name`.
async fn backend(ip: &str, name: &'static str) -> SocketAddr {
    let l = TcpListener::bind(format!("{ip}:0")).await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let svc = service_fn(move |_req: Request<Incoming>| async move {
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                        Bytes::from_static(name.as_bytes()),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

fn folder_yaml(v1: SocketAddr, v2: SocketAddr) -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: demo
  labels: {{istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint}}
---
apiVersion: v1
kind: Pod
metadata: {{name: waypoint, namespace: demo, labels: {{app: waypoint}}}}
spec: {{nodeName: node-a, serviceAccountName: waypoint}}
status: {{podIP: 127.0.0.1}}
---
apiVersion: v1
kind: Pod
metadata: {{name: reviews-v1, namespace: demo, labels: {{app: reviews-v1}}}}
spec: {{nodeName: node-a, serviceAccountName: reviews}}
status: {{podIP: {ip1}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: reviews-v2, namespace: demo, labels: {{app: reviews-v2}}}}
spec: {{nodeName: node-a, serviceAccountName: reviews}}
status: {{podIP: {ip2}}}
---
apiVersion: v1
kind: Service
metadata: {{name: reviews-v1, namespace: demo}}
spec:
  clusterIP: 10.96.0.21
  selector: {{app: reviews-v1}}
  ports: [{{port: 80, targetPort: {p1}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: reviews-v2, namespace: demo}}
spec:
  clusterIP: 10.96.0.22
  selector: {{app: reviews-v2}}
  ports: [{{port: 80, targetPort: {p2}}}]
"#,
        ip1 = v1.ip(),
        ip2 = v2.ip(),
        p1 = v1.port(),
        p2 = v2.port(),
    )
}

fn route_to(subset_host: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: demo}}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {{host: {subset_host}, port: {{number: 80}}}}
"#
    )
}

/// GET http://reviews/ through the waypoint: the body, or why not.
async fn get(waypoint: SocketAddr) -> Result<String, String> {
    let s = TcpStream::connect(waypoint)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = http1::handshake(TokioIo::new(s))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::builder()
        .uri("/")
        .header("host", "reviews")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let body = String::from_utf8_lossy(&body).into_owned();
    if status.is_success() {
        Ok(body)
    } else {
        Err(format!("{status}: {body}"))
    }
}

async fn wait_for_body(waypoint: SocketAddr, want: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let got = get(waypoint).await;
        if got.as_deref() == Ok(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "wanted {want} within {within:?}, got {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn write(dir: &Path, file: &str, text: &str) {
    std::fs::write(dir.join(file), text).expect("write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xds_updates_reroute_requests() {
    let v1 = backend("127.0.0.2", "v1").await;
    let v2 = backend("127.0.0.3", "v2").await;
    let folder = tempfile::tempdir().expect("tempdir");
    let boot = tempfile::tempdir().expect("tempdir");
    write(folder.path(), "mesh.yaml", &folder_yaml(v1, v2));
    write(folder.path(), "vs.yaml", &route_to("reviews-v1"));
    let mut o = ControllerOptions::new(folder.path());
    o.listen = "127.0.0.1:0".parse().expect("addr");
    o.status_listen = "127.0.0.1:0".parse().expect("addr");
    o.bootstrap_dir = Some(boot.path().to_path_buf());
    o.poll_interval = Duration::from_millis(50);
    let controller = Controller::start(o).await.expect("controller");

    // The waypoint, fed by xDS (with its bootstrap token, as the binary).
    let token = std::fs::read_to_string(boot.path().join("waypoint~demo~waypoint.token"))
        .expect("the waypoint's bootstrap token");
    let mut opts = client_options(&format!("http://{}", controller.addr), "demo", "waypoint");
    opts.token = Some(token.trim().to_string());
    opts.initial_backoff = Duration::from_millis(50);
    opts.max_backoff = Duration::from_millis(200);
    let client = XdsClient::start(opts);
    let discovery = Arc::new(MeshDiscovery::default());
    let wp = Waypoint::new(Config::default(), discovery.clone(), Arc::new(TcpConnector));
    let applier = XdsApplier {
        waypoint: wp.clone(),
        discovery,
    };
    tokio::spawn(applier.follow(client.view.clone()));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(wp.clone().serve(listener));

    // Before the first sync the waypoint knows no route; then v1.
    wait_for_body(addr, "v1", Duration::from_secs(5)).await;

    // The VirtualService now routes to v2: pushed and applied, no restart.
    write(folder.path(), "vs.yaml", &route_to("reviews-v2"));
    wait_for_body(addr, "v2", Duration::from_secs(2)).await;
    for _ in 0..5 {
        assert_eq!(get(addr).await.as_deref(), Ok("v2"));
    }

    // A refused VirtualService changes nothing.
    write(
        folder.path(),
        "vs.yaml",
        &route_to("reviews-v1").replace("hosts:", "hostz:"),
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(controller.config_errors.borrow().is_some());
    assert_eq!(get(addr).await.as_deref(), Ok("v2"));

    // The controller goes away: the last good config keeps serving.
    drop(controller);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(get(addr).await.as_deref(), Ok("v2"));
}

/// The binary's xDS mode (`waypoint::xds::run`): bootstrap token and roots
/// from files, first sync, its own certificate from the CA, then HBONE on
/// `listen`. A mesh client reaches it over mutual TLS, checks that it
/// proves the waypoint's identity, and gets HTTP served in the tunnel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xds_mode_gets_its_certificate_and_serves_hbone() {
    use mesh_hbone::{ConnectRequest, HboneClient};
    use mesh_identity::{CertStore, Identity};
    use mesh_xds::{request_certificate, CaOptions};
    use waypoint::hbone::MarkedSocketFactory;
    use waypoint::xds::XdsArgs;

    let v1 = backend("127.0.0.2", "v1").await;
    let v2 = backend("127.0.0.3", "v2").await;
    let folder = tempfile::tempdir().expect("tempdir");
    let boot = tempfile::tempdir().expect("tempdir");
    let ca_dir = tempfile::tempdir().expect("tempdir");
    write(folder.path(), "mesh.yaml", &folder_yaml(v1, v2));
    write(folder.path(), "vs.yaml", &route_to("reviews-v1"));
    let mut o = ControllerOptions::new(folder.path());
    o.listen = "127.0.0.1:0".parse().expect("addr");
    o.status_listen = "127.0.0.1:0".parse().expect("addr");
    o.bootstrap_dir = Some(boot.path().to_path_buf());
    o.ca_dir = Some(ca_dir.path().to_path_buf());
    o.poll_interval = Duration::from_millis(50);
    let controller = Controller::start(o).await.expect("controller");

    let listen = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let args = XdsArgs {
        xds_address: Some(format!("http://{}", controller.addr)),
        bootstrap_token: Some(boot.path().join("waypoint~demo~waypoint.token")),
        xds_roots: Some(boot.path().join("root-cert.pem")),
    };
    let waypoint = tokio::spawn(async move {
        waypoint::xds::run(&args, "waypoint", Some("demo"), listen, None, true).await
    });

    // A mesh client: demo/reviews (a pod of node-a), certified by the CA.
    let root = std::fs::read(boot.path().join("root-cert.pem")).expect("root");
    let certs = Arc::new(CertStore::with_roots_pem(&root).expect("roots"));
    let me = Identity::new("cluster.local", "demo", "reviews");
    let mut ca = CaOptions::new(format!("http://{}", controller.addr), "node-a");
    ca.token = controller.tokens.token_of("node-a");
    let (chain, key) = request_certificate(&ca, &me).await.expect("client cert");
    certs
        .insert_pem(chain[0].as_bytes(), key.as_bytes())
        .expect("insert");
    let client = HboneClient::new(certs, me, Arc::new(MarkedSocketFactory::default()));
    let request = || ConnectRequest {
        dst_identity: Identity::new("cluster.local", "demo", "waypoint"),
        hbone_addr: listen,
        target: "10.96.0.21:80".parse().expect("vip"),
        forwarded_for: "127.0.0.1:1".parse().expect("addr"),
        service_host: None,
        baggage: None,
        traceparent: None,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let stream = loop {
        match client.connect(request()).await {
            Ok(s) => break s,
            Err(e) => {
                assert!(!waypoint.is_finished(), "the waypoint stopped");
                assert!(Instant::now() < deadline, "no HBONE tunnel: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    // HTTP inside the tunnel, answered by the waypoint (the endpoint has no
    // node proxy here, so the answer is the waypoint's own 503).
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await.expect("http");
    tokio::spawn(conn);
    let resp = sender
        .send_request(
            Request::builder()
                .uri("/")
                .header("host", "reviews")
                .body(Empty::<Bytes>::new())
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(resp.status(), http::StatusCode::SERVICE_UNAVAILABLE);

    // Proving another identity than the waypoint's own fails.
    let mut wrong = request();
    wrong.dst_identity = Identity::new("cluster.local", "demo", "reviews");
    assert!(client.connect(wrong).await.is_err());
    waypoint.abort();
}
