//! The client against a scripted ADS server on loopback (the end-to-end
//! tests with the real controller live in mesh-controller/tests/xds.rs).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use mesh_proto::ambit::v1 as pb;
use mesh_proto::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use mesh_proto::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};
use mesh_proto::type_urls;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::*;

/// (type_url, nonce, NACK message) of every ACK/NACK seen.
type Replies = Arc<Mutex<Vec<(String, String, Option<String>)>>>;

/// Answers each subscription with an empty response, except workloads:
/// first a valid one, then (after its ACK) one with a bad IP.
#[derive(Default, Clone)]
struct Scripted {
    replies: Replies,
}

fn workload(ip: &str) -> Resource {
    let w = pb::Workload {
        name: "p".into(),
        namespace: "demo".into(),
        service_account: "sa".into(),
        node: "node-a".into(),
        ip: ip.into(),
        ..Default::default()
    };
    Resource {
        name: "demo/p".into(),
        version: ip.into(),
        resource: Some(mesh_proto::to_any(type_urls::WORKLOAD, &w)),
        aliases: vec![],
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Scripted {
    type DeltaAggregatedResourcesStream =
        Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        if request.metadata().get("authorization").is_none() {
            return Err(Status::unauthenticated("no token"));
        }
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let replies = self.replies.clone();
        tokio::spawn(async move {
            let mut n = 0;
            while let Ok(Some(req)) = inbound.message().await {
                n += 1;
                let nonce = format!("n{n}");
                if !req.response_nonce.is_empty() {
                    replies.lock().unwrap().push((
                        req.type_url.clone(),
                        req.response_nonce.clone(),
                        req.error_detail.as_ref().map(|e| e.message.clone()),
                    ));
                    // After the first workload ACK, send a bad one.
                    if req.type_url == type_urls::WORKLOAD && req.error_detail.is_none() {
                        let _ = tx
                            .send(Ok(DeltaDiscoveryResponse {
                                type_url: req.type_url.clone(),
                                resources: vec![workload("not-an-ip")],
                                nonce,
                                ..Default::default()
                            }))
                            .await;
                    }
                    continue;
                }
                let resources = if req.type_url == type_urls::WORKLOAD {
                    vec![workload("10.0.0.1")]
                } else if req.type_url == type_urls::NAMESPACE {
                    let ns = pb::Namespace {
                        name: "demo".into(),
                        labels: [("istio.io/dataplane-mode".to_string(), "ambient".to_string())]
                            .into(),
                    };
                    vec![Resource {
                        name: "demo".into(),
                        version: "1".into(),
                        resource: Some(mesh_proto::to_any(type_urls::NAMESPACE, &ns)),
                        aliases: vec![],
                    }]
                } else {
                    vec![]
                };
                let _ = tx
                    .send(Ok(DeltaDiscoveryResponse {
                        type_url: req.type_url.clone(),
                        resources,
                        nonce,
                        ..Default::default()
                    }))
                    .await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xds_client_acks_good_nacks_bad_and_keeps_the_last_good_state() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Scripted::default();
    let replies = server.replies.clone();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AggregatedDiscoveryServiceServer::new(server))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let mut opts = XdsOptions::new(format!("http://{addr}"), "node-a");
    opts.token = Some("t".into());
    let client = XdsClient::start(opts);
    let mut state = client.state.clone();
    tokio::time::timeout(Duration::from_secs(5), async {
        while state.borrow_and_update().workloads().is_empty() {
            state.changed().await.unwrap();
        }
    })
    .await
    .expect("synced");
    // The NACK of the bad workload arrives with the validator's message.
    let nack = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let found = replies
                .lock()
                .unwrap()
                .iter()
                .find_map(|(_, _, e)| e.clone());
            if let Some(m) = found {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a NACK");
    assert!(nack.contains("demo/p"), "{nack}");
    assert!(nack.contains("ip"), "{nack}");
    // Every type was ACKed once.
    let acks = replies
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, _, e)| e.is_none())
        .count();
    assert_eq!(acks, type_urls::ALL.len());
    // The good state stays; the error is reported.
    let s = client.state.borrow().clone();
    assert_eq!(s.workloads()[0].ip.to_string(), "10.0.0.1");
    assert!(client
        .errors
        .borrow()
        .as_deref()
        .unwrap_or("")
        .contains("ip"));
    assert_eq!(client.status.borrow().nacks, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xds_client_retries_with_backoff_while_the_controller_is_away() {
    // Nothing listens on this port.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let mut opts = XdsOptions::new(format!("http://{addr}"), "node-a");
    opts.initial_backoff = Duration::from_millis(20);
    opts.max_backoff = Duration::from_millis(80);
    let client = XdsClient::start(opts);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let attempts = client.status.borrow().connections;
    // Backoff 20, 40, 80, 80... (+ jitter): several tries, but not a busy loop.
    assert!((3..=20).contains(&attempts), "{attempts}");
    assert!(client.errors.borrow().is_some());
    assert!(client.state.borrow().workloads().is_empty());
}

/// Answers every subscription with an empty response, except the L7 type:
/// first `good`, then (after its ACK) `bad`.
#[derive(Default, Clone)]
struct ScriptedExtra {
    replies: Replies,
}

fn l7(name: &str) -> Resource {
    Resource {
        name: name.into(),
        version: name.into(),
        resource: Some(prost_types::Any {
            type_url: type_urls::L7_RESOURCE.into(),
            value: name.as_bytes().to_vec(),
        }),
        aliases: vec![],
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for ScriptedExtra {
    type DeltaAggregatedResourcesStream =
        Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let replies = self.replies.clone();
        tokio::spawn(async move {
            let mut n = 0;
            let mut sent_bad = false;
            while let Ok(Some(req)) = inbound.message().await {
                n += 1;
                let nonce = format!("n{n}");
                let resources = if !req.response_nonce.is_empty() {
                    replies.lock().unwrap().push((
                        req.type_url.clone(),
                        req.response_nonce.clone(),
                        req.error_detail.as_ref().map(|e| e.message.clone()),
                    ));
                    if req.type_url != type_urls::L7_RESOURCE || sent_bad {
                        continue;
                    }
                    sent_bad = true;
                    vec![l7("bad")]
                } else if req.type_url == type_urls::L7_RESOURCE {
                    vec![l7("good")]
                } else {
                    vec![]
                };
                let _ = tx
                    .send(Ok(DeltaDiscoveryResponse {
                        type_url: req.type_url.clone(),
                        resources,
                        nonce,
                        ..Default::default()
                    }))
                    .await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_types_are_checked_nacked_and_published_with_the_state() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = ScriptedExtra::default();
    let replies = server.replies.clone();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AggregatedDiscoveryServiceServer::new(server))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let mut opts = XdsOptions::new(format!("http://{addr}"), "waypoint~demo~wp");
    opts.extra_types = vec![type_urls::L7_RESOURCE.to_string()];
    opts.extra_check = Some(ExtraCheck(Arc::new(|_, held| {
        match held.keys().find(|n| n.contains("bad")) {
            Some(n) => Err(format!("resource {n}: refused")),
            None => Ok(()),
        }
    })));
    let client = XdsClient::start(opts);
    let nack = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let found = replies
                .lock()
                .unwrap()
                .iter()
                .find_map(|(_, _, e)| e.clone());
            if let Some(m) = found {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a NACK");
    assert!(nack.contains("resource bad: refused"), "{nack}");
    // The good one was published (after the initial sync) and is kept.
    let view = client.view.borrow().clone();
    let held: Vec<&String> = view.extra[type_urls::L7_RESOURCE].keys().collect();
    assert_eq!(held, ["good"]);
    assert_eq!(client.status.borrow().nacks, 1);
}

/// A response holding one resource of type `ty`.
fn response(ty: &str, name: &str, msg: &impl prost::Message) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        type_url: ty.into(),
        nonce: "1".into(),
        resources: vec![Resource {
            name: name.into(),
            version: "1".into(),
            resource: Some(mesh_proto::to_any(ty, msg)),
            aliases: vec![],
        }],
        ..Default::default()
    }
}

/// An action value this build does not know (a newer controller) must be
/// refused, naming the policy: decoding it as ALLOW would open the workload.
#[test]
fn unknown_action_from_the_controller_is_refused() {
    let policy = pb::Authorization {
        name: "future".into(),
        namespace: "demo".into(),
        api_version: "security.istio.io/v1".into(),
        action: 42,
        ..Default::default()
    };
    let held = crate::client::Held::default()
        .apply(&response(type_urls::AUTHORIZATION, "demo/future", &policy))
        .expect("applies");
    let input = held.resources().expect("decodes");
    // The namespace the policy names is listed, without labels.
    assert_eq!(input.namespaces.len(), 1);
    let e = mesh_model::build::build(&input).expect_err("refused");
    assert_eq!(
        e.to_string(),
        "invalid config: policies[0] AuthorizationPolicy demo/future: field spec.action: 42 is not an action (ALLOW, DENY, AUDIT or CUSTOM)"
    );
}

#[test]
fn unknown_mtls_mode_from_the_controller_is_refused() {
    let policy = pb::PeerAuthentication {
        name: "future".into(),
        namespace: "demo".into(),
        api_version: "security.istio.io/v1".into(),
        mode: Some(17),
        ..Default::default()
    };
    let held = crate::client::Held::default()
        .apply(&response(
            type_urls::PEER_AUTHENTICATION,
            "demo/future",
            &policy,
        ))
        .expect("applies");
    let e = mesh_model::build::build(&held.resources().expect("decodes")).expect_err("refused");
    assert!(
        e.to_string()
            .contains("policies[0] PeerAuthentication demo/future: field spec.mtls.mode: 17 is not an mTLS mode"),
        "{e}"
    );
}
