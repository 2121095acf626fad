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

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use mesh_proto::encoded::aggregated_discovery_service_server::AggregatedDiscoveryService;
use mesh_proto::encoded::EncodedDeltaResponse;
use mesh_proto::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use mesh_proto::type_urls;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::bootstrap::Tokens;
use crate::source::Snapshot;
use crate::status::{Nack, StatusRegistry};
use crate::translate::{Entry, EntryList, MeshSettings, TranslateCache, Translated};

/// How many large responses may be on their way at once.
///
/// An encoded response stays in memory (tonic's encoder, h2's send buffer)
/// until the client has read it; when every node connects at once (a
/// controller restart), every node's full first response would be buffered
/// together. A connection therefore holds a permit from sending a response
/// of at least `large_response_bytes` until the client has answered (ACK or
/// NACK) every such response, for at most `answer_timeout`, or until the
/// stream ends. Smaller responses (every incremental change of one
/// resource) never wait for a permit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushLimits {
    /// Responses this large (encoded bytes) need a permit.
    pub large_response_bytes: usize,
    /// Connections that may have unanswered large responses at once.
    pub large_in_flight: usize,
    /// A permit whose responses have not been answered within this long is
    /// given back (a client that stopped reading must not stall the others).
    pub answer_timeout: Duration,
}

impl Default for PushLimits {
    fn default() -> Self {
        PushLimits {
            large_response_bytes: 64 * 1024,
            large_in_flight: 8,
            answer_timeout: Duration::from_secs(10),
        }
    }
}

pub struct XdsServer {
    snapshots: watch::Receiver<Arc<Snapshot>>,
    tokens: Arc<Tokens>,
    status: Arc<StatusRegistry>,
    cache: Arc<TranslateCache>,
    connections: AtomicU64,
    limits: PushLimits,
    large_permits: Arc<Semaphore>,
}

impl XdsServer {
    pub fn new(
        snapshots: watch::Receiver<Arc<Snapshot>>,
        tokens: Arc<Tokens>,
        status: Arc<StatusRegistry>,
        mesh: MeshSettings,
        limits: PushLimits,
    ) -> Self {
        XdsServer {
            snapshots,
            tokens,
            status,
            cache: Arc::new(TranslateCache::new(mesh)),
            connections: AtomicU64::new(0),
            // At least one, or no large response could ever be sent.
            large_permits: Arc::new(Semaphore::new(limits.large_in_flight.max(1))),
            limits,
        }
    }

    /// A handle on the permits that outlives the server (which the gRPC
    /// server owns once it serves).
    pub fn large_permits(&self) -> LargePermits {
        LargePermits(self.large_permits.clone())
    }
}

/// Observes the large-response permits of an [`XdsServer`].
#[derive(Clone, Debug)]
pub struct LargePermits(Arc<Semaphore>);

impl LargePermits {
    /// Permits not held by any connection now.
    pub fn available(&self) -> usize {
        self.0.available_permits()
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<EncodedDeltaResponse, Status>> + Send>>;

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
            limits: self.limits.clone(),
            large_permits: self.large_permits.clone(),
            large: None,
            tx,
        };
        tokio::spawn(conn.run(inbound));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// What a client holds of one type, as far as the server knows. After a
/// push this refers to the shared translation instead of listing every
/// name and version for every connection.
enum Held {
    /// What it said it holds when it subscribed
    /// (`initial_resource_versions`): name -> version.
    Reported(BTreeMap<String, String>),
    /// What the last push left it with: `translation`'s entries for this
    /// node and type, less the names outside `filter` (`None`: no filter,
    /// a wildcard subscription) and those in `dropped` (asked for again or
    /// unsubscribed from since, so no longer counted as held).
    Pushed {
        translation: Arc<Translated>,
        filter: Option<BTreeSet<String>>,
        dropped: BTreeSet<String>,
    },
}

impl Held {
    /// The client no longer counts as holding `name`.
    fn drop_name(&mut self, name: &str) {
        match self {
            Held::Reported(versions) => {
                versions.remove(name);
            }
            Held::Pushed { dropped, .. } => {
                dropped.insert(name.to_string());
            }
        }
    }

    /// What is held, sorted by name.
    fn list<'a>(&'a self, node: &str, ty: &str) -> Vec<(&'a str, HeldVersion<'a>)> {
        match self {
            Held::Reported(versions) => versions
                .iter()
                .map(|(n, v)| (n.as_str(), HeldVersion::Reported(v.as_str())))
                .collect(),
            Held::Pushed {
                translation,
                filter,
                dropped,
            } => translation
                .entries(node, ty)
                .into_iter()
                .filter(|(n, _)| filter.as_ref().is_none_or(|f| f.contains(&***n)))
                .filter(|(n, _)| !dropped.contains(&***n))
                .map(|(n, e)| (&**n, HeldVersion::Entry(e)))
                .collect(),
        }
    }
}

