//! The incremental aggregated discovery service
//! (`envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources`).
//!
//! Per stream: the node is named by the first request's `node.id` (and must
//! match the node of the bootstrap token when tokens are required). Each
//! type URL is a separate subscription (wildcard `*`, or explicit names);
//! the server remembers which version of each resource it sent and, on every
//! snapshot change, sends only what changed and the names that went away.
//! A reconnecting client's `initial_resource_versions` seed that memory, so
//! it gets only the difference. ACKs and NACKs (with `error_detail`) are
//! recorded in the [`StatusRegistry`].
//!
//! Waypoints connect like nodes, with a node id `waypoint~<ns>~<name>`
//! (and that id's bootstrap token), and may also subscribe to
//! [`type_urls::L7_RESOURCE`]; see [`crate::translate`] for what they get.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::Stream;
use mesh_proto::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryService;
use mesh_proto::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};
use mesh_proto::type_urls;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::bootstrap::Tokens;
use crate::source::Snapshot;
use crate::status::{Nack, StatusRegistry};
use crate::translate::{MeshSettings, TranslateCache, Translated};

pub struct XdsServer {
    snapshots: watch::Receiver<Arc<Snapshot>>,
    tokens: Arc<Tokens>,
    status: Arc<StatusRegistry>,
    cache: Arc<TranslateCache>,
    connections: AtomicU64,
}

