//! `meshctl proxy-status` against a real controller (folder source, delta
//! ADS, status server) with a real node xDS client and a raw client that
//! NACKs; `meshctl proxy-config` against a real mesh-node admin server.
//! The `meshctl` binary itself is run.

use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_controller::{Controller, ControllerOptions};
use mesh_identity::{CertStore, CertificateAuthority, Identity};
use mesh_node::inpod::EnrolmentStatus;
use mesh_node::proxy::Metrics;
use mesh_proto::envoy::config::core::v3::Node;
use mesh_proto::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use mesh_proto::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use mesh_proto::type_urls;
use mesh_xds::{XdsClient, XdsOptions};
use tokio::sync::watch;

const FOLDER: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: demo
  labels: {istio.io/dataplane-mode: ambient}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: demo, labels: {app: client}}
spec: {nodeName: node-a, serviceAccountName: client}
status: {podIP: 10.10.1.2}
---
apiVersion: v1
kind: Pod
metadata: {name: server-1, namespace: demo, labels: {app: server}}
spec: {nodeName: node-a, serviceAccountName: server}
status: {podIP: 10.10.1.3}
---
apiVersion: v1
kind: Pod
metadata: {name: server-2, namespace: demo, labels: {app: server}}
spec: {nodeName: node-b, serviceAccountName: server}
status: {podIP: 10.10.2.2}
---
apiVersion: v1
kind: Service
metadata: {name: server, namespace: demo}
spec:
  clusterIP: 10.96.0.10
  selector: {app: server}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-client, namespace: demo}
spec:
  selector: {matchLabels: {app: server}}
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/demo/sa/client]}}]
"#;

fn options(folder: &Path, bootstrap: &Path, ca: &Path) -> ControllerOptions {
    let mut o = ControllerOptions::new(folder);
    o.listen = "127.0.0.1:0".parse().unwrap();
    o.status_listen = "127.0.0.1:0".parse().unwrap();
    o.bootstrap_dir = Some(bootstrap.to_path_buf());
    o.ca_dir = Some(ca.to_path_buf());
    o.poll_interval = Duration::from_millis(50);
    o
}

/// Runs the real `meshctl` binary (off the runtime's worker threads).
async fn meshctl(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_meshctl"))
            .args(&args)
            .output()
            .expect("running meshctl")
    })
    .await
    .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Waits until every type the controller sent to `node` is ACKed.