/// The version of one held resource.
enum HeldVersion<'a> {
    Entry(&'a Arc<Entry>),
    Reported(&'a str),
}

impl HeldVersion<'_> {
    fn is(&self, e: &Arc<Entry>) -> bool {
        match self {
            HeldVersion::Entry(h) => Arc::ptr_eq(h, e) || h.version == e.version,
            HeldVersion::Reported(v) => *v == &*e.version,
        }
    }
}

struct Subscription {
    wildcard: bool,
    names: BTreeSet<String>,
    held: Held,
    /// nonce -> snapshot version, responses not yet (N)ACKed.
    pending: BTreeMap<String, String>,
}

impl Subscription {
    /// Of `res`, what the client should hold.
    fn wanted<'a>(&self, res: &'a Translated, node: &str, ty: &str) -> EntryList<'a> {
        let mut wanted = res.entries(node, ty);
        if !self.wildcard {
            wanted.retain(|(name, _)| self.names.contains(&***name));
        }
        wanted
    }

    /// Whether the client holds exactly `res`'s entries for it already.
    fn holds_all_of(&self, res: &Arc<Translated>) -> bool {
        match &self.held {
            Held::Pushed {
                translation,
                filter,
                dropped,
            } => {
                Arc::ptr_eq(translation, res)
                    && dropped.is_empty()
                    && match filter {
                        None => self.wildcard,
                        Some(f) => !self.wildcard && *f == self.names,
                    }
            }
            Held::Reported(_) => false,
        }
    }
}

/// The large responses of a connection that its client has not answered,
/// and the permit they hold.
struct LargeInFlight {
    _permit: OwnedSemaphorePermit,
    /// (type URL, nonce sequence number) of each.
    unanswered: Vec<(String, u64)>,
    /// When the permit is given back if they are still unanswered.
    deadline: Instant,
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
    limits: PushLimits,
    large_permits: Arc<Semaphore>,
    large: Option<LargeInFlight>,
    tx: mpsc::Sender<Result<EncodedDeltaResponse, Status>>,
}

enum Flow {
    Continue,
    Stop,
}