impl XdsServer {
    pub fn new(
        snapshots: watch::Receiver<Arc<Snapshot>>,
        tokens: Arc<Tokens>,
        status: Arc<StatusRegistry>,
        mesh: MeshSettings,
    ) -> Self {
        XdsServer {
            snapshots,
            tokens,
            status,
            cache: Arc::new(TranslateCache::new(mesh)),
            connections: AtomicU64::new(0),
        }
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for XdsServer {
    type DeltaAggregatedResourcesStream = ResponseStream;

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let token_node = self.tokens.authenticate(request.metadata())?;
        let peer = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let conn = Connection {
            id: self.connections.fetch_add(1, Ordering::Relaxed) + 1,
            token_node,
            node: None,
            peer,
            subs: BTreeMap::new(),
            nonce: 0,
            snapshots: self.snapshots.clone(),
            status: self.status.clone(),
            cache: self.cache.clone(),
            tx,
        };
        tokio::spawn(conn.run(inbound));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[derive(Default)]
struct Subscription {
    wildcard: bool,
    names: BTreeSet<String>,
    /// name -> version the client holds (as far as we know); the `Arc`s
    /// are those of the shared translation.
    sent: HashMap<Arc<str>, Arc<str>>,
    /// nonce -> snapshot version, responses not yet (N)ACKed.
    pending: BTreeMap<String, String>,
}

struct Connection {
    id: u64,
    token_node: Option<String>,
    node: Option<String>,
    peer: String,
    subs: BTreeMap<String, Subscription>,
    nonce: u64,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    status: Arc<StatusRegistry>,
    cache: Arc<TranslateCache>,
    tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
}

enum Flow {
    Continue,
    Stop,
}

impl Connection {
    async fn run(mut self, mut inbound: Streaming<DeltaDiscoveryRequest>) {
        let mut snapshots = self.snapshots.clone();
        loop {
            tokio::select! {
                msg = inbound.message() => {
                    let req = match msg {
                        Ok(Some(r)) => r,
                        Ok(None) => break,
                        Err(e) => {
                            tracing::debug!(node = ?self.node, error = %e, "xDS stream error");
                            break;
                        }
                    };
                    if let Flow::Stop = self.on_request(req).await {
                        break;
                    }
                }
                changed = snapshots.changed(), if self.node.is_some() => {
                    if changed.is_err() {
                        break;
                    }
                    let snap = snapshots.borrow_and_update().clone();
                    if self.node.is_none() {
                        continue;
                    }
                    let res = self.cache.get(&snap);
                    let types: Vec<String> = self.subs.keys().cloned().collect();
                    for ty in order(&types) {
                        if let Flow::Stop = self.push(&ty, &res, snap.version, false).await {
                            break;
                        }
                    }
                }
            }
        }
        if let Some(node) = &self.node {
            tracing::info!(%node, peer = %self.peer, "xDS client disconnected");
            self.status.disconnected(node, self.id);
        }
    }

    async fn fail(&self, status: Status) -> Flow {
        let _ = self.tx.send(Err(status)).await;
        Flow::Stop
    }

    async fn on_request(&mut self, req: DeltaDiscoveryRequest) -> Flow {
        if self.node.is_none() {
            let id = req.node.as_ref().map(|n| n.id.clone()).unwrap_or_default();
            let id = match (&self.token_node, id.is_empty()) {
                (Some(t), true) => t.clone(),
                (Some(t), false) if *t != id => {
                    return self
                        .fail(Status::permission_denied(format!(
                            "the bootstrap token is node {t}'s, not {id}'s"
                        )))
                        .await;
                }
                (None, true) => {
                    return self
                        .fail(Status::invalid_argument(
                            "the first request must name the node",
                        ))
                        .await;
                }
                (_, false) => id,
            };
            tracing::info!(node = %id, peer = %self.peer, "xDS client connected");
            self.status.connected(&id, self.id, self.peer.clone());
            self.node = Some(id);
        }
        let Some(node) = self.node.clone() else {
            return Flow::Stop;
        };
        let ty = req.type_url.clone();
        if !type_urls::WAYPOINT.contains(&ty.as_str()) {
            tracing::warn!(%node, type_url = %ty, "subscription to an unknown type ignored");
            return Flow::Continue;
        }

        // ACK / NACK.
        if !req.response_nonce.is_empty() {
            let version = self
                .subs
                .get_mut(&ty)
                .and_then(|s| s.pending.remove(&req.response_nonce))
                .unwrap_or_default();
            let nonce = req.response_nonce.clone();
            match &req.error_detail {
                Some(err) => {
                    tracing::warn!(%node, type_url = %ty, %nonce, "NACK: {}", err.message);
                    let message = err.message.clone();
                    self.status.update(&node, self.id, &ty, |s| {
                        s.last_nack = Some(Nack {
                            nonce,
                            version,
                            message,
                            at_unix: std::time::SystemTime::now()
                                .duration_since(std::time::UNIX_EPOCH)
                                .map(|d| d.as_secs())
                                .unwrap_or(0),
                        });
                    });
                }
                None => {
                    self.status.update(&node, self.id, &ty, |s| {
                        s.acked_version = version;
                        s.acked_nonce = nonce;
                    });
                }
            }
        }

        // Subscription changes.
        let first = !self.subs.contains_key(&ty);
        let sub = self.subs.entry(ty.clone()).or_default();
        let mut changed = first;
        if first {
            sub.wildcard = req.resource_names_subscribe.is_empty();
            sub.sent = req
                .initial_resource_versions
                .iter()
                .map(|(n, v)| (Arc::from(n.as_str()), Arc::from(v.as_str())))
                .collect();
        }
        for name in &req.resource_names_subscribe {
            changed = true;
            if name == "*" {
                sub.wildcard = true;
            } else {
                sub.names.insert(name.clone());
                // The client asked: it gets the resource even if it had it.
                sub.sent.remove(name.as_str());
            }
        }
        for name in &req.resource_names_unsubscribe {
            changed = true;
            if name == "*" {
                sub.wildcard = false;
            } else {
                sub.names.remove(name);
                sub.sent.remove(name.as_str());
            }
        }
        if !changed {
            return Flow::Continue;
        }
        let snap = self.snapshots.borrow().clone();
        let res = self.cache.get(&snap);
        self.push(&ty, &res, snap.version, first).await
    }

    /// Sends what changed of `ty` (always something when `always`).
    async fn push(&mut self, ty: &str, res: &Translated, version: u64, always: bool) -> Flow {
        let Some(node) = self.node.clone() else {
            return Flow::Stop;
        };
        let Some(sub) = self.subs.get_mut(ty) else {
            return Flow::Continue;
        };
        let mut wanted = res.entries(&node, ty);
        if !sub.wildcard {
            wanted.retain(|(name, _)| sub.names.contains(&***name));
        }
        let mut changed = Vec::new();
        for (name, e) in &wanted {
            match sub.sent.get_mut(&***name) {
                Some(v) if Arc::ptr_eq(v, &e.version) => {}
                // Same version from elsewhere (the client's initial
                // versions): hold the shared string instead.
                Some(v) if **v == *e.version => *v = e.version.clone(),
                _ => changed.push((*name, *e)),
            }
        }
        let mut removed: Vec<String> = sub
            .sent
            .keys()
            .filter(|n| wanted.binary_search_by(|(w, _)| (***w).cmp(&***n)).is_err())
            .map(|n| n.to_string())
            .collect();
        removed.sort();
        if changed.is_empty() && removed.is_empty() && !always {
            return Flow::Continue;
        }
        let mut resources = Vec::with_capacity(changed.len());
        for (name, e) in changed {
            sub.sent.insert(name.clone(), e.version.clone());
            resources.push(Resource {
                name: name.to_string(),
                version: e.version.to_string(),
                resource: Some(prost_types::Any {
                    type_url: ty.to_string(),
                    value: e.bytes.clone(),
                }),
                aliases: Vec::new(),
            });
        }
        for n in &removed {
            sub.sent.remove(n.as_str());
        }
        self.nonce += 1;
        let nonce = format!("{}-{}", self.id, self.nonce);
        sub.pending.insert(nonce.clone(), version.to_string());
        // Keep the pending map bounded if a client never answers.
        while sub.pending.len() > 64 {
            let Some(k) = sub.pending.keys().next().cloned() else {
                break;
            };
            sub.pending.remove(&k);
        }
        let held = sub.sent.len();
        tracing::debug!(%node, type_url = ty, changed = resources.len(), removed = removed.len(), %nonce, "push");
        self.status.update(&node, self.id, ty, |s| {
            s.sent_version = version.to_string();
            s.sent_nonce = nonce.clone();
            s.resources = held;
        });
        let resp = DeltaDiscoveryResponse {
            system_version_info: version.to_string(),
            resources,
            type_url: ty.to_string(),
            nonce,
            removed_resources: removed,
        };
        if self.tx.send(Ok(resp)).await.is_err() {
            return Flow::Stop;
        }
        Flow::Continue
    }
}

/// Types in the order a node should apply them: settings and namespaces
/// first, then policies before the workloads they protect.
fn order(types: &[String]) -> Vec<String> {
    const ORDER: &[&str] = &[
        type_urls::MESH_CONFIG,
        type_urls::NAMESPACE,
        type_urls::PEER_AUTHENTICATION,
        type_urls::AUTHORIZATION,
        type_urls::SERVICE,
        type_urls::WORKLOAD,
    ];
    let mut out: Vec<String> = ORDER
        .iter()
        .filter(|t| types.iter().any(|x| x == *t))
        .map(|t| t.to_string())
        .collect();
    for t in types {
        if !out.contains(t) {
            out.push(t.clone());
        }
    }
    out
}
