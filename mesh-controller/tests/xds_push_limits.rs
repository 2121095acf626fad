//! The xDS server's bounds on large responses in flight ([`PushLimits`]),
//! and explicit (non-wildcard) subscriptions, over real gRPC on loopback
//! with a raw delta ADS client that answers only when told to.

use std::path::Path;
use std::time::Duration;

use mesh_controller::xds::PushLimits;
use mesh_controller::Controller;
use mesh_proto::envoy::config::core::v3::Node;
use mesh_proto::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use mesh_proto::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use mesh_proto::type_urls;
use tokio::sync::mpsc;

mod support;
use mesh_tests::wait::within_async;
use support::controller_options;

/// Every node's workload response is large (`PODS` ambient pods), a change
/// of one pod is small.
const PODS: usize = 150;
const LARGE: usize = 8 * 1024;

fn folder_text(relabelled: Option<usize>) -> String {
    let mut out = String::from(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n  \
         labels: {istio.io/dataplane-mode: ambient}\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata: {name: istio-system}\n---\n",
    );
    for j in 0..PODS {
        let version = if Some(j) == relabelled { "v2" } else { "v1" };
        out.push_str(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: app-{j}\n  namespace: demo\n  \
             labels: {{app: app, version: {version}}}\n  \
             annotations: {{ambit.io/netns: /run/netns/pod-{j}}}\n\
             spec:\n  nodeName: node-{}\n  serviceAccountName: app\n  \
             containers: [{{name: app, image: app}}]\n\
             status:\n  podIP: 10.20.{}.{}\n  phase: Running\n---\n",
            j % 4,
            j / 250,
            j % 250 + 1
        ));
    }
    out
}

