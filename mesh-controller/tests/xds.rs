//! End to end on loopback: folder -> translate -> delta ADS server ->
//! mesh-node's XdsClient, and the CA. Real gRPC, plaintext (local mode).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_controller::Controller;
use mesh_identity::{CertStore, Identity};
use mesh_model::state::ProxyState;
use mesh_proto::envoy::config::core::v3::Node;
use mesh_proto::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use mesh_proto::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use mesh_proto::type_urls;
use mesh_xds::{CaOptions, XdsClient};

mod support;
use mesh_tests::wait::within_async;
use support::{controller_options, http_get, node_client};

const NAMESPACES: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: demo
  labels: {istio.io/dataplane-mode: ambient}
---
apiVersion: v1
kind: Namespace
metadata: {name: legacy}
---
apiVersion: v1
kind: Namespace
metadata: {name: istio-system}
"#;

fn pod(name: &str, ns: &str, node: &str, ip: &str, sa: &str, app: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {ns}
  labels: {{app: {app}}}
  annotations: {{ambit.io/netns: /run/netns/ambit-{name}}}
spec:
  nodeName: {node}
  serviceAccountName: {sa}
  containers: [{{name: app, image: probe}}]
status:
  podIP: {ip}
  phase: Running
---
"#
    )
}

fn pods() -> String {
    [
        pod("client", "demo", "node-a", "10.10.1.2", "client", "client"),
        pod(
            "server-1",
            "demo",
            "node-a",
            "10.10.1.3",
            "server",
            "server",
        ),
        pod(
            "server-2",
            "demo",
            "node-b",
            "10.10.2.2",
            "server",
            "server",
        ),
        pod(
            "outsider",
            "legacy",
            "node-b",
            "10.10.2.3",
            "default",
            "outsider",
        ),
    ]
    .concat()
}

const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: server, namespace: demo}
spec:
  clusterIP: 10.96.0.10
  selector: {app: server}
  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]
"#;

const POLICIES: &str = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: demo}
spec: {mtls: {mode: STRICT}}
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

fn write_folder(dir: &Path) {
    std::fs::write(dir.join("namespaces.yaml"), NAMESPACES).unwrap();
    std::fs::write(dir.join("pods.yaml"), pods()).unwrap();
    std::fs::write(dir.join("services.yaml"), SERVICES).unwrap();
    std::fs::write(dir.join("policies.yaml"), POLICIES).unwrap();
}

async fn wait_state(
    rx: &mut tokio::sync::watch::Receiver<Arc<ProxyState>>,
    within: Duration,
    pred: impl Fn(&ProxyState) -> bool,
) -> Arc<ProxyState> {
    support::wait_pushed(rx, within, pred, |s| {
        format!("{} workloads", s.workloads().len())
    })
    .await
}