impl Connection {
    async fn run(mut self, mut inbound: Streaming<DeltaDiscoveryRequest>) {
        let mut snapshots = self.snapshots.clone();
        loop {
            let large_deadline = self.large.as_ref().map(|l| l.deadline);
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
                _ = tokio::time::sleep_until(large_deadline.unwrap_or_else(Instant::now)),
                    if large_deadline.is_some() => {
                    tracing::warn!(
                        node = ?self.node,
                        timeout = ?self.limits.answer_timeout,
                        "large xDS response not answered in time: its permit is given back"
                    );
                    self.large = None;
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

    /// The client answered (ACK or NACK) `nonce` of type `ty`: that
    /// response and the earlier ones of that type (the stream is ordered,
    /// so the client has read them) are no longer on their way.
    fn answered(&mut self, ty: &str, nonce: &str) {
        let Some(large) = self.large.as_mut() else {
            return;
        };
        let id = self.id.to_string();
        let Some(seq) = nonce
            .rsplit_once('-')
            .filter(|(conn, _)| *conn == id)
            .and_then(|(_, seq)| seq.parse::<u64>().ok())
        else {
            return;
        };
        large.unanswered.retain(|(t, n)| !(t == ty && *n <= seq));
        if large.unanswered.is_empty() {
            self.large = None;
        }
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
            self.answered(&ty, &req.response_nonce);
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
        let sub = self.subs.entry(ty.clone()).or_insert_with(|| Subscription {
            wildcard: req.resource_names_subscribe.is_empty(),
            names: BTreeSet::new(),
            held: Held::Reported(req.initial_resource_versions.clone()),
            pending: BTreeMap::new(),
        });
        let mut changed = first;
        for name in &req.resource_names_subscribe {
            changed = true;
            if name == "*" {
                sub.wildcard = true;
            } else {
                sub.names.insert(name.clone());
                // The client asked: it gets the resource even if it had it.
                sub.held.drop_name(name);
            }
        }
        for name in &req.resource_names_unsubscribe {
            changed = true;
            if name == "*" {
                sub.wildcard = false;
            } else {
                sub.names.remove(name);
                sub.held.drop_name(name);
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
    async fn push(&mut self, ty: &str, res: &Arc<Translated>, version: u64, always: bool) -> Flow {
        let Some(node) = self.node.clone() else {
            return Flow::Stop;
        };
        let (mut res, mut version) = (res.clone(), version);
        let (resources, removed, held_count) = loop {
            let Some(sub) = self.subs.get_mut(ty) else {
                return Flow::Continue;
            };
            if sub.holds_all_of(&res) && !always {
                return Flow::Continue;
            }
            let wanted = sub.wanted(&res, &node, ty);
            let held_count = wanted.len();
            let (resources, removed) = diff(&wanted, &sub.held.list(&node, ty));
            drop(wanted);
            let size = encoded_size(&resources, &removed);
            if size >= self.limits.large_response_bytes && self.large.is_none() {
                // Nothing of this response is kept while waiting (a
                // connection waiting for a permit costs nothing); it is
                // worked out again with the permit.
                drop((resources, removed));
                self.acquire_large_permit().await;
                // The wait may have been long: send what is current now.
                let snap = self.snapshots.borrow().clone();
                res = self.cache.get(&snap);
                version = snap.version;
                continue;
            }
            // From here on the client holds (or is being sent) exactly
            // what it wants.
            sub.held = Held::Pushed {
                translation: res.clone(),
                filter: (!sub.wildcard).then(|| sub.names.clone()),
                dropped: BTreeSet::new(),
            };
            break (resources, removed, held_count);
        };
        let size = encoded_size(&resources, &removed);
        if resources.is_empty() && removed.is_empty() && !always {
            self.release_unused_permit();
            return Flow::Continue;
        }
        let changed = resources.len();
        self.nonce += 1;
        let seq = self.nonce;
        let nonce = format!("{}-{seq}", self.id);
        if let Some(sub) = self.subs.get_mut(ty) {
            sub.pending.insert(nonce.clone(), version.to_string());
            // Keep the pending map bounded if a client never answers.
            while sub.pending.len() > 64 {
                let Some(k) = sub.pending.keys().next().cloned() else {
                    break;
                };
                sub.pending.remove(&k);
            }
        }
        if size >= self.limits.large_response_bytes {
            if let Some(large) = self.large.as_mut() {
                large.unanswered.push((ty.to_string(), seq));
                large.deadline = Instant::now() + self.limits.answer_timeout;
            }
        }
        self.release_unused_permit();
        tracing::debug!(%node, type_url = ty, changed, removed = removed.len(), %nonce, "push");
        self.status.update(&node, self.id, ty, |s| {
            s.sent_version = version.to_string();
            s.sent_nonce = nonce.clone();
            s.resources = held_count;
        });
        let resp = EncodedDeltaResponse {
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

    /// Waits for a large-response permit. A connection waits holding none,
    /// so the holders (whose clients answer on their own streams) always
    /// make progress.
    async fn acquire_large_permit(&mut self) {
        let Ok(permit) = self.large_permits.clone().acquire_owned().await else {
            return; // closed: never, the server owns the semaphore
        };
        self.large = Some(LargeInFlight {
            _permit: permit,
            unanswered: Vec::new(),
            // The wait does not count against the client.
            deadline: Instant::now() + self.limits.answer_timeout,
        });
    }

    /// Gives the permit back if no large response holds it (the response
    /// it was taken for turned out small or empty).
    fn release_unused_permit(&mut self) {
        if self.large.as_ref().is_some_and(|l| l.unanswered.is_empty()) {
            self.large = None;
        }
    }
}

/// The encoded size of a response with `resources` and `removed` (without
/// its few short strings).
fn encoded_size(resources: &[Bytes], removed: &[String]) -> usize {
    resources.iter().map(|r| r.len() + 4).sum::<usize>()
        + removed.iter().map(|n| n.len() + 3).sum::<usize>()
}

/// The resources of `wanted` that `held` lacks or holds at another version
/// (encoded, shared), and the names of `held` not in `wanted`; both lists
/// are sorted by name.
fn diff(wanted: &EntryList<'_>, held: &[(&str, HeldVersion<'_>)]) -> (Vec<Bytes>, Vec<String>) {
    let mut changed = Vec::new();
    let mut removed = Vec::new();
    let mut w = wanted.iter().peekable();
    let mut h = held.iter().peekable();
    loop {
        match (w.peek(), h.peek()) {
            (Some((wn, we)), Some((hn, hv))) => match (***wn).cmp(*hn) {
                std::cmp::Ordering::Less => {
                    changed.push(we.resource.clone());
                    w.next();
                }
                std::cmp::Ordering::Greater => {
                    removed.push(hn.to_string());
                    h.next();
                }
                std::cmp::Ordering::Equal => {
                    if !hv.is(we) {
                        changed.push(we.resource.clone());
                    }
                    w.next();
                    h.next();
                }
            },
            (Some((_, we)), None) => {
                changed.push(we.resource.clone());
                w.next();
            }
            (None, Some((hn, _))) => {
                removed.push(hn.to_string());
                h.next();
            }
            (None, None) => break,
        }
    }
    (changed, removed)
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