fn write(dir: &Path, text: &str) {
    let tmp = dir.join(".cluster.yaml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join("cluster.yaml")).unwrap();
}

async fn start(dir: &Path, limits: PushLimits) -> Controller {
    let mut o = controller_options(dir, None, None);
    o.push_limits = limits;
    Controller::start(o).await.unwrap()
}

/// A delta ADS stream that answers only when told to.
struct RawClient {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    stream: tonic::Streaming<DeltaDiscoveryResponse>,
}

impl RawClient {
    async fn connect(c: &Controller, node: &str) -> RawClient {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", c.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = AggregatedDiscoveryServiceClient::new(channel);
        let (tx, rx) = mpsc::channel(8);
        // The first request names the node (the stream opens with it).
        tx.send(DeltaDiscoveryRequest {
            node: Some(Node {
                id: node.into(),
                ..Default::default()
            }),
            type_url: type_urls::MESH_CONFIG.into(),
            ..Default::default()
        })
        .await
        .unwrap();
        let stream = client
            .delta_aggregated_resources(tonic::Request::new(
                tokio_stream::wrappers::ReceiverStream::new(rx),
            ))
            .await
            .unwrap()
            .into_inner();
        let mut c = RawClient { tx, stream };
        let mesh = c.next().await;
        c.ack(&mesh).await;
        c
    }

    async fn send(&self, req: DeltaDiscoveryRequest) {
        self.tx.send(req).await.unwrap();
    }

    async fn subscribe(&self, ty: &str, names: &[&str]) {
        self.send(DeltaDiscoveryRequest {
            type_url: ty.into(),
            resource_names_subscribe: names.iter().map(|n| n.to_string()).collect(),
            ..Default::default()
        })
        .await;
    }

    async fn unsubscribe(&self, ty: &str, names: &[&str]) {
        self.send(DeltaDiscoveryRequest {
            type_url: ty.into(),
            resource_names_unsubscribe: names.iter().map(|n| n.to_string()).collect(),
            ..Default::default()
        })
        .await;
    }

    async fn ack(&self, resp: &DeltaDiscoveryResponse) {
        self.send(DeltaDiscoveryRequest {
            type_url: resp.type_url.clone(),
            response_nonce: resp.nonce.clone(),
            ..Default::default()
        })
        .await;
    }

    async fn nack(&self, resp: &DeltaDiscoveryResponse) {
        self.send(DeltaDiscoveryRequest {
            type_url: resp.type_url.clone(),
            response_nonce: resp.nonce.clone(),
            error_detail: Some(mesh_proto::google::rpc::Status {
                code: 3,
                message: "refused by the test".into(),
                details: vec![],
            }),
            ..Default::default()
        })
        .await;
    }

    /// The next response within `within`, if any.
    async fn next_within(&mut self, within: Duration) -> Option<DeltaDiscoveryResponse> {
        match tokio::time::timeout(within, self.stream.message()).await {
            Ok(r) => Some(r.unwrap().expect("stream ended")),
            Err(_) => None,
        }
    }

    async fn next(&mut self) -> DeltaDiscoveryResponse {
        self.next_within(Duration::from_secs(10))
            .await
            .expect("no response within 10 s")
    }
}

fn size(resp: &DeltaDiscoveryResponse) -> usize {
    prost::Message::encoded_len(resp)
}

async fn wait_available(c: &Controller, want: usize, within: Duration) {
    let freed = within_async(within, || c.large_permits.available() == want).await;
    assert!(
        freed.is_some(),
        "{} large-response permits free, not {want}, after {within:?}",
        c.large_permits.available()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_responses_wait_for_a_permit_and_small_pushes_never_do() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &folder_text(None));
    let c = start(
        dir.path(),
        PushLimits {
            large_response_bytes: LARGE,
            large_in_flight: 1,
            answer_timeout: Duration::from_secs(30),
        },
    )
    .await;
    assert_eq!(c.large_permits.available(), 1);

    // A takes the only permit with its first (large) workload response and
    // does not answer yet.
    let mut a = RawClient::connect(&c, "node-0").await;
    a.subscribe(type_urls::WORKLOAD, &["*"]).await;
    let a_first = a.next().await;
    assert_eq!(a_first.resources.len(), PODS);
    assert!(size(&a_first) >= LARGE, "{} bytes", size(&a_first));
    wait_available(&c, 0, Duration::from_secs(1)).await;

    // B's first workload response waits for the permit...
    let mut b = RawClient::connect(&c, "node-1").await;
    b.subscribe(type_urls::WORKLOAD, &["*"]).await;
    assert!(b.next_within(Duration::from_millis(500)).await.is_none());

    // ...while small responses go out at once: C's namespaces, and the
    // change of one pod to A (which still holds the permit unanswered).
    let mut cc = RawClient::connect(&c, "node-2").await;
    cc.subscribe(type_urls::NAMESPACE, &["*"]).await;
    let ns = cc
        .next_within(Duration::from_secs(2))
        .await
        .expect("a small response was held back by the permit");
    assert!(size(&ns) < LARGE);
    write(dir.path(), &folder_text(Some(7)));
    let change = a
        .next_within(Duration::from_secs(5))
        .await
        .expect("a small change was held back by the permit");
    assert_eq!(change.resources.len(), 1);
    assert_eq!(change.resources[0].name, "demo/app-7");
    assert!(b.next_within(Duration::from_millis(300)).await.is_none());

    // A's ACK of its large response hands the permit to B, whose first
    // response is of the snapshot current when it got the permit.
    a.ack(&a_first).await;
    let b_first = b.next().await;
    assert_eq!(b_first.resources.len(), PODS);
    assert!(b_first
        .resources
        .iter()
        .any(|r| r.name == "demo/app-7" && r.version == change.resources[0].version));
    assert!(b.next_within(Duration::from_millis(300)).await.is_none());
    a.ack(&change).await;
    wait_available(&c, 0, Duration::from_secs(1)).await;

    // A NACK answers as well as an ACK.
    b.nack(&b_first).await;
    wait_available(&c, 1, Duration::from_secs(2)).await;

    // A stream that ends gives its permit back.
    let mut d = RawClient::connect(&c, "node-3").await;
    d.subscribe(type_urls::WORKLOAD, &["*"]).await;
    let d_first = d.next().await;
    assert_eq!(d_first.resources.len(), PODS);
    wait_available(&c, 0, Duration::from_secs(1)).await;
    drop(d);
    wait_available(&c, 1, Duration::from_secs(5)).await;
    drop((a, b, cc));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_large_response_gives_its_permit_back_in_time() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &folder_text(None));
    let c = start(
        dir.path(),
        PushLimits {
            large_response_bytes: LARGE,
            large_in_flight: 1,
            answer_timeout: Duration::from_millis(500),
        },
    )
    .await;
    let mut a = RawClient::connect(&c, "node-0").await;
    a.subscribe(type_urls::WORKLOAD, &["*"]).await;
    let _never_answered = a.next().await;
    let mut b = RawClient::connect(&c, "node-1").await;
    b.subscribe(type_urls::WORKLOAD, &["*"]).await;
    let b_first = b
        .next_within(Duration::from_secs(5))
        .await
        .expect("the permit was not given back after the answer timeout");
    assert_eq!(b_first.resources.len(), PODS);
    b.ack(&b_first).await;
    wait_available(&c, 1, Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_names_are_sent_once_each_and_unsubscribed_ones_no_more() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &folder_text(None));
    let c = start(dir.path(), PushLimits::default()).await;
    let mut a = RawClient::connect(&c, "node-0").await;

    a.subscribe(type_urls::WORKLOAD, &["demo/app-1"]).await;
    let r = a.next().await;
    let names: Vec<&str> = r.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["demo/app-1"]);
    a.ack(&r).await;

    a.subscribe(type_urls::WORKLOAD, &["demo/app-2"]).await;
    let r = a.next().await;
    let names: Vec<&str> = r.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["demo/app-2"], "only the newly subscribed name");
    a.ack(&r).await;

    // Asked for again: sent again, though held.
    a.subscribe(type_urls::WORKLOAD, &["demo/app-1"]).await;
    let r = a.next().await;
    let names: Vec<&str> = r.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["demo/app-1"]);
    a.ack(&r).await;

    // Unsubscribed: nothing to send (the client dropped it itself), and
    // its changes are not sent any more.
    a.unsubscribe(type_urls::WORKLOAD, &["demo/app-1"]).await;
    assert!(a.next_within(Duration::from_millis(300)).await.is_none());
    write(dir.path(), &folder_text(Some(1)));
    assert!(a.next_within(Duration::from_millis(800)).await.is_none());
    write(dir.path(), &folder_text(Some(2)));
    let r = a.next().await;
    let names: Vec<&str> = r.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["demo/app-2"]);
    assert!(r.removed_resources.is_empty());
}