fn has_workload(s: &ProxyState, ns: &str, name: &str) -> bool {
    s.workload(ns, name).is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_receives_its_view_and_hot_reloads() {
    let folder = tempfile::tempdir().unwrap();
    let boot = tempfile::tempdir().unwrap();
    let ca = tempfile::tempdir().unwrap();
    write_folder(folder.path());
    let c = Controller::start(controller_options(
        folder.path(),
        Some(boot.path()),
        Some(ca.path()),
    ))
    .await
    .unwrap();
    // Bootstrap tokens per node and the root are written.
    assert!(boot.path().join("node-a.token").exists());
    assert!(boot.path().join("node-b.token").exists());
    assert!(boot.path().join("root-cert.pem").exists());

    let a = XdsClient::start(node_client(&c, "node-a"));
    let mut rx = a.state.clone();
    let s = wait_state(&mut rx, Duration::from_secs(5), |s| {
        has_workload(s, "demo", "server-2")
    })
    .await;
    // Local pods carry their netns; node-b's pods do not (private data).
    let client = s.workload("demo", "client").unwrap();
    assert_eq!(
        client.netns.as_deref(),
        Some(Path::new("/run/netns/ambit-client"))
    );
    assert_eq!(s.workload("demo", "server-2").unwrap().netns, None);
    // Non-ambient pods of other nodes are not sent at all.
    assert!(!has_workload(&s, "legacy", "outsider"));
    assert_eq!(s.services().len(), 1);
    assert_eq!(s.services()[0].endpoints().len(), 2);
    assert_eq!(s.peer_authentications().len(), 1);
    assert_eq!(s.authorization_policies().len(), 1);

    // node-b: its own outsider pod (with netns), no policy selecting only node-a? both
    // policies select app=server, which node-b also runs.
    let b = XdsClient::start(node_client(&c, "node-b"));
    let mut rxb = b.state.clone();
    let sb = wait_state(&mut rxb, Duration::from_secs(5), |s| {
        has_workload(s, "legacy", "outsider")
    })
    .await;
    assert_eq!(sb.workload("demo", "client").unwrap().netns, None);
    assert!(sb.workload("legacy", "outsider").unwrap().netns.is_some());

    // A change to a file reaches the client within a second, and only the
    // changed resource is sent.
    let before = a.status.borrow().response_sizes.len();
    let changed = pods().replace("app: client}", "app: client, version: v2}");
    std::fs::write(folder.path().join("pods.yaml"), changed).unwrap();
    let t0 = Instant::now();
    wait_state(&mut rx, Duration::from_secs(1), |s| {
        s.workload("demo", "client")
            .is_some_and(|w| w.labels.get("version").map(String::as_str) == Some("v2"))
    })
    .await;
    assert!(t0.elapsed() < Duration::from_secs(1));
    let sizes = a.status.borrow().response_sizes[before..].to_vec();
    assert_eq!(
        sizes,
        vec![(type_urls::WORKLOAD.to_string(), 1, 0)],
        "only the changed workload is sent"
    );

    // Removing a pod sends only its name as removed.
    let before = a.status.borrow().response_sizes.len();
    let fewer = [
        pod("client", "demo", "node-a", "10.10.1.2", "client", "client"),
        pod(
            "server-1",
            "demo",
            "node-a",
            "10.10.1.3",
            "server",
            "server",
        ),
        pod(
            "outsider",
            "legacy",
            "node-b",
            "10.10.2.3",
            "default",
            "outsider",
        ),
    ]
    .concat()
    .replace("app: client}", "app: client, version: v2}");
    std::fs::write(folder.path().join("pods.yaml"), fewer).unwrap();
    wait_state(&mut rx, Duration::from_secs(1), |s| {
        !has_workload(s, "demo", "server-2")
    })
    .await;
    let sizes = a.status.borrow().response_sizes[before..].to_vec();
    assert_eq!(sizes, vec![(type_urls::WORKLOAD.to_string(), 0, 1)]);

    // The status endpoint knows both clients and their ACKs.
    within_async(Duration::from_secs(2), || {
        let st = c.status.get("node-a").unwrap();
        let w = &st.types[type_urls::WORKLOAD];
        w.acked_nonce == w.sent_nonce
    })
    .await;
    let st = c.status.get("node-a").unwrap();
    assert!(st.connected);
    let w = &st.types[type_urls::WORKLOAD];
    assert_eq!(w.acked_nonce, w.sent_nonce);
    assert!(w.last_nack.is_none());
    let body = http_get(c.status_addr, "/debug/syncz").await;
    assert!(body.contains("node-a") && body.contains("node-b"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_resource_is_refused_and_last_good_state_kept() {
    let folder = tempfile::tempdir().unwrap();
    let boot = tempfile::tempdir().unwrap();
    let ca = tempfile::tempdir().unwrap();
    write_folder(folder.path());
    let c = Controller::start(controller_options(
        folder.path(),
        Some(boot.path()),
        Some(ca.path()),
    ))
    .await
    .unwrap();
    let a = XdsClient::start(node_client(&c, "node-a"));
    let mut rx = a.state.clone();
    wait_state(&mut rx, Duration::from_secs(5), |s| {
        has_workload(s, "demo", "client")
    })
    .await;

    // A bad pod IP: refused with the file, the pod and the field.
    let bad = pods().replace("podIP: 10.10.1.3", "podIP: 10.10.1.300");
    std::fs::write(folder.path().join("pods.yaml"), bad).unwrap();
    let mut errs = c.config_errors.clone();
    let msg = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            if let Some(m) = errs.borrow_and_update().clone() {
                return m;
            }
            errs.changed().await.unwrap();
        }
    })
    .await
    .expect("the error is reported");
    assert!(msg.contains("Pod demo/server-1"), "{msg}");
    assert!(msg.contains("status.podIP"), "{msg}");
    assert!(msg.contains("pods.yaml"), "{msg}");

    // A bad policy field: named too.
    std::fs::write(folder.path().join("pods.yaml"), pods()).unwrap();
    let bad_policy = POLICIES.replace("action: ALLOW", "action: PERMIT");
    std::fs::write(folder.path().join("policies.yaml"), bad_policy).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let msg = c.config_errors.borrow().clone().unwrap_or_default();
    assert!(
        msg.contains("AuthorizationPolicy demo/allow-client"),
        "{msg}"
    );
    assert!(msg.contains("spec.action"), "{msg}");

    // The client still has the last good state.
    let s = a.state.borrow().clone();
    assert_eq!(
        s.workload("demo", "server-1").unwrap().ip.to_string(),
        "10.10.1.3"
    );
    assert_eq!(s.authorization_policies().len(), 1);
    let body = http_get(c.status_addr, "/debug/config_error").await;
    assert!(body.contains("spec.action"), "{body}");

    // Fixed: in force again.
    std::fs::write(folder.path().join("policies.yaml"), POLICIES).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(*c.config_errors.borrow(), None);
}

#[test]
fn controller_restart_keeps_last_good_state_and_resyncs() {
    let folder = tempfile::tempdir().unwrap();
    let boot = tempfile::tempdir().unwrap();
    let ca = tempfile::tempdir().unwrap();
    write_folder(folder.path());
    let opts = controller_options(folder.path(), Some(boot.path()), Some(ca.path()));

    // The controller in its own runtime: shutting that down kills it (and
    // every connection) like a crash.
    let ctl_rt = tokio::runtime::Runtime::new().unwrap();
    let c = ctl_rt.block_on(Controller::start(opts.clone())).unwrap();
    let addr = c.addr;
    let xopts = node_client(&c, "node-a");

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let a = XdsClient::start(xopts);
        let mut rx = a.state.clone();
        wait_state(&mut rx, Duration::from_secs(5), |s| {
            has_workload(s, "demo", "server-2")
        })
        .await;

        std::mem::forget(c); // its tasks die with the runtime
        ctl_rt.shutdown_background();
        let mut st = a.status.clone();
        tokio::time::timeout(Duration::from_secs(5), async {
            while st.borrow_and_update().connected {
                st.changed().await.unwrap();
            }
        })
        .await
        .expect("the client notices the controller is gone");
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Still serving the last good config.
        let s = a.state.borrow().clone();
        assert!(has_workload(&s, "demo", "server-2"));
        assert!(a.errors.borrow().is_some());
        let attempts = a.status.borrow().connections;
        assert!(attempts >= 2, "it keeps retrying ({attempts})");

        // While it is away, the folder changes; it comes back on the same port.
        let changed = pods().replace("podIP: 10.10.2.2", "podIP: 10.10.2.9");
        std::fs::write(folder.path().join("pods.yaml"), changed).unwrap();
        let mut o2 = opts.clone();
        o2.listen = addr;
        let c2 = Controller::start(o2).await.unwrap();
        wait_state(&mut rx, Duration::from_secs(5), |s| {
            s.workload("demo", "server-2")
                .is_some_and(|w| w.ip.to_string() == "10.10.2.9")
        })
        .await;
        // Resynchronised from its initial_resource_versions: only the changed
        // workload, not everything again.
        let sizes = a.status.borrow().response_sizes.clone();
        let workload_changes: usize = sizes
            .iter()
            .rev()
            .take(6)
            .filter(|(t, _, _)| t == type_urls::WORKLOAD)
            .map(|(_, n, _)| n)
            .sum();
        assert_eq!(workload_changes, 1, "{sizes:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(*a.errors.borrow(), None);
        drop(c2);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_is_recorded_with_its_message() {
    let folder = tempfile::tempdir().unwrap();
    let boot = tempfile::tempdir().unwrap();
    let ca = tempfile::tempdir().unwrap();
    write_folder(folder.path());
    let c = Controller::start(controller_options(
        folder.path(),
        Some(boot.path()),
        Some(ca.path()),
    ))
    .await
    .unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", c.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tx.send(DeltaDiscoveryRequest {
        node: Some(Node {
            id: "node-a".into(),
            ..Default::default()
        }),
        type_url: type_urls::WORKLOAD.into(),
        resource_names_subscribe: vec!["*".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let token = c.tokens.token_of("node-a").unwrap();
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let mut stream = client
        .delta_aggregated_resources(req)
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    // node-a: client, server-1 (local) + server-2 (ambient, remote); not outsider.
    assert_eq!(resp.resources.len(), 3);
    tx.send(DeltaDiscoveryRequest {
        type_url: type_urls::WORKLOAD.into(),
        response_nonce: resp.nonce.clone(),
        error_detail: Some(mesh_proto::google::rpc::Status {
            code: 3,
            message: "workloads[0]: field ip: nope".into(),
            details: vec![],
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let st = c.status.get("node-a").unwrap();
    let nack = st.types[type_urls::WORKLOAD].last_nack.clone().unwrap();
    assert_eq!(nack.nonce, resp.nonce);
    assert!(nack.message.contains("field ip"));

    // A token of node-b cannot speak for node-a.
    let (tx2, rx2) = tokio::sync::mpsc::channel(8);
    tx2.send(DeltaDiscoveryRequest {
        node: Some(Node {
            id: "node-a".into(),
            ..Default::default()
        }),
        type_url: type_urls::WORKLOAD.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx2));
    let token_b = c.tokens.token_of("node-b").unwrap();
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {token_b}").parse().unwrap(),
    );
    let mut s2 = client
        .delta_aggregated_resources(req)
        .await
        .unwrap()
        .into_inner();
    let err = s2.message().await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_signs_only_identities_of_the_nodes_pods() {
    let folder = tempfile::tempdir().unwrap();
    let boot = tempfile::tempdir().unwrap();
    let ca = tempfile::tempdir().unwrap();
    write_folder(folder.path());
    let c = Controller::start(controller_options(
        folder.path(),
        Some(boot.path()),
        Some(ca.path()),
    ))
    .await
    .unwrap();
    // The self-signed root was saved as plug-in files.
    for f in ["root-cert.pem", "cert-chain.pem", "key.pem"] {
        assert!(ca.path().join(f).exists(), "{f}");
    }
    let mut opts = CaOptions::new(format!("http://{}", c.addr), "node-a");
    opts.token = c.tokens.token_of("node-a");

    // node-a runs demo/client: granted; the cert verifies against the root
    // and carries the SPIFFE URI SAN.
    let client_id = Identity::new("cluster.local", "demo", "client");
    let (chain, key) = mesh_xds::request_certificate(&opts, &client_id)
        .await
        .unwrap();
    assert_eq!(chain.len(), 2, "leaf and root");
    let root = std::fs::read(boot.path().join("root-cert.pem")).unwrap();
    assert_eq!(chain[1].trim(), String::from_utf8_lossy(&root).trim());
    let store = CertStore::with_roots_pem(&root).unwrap();
    let id = store
        .insert_pem(chain[0].as_bytes(), key.as_bytes())
        .unwrap();
    assert_eq!(id, client_id);
    verify_chain(&chain[0], &root);

    // node-a has no pod of legacy/default (that is node-b's outsider): refused.
    let other = Identity::new("cluster.local", "legacy", "default");
    let err = mesh_xds::request_certificate(&opts, &other)
        .await
        .unwrap_err();
    assert!(err.contains("PermissionDenied"), "{err}");
    // Another trust domain: refused.
    let foreign = Identity::new("evil.org", "demo", "client");
    let err = mesh_xds::request_certificate(&opts, &foreign)
        .await
        .unwrap_err();
    assert!(err.contains("InvalidArgument"), "{err}");
    // No token: refused.
    let mut anon = opts.clone();
    anon.token = None;
    let err = mesh_xds::request_certificate(&anon, &client_id)
        .await
        .unwrap_err();
    assert!(err.contains("Unauthenticated"), "{err}");

    // The CA client fills a CertStore for the node's identities.
    let x = XdsClient::start(node_client(&c, "node-a"));
    let certs = Arc::new(CertStore::new());
    let mut ca_opts = opts.clone();
    ca_opts.interval = Duration::from_millis(100);
    let _errs = mesh_xds::spawn_ca(ca_opts, certs.clone(), x.state.clone());
    let filled = within_async(Duration::from_secs(5), || certs.identities().len() >= 2).await;
    assert!(filled.is_some(), "certs: {:?}", certs.identities());
    assert_eq!(
        certs.identities(),
        vec![
            client_id.clone(),
            Identity::new("cluster.local", "demo", "server")
        ]
    );
    assert_eq!(certs.root_count(), 1);
}

/// Checks the leaf's signature with the root's public key.
fn verify_chain(leaf_pem: &str, root_pem: &[u8]) {
    use x509_parser::pem::parse_x509_pem;
    let (_, leaf) = parse_x509_pem(leaf_pem.as_bytes()).unwrap();
    let (_, root) = parse_x509_pem(root_pem).unwrap();
    let leaf = leaf.parse_x509().unwrap();
    let root = root.parse_x509().unwrap();
    assert_eq!(leaf.issuer(), root.subject());
    leaf.verify_signature(Some(root.public_key())).unwrap();
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    let uris: Vec<String> = san
        .value
        .general_names
        .iter()
        .filter_map(|g| match g {
            x509_parser::extensions::GeneralName::URI(u) => Some(u.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(uris, vec!["spiffe://cluster.local/ns/demo/sa/client"]);
}