async fn wait_synced(c: &Controller, node: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(st) = c.status.get(node) {
            let all = type_urls::ALL.iter().all(|t| {
                st.types
                    .get(*t)
                    .is_some_and(|s| !s.sent_nonce.is_empty() && s.acked_nonce == s.sent_nonce)
            });
            if all {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{node} never synced");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_status_shows_acks_and_nacks() {
    let folder = tempfile::tempdir().unwrap();
    let boot = tempfile::tempdir().unwrap();
    let ca = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("mesh.yaml"), FOLDER).unwrap();
    let c = Controller::start(options(folder.path(), boot.path(), ca.path()))
        .await
        .unwrap();
    let controller = format!("http://{}", c.status_addr);

    // node-a: mesh-node's own xDS client, which ACKs what it accepts.
    let mut xo = XdsOptions::new(format!("http://{}", c.addr), "node-a");
    xo.token = c.tokens.token_of("node-a");
    let a = XdsClient::start(xo);
    wait_synced(&c, "node-a").await;

    let out = meshctl(&["proxy-status", "--controller", &controller]).await;
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("NODE"), "{text}");
    for ty in [
        "MeshConfig",
        "Namespace",
        "Workload",
        "Service",
        "Authorization",
    ] {
        assert!(lines[0].contains(ty), "{ty}: {text}");
    }
    let row_a = lines
        .iter()
        .find(|l| l.starts_with("node-a"))
        .unwrap_or_else(|| panic!("no node-a row: {text}"));
    assert!(row_a.contains("yes ("), "{text}");
    assert!(row_a.contains("SYNCED"), "{text}");
    assert!(row_a.contains(" v1"), "the ACKed snapshot version: {text}");
    assert!(!row_a.contains("NACK"), "{text}");

    // node-b: a raw client that NACKs the workloads it is sent.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", c.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tx.send(DeltaDiscoveryRequest {
        node: Some(Node {
            id: "node-b".into(),
            ..Default::default()
        }),
        type_url: type_urls::WORKLOAD.into(),
        resource_names_subscribe: vec!["*".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let token = c.tokens.token_of("node-b").unwrap();
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let mut stream = client
        .delta_aggregated_resources(req)
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    assert!(!resp.resources.is_empty());
    tx.send(DeltaDiscoveryRequest {
        type_url: type_urls::WORKLOAD.into(),
        response_nonce: resp.nonce.clone(),
        error_detail: Some(mesh_proto::google::rpc::Status {
            code: 3,
            message: "workloads[0]: field ip: not today".into(),
            details: vec![],
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while c
        .status
        .get("node-b")
        .and_then(|s| s.types.get(type_urls::WORKLOAD).cloned())
        .and_then(|t| t.last_nack)
        .is_none()
    {
        assert!(Instant::now() < deadline, "the NACK was not recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let out = meshctl(&["proxy-status", "--controller", &controller]).await;
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    println!("$ meshctl proxy-status --controller {controller}\n{text}");
    let row_b = text
        .lines()
        .find(|l| l.starts_with("node-b"))
        .unwrap_or_else(|| panic!("no node-b row: {text}"));
    assert!(row_b.contains("NACK"), "{text}");
    assert!(
        row_b.contains("Workload: workloads[0]: field ip: not today"),
        "{text}"
    );
    assert!(
        text.contains(&format!("node-b Workload NACKed v1 (nonce {}", resp.nonce)),
        "{text}"
    );
    assert!(text.contains("field ip: not today"), "{text}");
    // node-a is unaffected.
    let row_a = text.lines().find(|l| l.starts_with("node-a")).unwrap();
    assert!(row_a.contains("SYNCED"), "{text}");

    // JSON: the controller's syncz.
    let out = meshctl(&["proxy-status", "--controller", &controller, "-o", "json"]).await;
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = v.as_array().unwrap();
    let a_json = list.iter().find(|n| n["node"] == "node-a").unwrap();
    assert_eq!(a_json["connected"], true);
    assert_eq!(a_json["types"][type_urls::WORKLOAD]["acked_version"], "1");
    let b_json = list.iter().find(|n| n["node"] == "node-b").unwrap();
    assert_eq!(
        b_json["types"][type_urls::WORKLOAD]["last_nack"]["message"],
        "workloads[0]: field ip: not today"
    );
    drop((tx, stream, a));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_status_fails_clearly_when_the_controller_is_unreachable() {
    // A port nothing listens on: bind, read it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = meshctl(&[
        "proxy-status",
        "--controller",
        &format!("http://127.0.0.1:{port}"),
    ])
    .await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unreachable"), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(out.stdout.is_empty());

    let out = meshctl(&["proxy-config", &format!("127.0.0.1:{port}")]).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("admin server is unreachable"), "{err}");

    let out = meshctl(&["proxy-status", "--controller", "https://127.0.0.1:1"]).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

const NODE_CONFIG: &str = r#"
namespaces:
- {name: demo, labels: {istio.io/dataplane-mode: ambient}}
- {name: legacy}
workloads:
- {name: client, namespace: demo, serviceAccount: client, node: node-a, ip: 10.10.1.2, labels: {app: client}}
- {name: server-1, namespace: demo, serviceAccount: server, node: node-a, ip: 10.10.1.3, labels: {app: server}}
- {name: server-2, namespace: demo, serviceAccount: server, node: node-b, ip: 10.10.2.2, labels: {app: server}}
- {name: outsider, namespace: legacy, node: node-a, ip: 10.10.1.9, labels: {app: outsider}}
services:
- {name: server, namespace: demo, addresses: [10.96.0.10], ports: [{name: http, port: 80, targetPort: 8080}], selector: {app: server}}
policies:
- apiVersion: security.istio.io/v1
  kind: PeerAuthentication
  metadata: {name: default, namespace: demo}
  spec: {mtls: {mode: STRICT}}
- apiVersion: security.istio.io/v1
  kind: AuthorizationPolicy
  metadata: {name: allow-client, namespace: demo}
  spec:
    selector: {matchLabels: {app: server}}
    action: ALLOW
    rules: [{from: [{source: {principals: [cluster.local/ns/demo/sa/client]}}]}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_config_lists_what_the_node_holds() {
    let state = mesh_model::config::parse_state(NODE_CONFIG).unwrap();
    let (_state_tx, state_rx) = watch::channel(Arc::new(state));
    let ca = CertificateAuthority::self_signed("cluster.local").unwrap();
    let certs = Arc::new(CertStore::with_roots_pem(ca.root_pem().as_bytes()).unwrap());
    for sa in ["client", "server"] {
        let id = Identity::new("cluster.local", "demo", sa);
        let (chain, key) = ca.issue(&id, Duration::from_secs(12 * 3600)).unwrap();
        certs.insert_pem(chain.as_bytes(), key.as_bytes()).unwrap();
    }
    let expected_not_after = mesh_node::admin::rfc3339(
        certs
            .get(&Identity::new("cluster.local", "demo", "client"))
            .unwrap()
            .not_after,
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (_ready_tx, ready_rx) = watch::channel(true);
    let (_err_tx, err_rx) = watch::channel(None::<String>);
    let (_enrolment_tx, enrolment_rx) = watch::channel(EnrolmentStatus::default());
    mesh_node::admin::spawn_on(
        listener,
        mesh_node::admin::AdminSources {
            metrics: Arc::new(Metrics::default()),
            ready: ready_rx,
            config_error: err_rx,
            node: "node-a".into(),
            state: state_rx,
            certs,
            enrolment: enrolment_rx,
        },
    );

    let out = meshctl(&["proxy-config", &addr]).await;
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    println!("$ meshctl proxy-config {addr}\n{text}");
    assert!(
        text.starts_with("Node node-a (trust domain cluster.local)"),
        "{text}"
    );
    assert!(text.contains("WORKLOADS (4, 2 enrolled here)"), "{text}");
    let row = |name: &str| -> String {
        text.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no {name} row: {text}"))
            .to_string()
    };
    let client = row("client");
    assert!(client.contains("10.10.1.2"), "{text}");
    assert!(
        client.contains("spiffe://cluster.local/ns/demo/sa/client"),
        "{text}"
    );
    assert!(client.trim_end().ends_with("yes"), "{text}");
    assert!(row("server-2").trim_end().ends_with("no"), "{text}");
    assert!(row("outsider").contains("no (not ambient)"), "{text}");
    assert!(text.contains("server.demo.svc.cluster.local"), "{text}");
    assert!(text.contains("80->8080/TCP"), "{text}");
    assert!(
        text.contains("10.10.1.3 (node-a), 10.10.2.2 (node-b)"),
        "{text}"
    );
    assert!(text.contains("PeerAuthentication"), "{text}");
    assert!(text.contains("allow-client"), "{text}");
    assert!(text.contains("CERTIFICATES (2, 1 trust root(s))"), "{text}");
    let cert = text
        .lines()
        .find(|l| l.starts_with("spiffe://cluster.local/ns/demo/sa/client"))
        .unwrap_or_else(|| panic!("no certificate row: {text}"));
    assert!(cert.contains(&expected_not_after), "{text}");
    // Issued for 12 h just now: expires in 11h59m (12h0m within the first second).
    assert!(cert.contains("11h59m") || cert.contains("12h0m"), "{cert}");

    // One section; JSON.
    let out = meshctl(&["proxy-config", &addr, "certificates"]).await;
    let text = stdout(&out);
    assert!(
        text.contains("CERTIFICATES") && !text.contains("WORKLOADS"),
        "{text}"
    );
    let out = meshctl(&[
        "proxy-config",
        &format!("http://{addr}"),
        "certificates",
        "-o",
        "json",
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let certs = v.as_array().unwrap();
    assert_eq!(certs.len(), 2);
    assert_eq!(
        certs[0]["identity"],
        "spiffe://cluster.local/ns/demo/sa/client"
    );
    assert_eq!(certs[0]["not_after"], expected_not_after.as_str());
    let left = certs[0]["seconds_remaining"].as_i64().unwrap();
    assert!((12 * 3600 - 120..=12 * 3600).contains(&left), "{left}");
    let out = meshctl(&["proxy-config", &addr, "workloads", "-o", "json"]).await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 4);
}
