//! The node's xDS client: one incremental ADS stream to the controller,
//! wildcard subscriptions to every Ambit type, ACK/NACK, reconnection with
//! exponential backoff, and the last good configuration kept (and served)
//! while the controller is away.
//!
//! Each response is checked on its own: the resources it carries are applied
//! to a copy of what the node holds, and the whole is checked and built into
//! a state by [`mesh_model::build::build`] (as a local config file is). A
//! response that would make the config invalid is NACKed with the
//! builder's message and the node keeps
//! what it had. Responses that arrive together are published as one new
//! state; nothing is published before every type has been received once.
//!
//! A waypoint uses the same client with [`XdsOptions::extra_types`] (the L7
//! resources): those are held as received, checked as a whole by
//! [`XdsOptions::extra_check`] (NACKed when it refuses), and published with
//! the state in an [`XdsView`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use mesh_proto::ambit::v1 as pb;
use mesh_proto::envoy::config::core::v3::Node;
use mesh_proto::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use mesh_proto::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use mesh_proto::google::rpc;
use mesh_proto::type_urls;
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use mesh_model::build::{build, PolicyMessage, Resources};
use mesh_model::state::ProxyState;

/// How to reach the controller.
#[derive(Clone, Debug)]
pub struct XdsOptions {
    /// `http://host:port` of the controller's gRPC server.
    pub address: String,
    /// This node's name (`node.id`).
    pub node: String,
    /// Bootstrap token, sent as `authorization: Bearer <token>`.
    pub token: Option<String>,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub connect_timeout: Duration,
    /// Types subscribed to beyond the node's ([`type_urls::ALL`]), held as
    /// received and published in [`XdsView::extra`].
    pub extra_types: Vec<String>,
    /// Checks the resources of an extra type after each response.
    pub extra_check: Option<ExtraCheck>,
}

/// Judges the resources of one extra type (type URL, name -> message
/// bytes) as they would be held; an error NACKs the response.
#[derive(Clone)]
pub struct ExtraCheck(pub ExtraCheckFn);

/// The function of an [`ExtraCheck`].
pub type ExtraCheckFn =
    Arc<dyn Fn(&str, &BTreeMap<String, Vec<u8>>) -> Result<(), String> + Send + Sync>;

impl std::fmt::Debug for ExtraCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExtraCheck")
    }
}

/// Extra resources: type URL -> name -> message bytes.
pub type ExtraResources = BTreeMap<String, BTreeMap<String, Vec<u8>>>;

/// One good configuration: the state and the extra types' resources,
/// published together so that a waypoint never sees one without the other.
#[derive(Debug)]
pub struct XdsView {
    pub state: Arc<ProxyState>,
    pub extra: ExtraResources,
}

impl XdsOptions {
    pub fn new(address: impl Into<String>, node: impl Into<String>) -> Self {
        XdsOptions {
            address: address.into(),
            node: node.into(),
            token: None,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            extra_types: Vec::new(),
            extra_check: None,
        }
    }
}

/// Observable client facts (tests, admin).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct XdsStatus {
    pub connected: bool,
    /// Streams opened so far (1 + reconnections).
    pub connections: u64,
    pub acks: u64,
    pub nacks: u64,
    /// Number of resources in each response received, in order (latest 64).
    pub response_sizes: Vec<(String, usize, usize)>,
}

/// What the node holds: type URL -> name -> (version, message bytes).
#[derive(Clone, Debug, Default)]
pub(crate) struct Held {
    pub(crate) types: BTreeMap<String, BTreeMap<String, (String, Vec<u8>)>>,
}

impl Held {
    /// Applies a response to a copy; the error names the bad resource.
    pub(crate) fn apply(&self, resp: &DeltaDiscoveryResponse) -> Result<Held, String> {
        let mut next = self.clone();
        let entry = next.types.entry(resp.type_url.clone()).or_default();
        for name in &resp.removed_resources {
            entry.remove(name);
        }
        for r in &resp.resources {
            let Some(any) = &r.resource else {
                return Err(format!("resource {}: no body", r.name));
            };
            if any.type_url != resp.type_url {
                return Err(format!(
                    "resource {}: type {} in a response of type {}",
                    r.name, any.type_url, resp.type_url
                ));
            }
            entry.insert(r.name.clone(), (r.version.clone(), any.value.clone()));
        }
        Ok(next)
    }

    fn decode<M: Message + Default>(&self, ty: &str) -> Result<Vec<M>, String> {
        let mut out = Vec::new();
        for (name, (_, bytes)) in self.types.get(ty).into_iter().flatten() {
            out.push(M::decode(bytes.as_slice()).map_err(|e| format!("resource {name}: {e}"))?);
        }
        Ok(out)
    }

    /// What is held, as the builder's input. Policies: every
    /// PeerAuthentication, then every Authorization (each by name).
    pub(crate) fn resources(&self) -> Result<Resources, String> {
        let mut input = Resources::default();
        if let Some(mesh) = self
            .decode::<pb::MeshConfig>(type_urls::MESH_CONFIG)?
            .into_iter()
            .next()
        {
            input.apply_mesh_config(mesh);
        }
        let namespaces: BTreeMap<String, pb::Namespace> = self
            .decode::<pb::Namespace>(type_urls::NAMESPACE)?
            .into_iter()
            .map(|n| (n.name.clone(), n))
            .collect();
        input.workloads = self.decode(type_urls::WORKLOAD)?;
        input.services = self.decode(type_urls::SERVICE)?;
        for p in self.decode(type_urls::PEER_AUTHENTICATION)? {
            input.policies.push(PolicyMessage::PeerAuthentication(p));
        }
        for p in self.decode(type_urls::AUTHORIZATION)? {
            input.policies.push(PolicyMessage::Authorization(p));
        }
        input.set_namespaces(namespaces);
        Ok(input)
    }

    /// The message bytes held of type `ty`, by name.
    fn raw(&self, ty: &str) -> BTreeMap<String, Vec<u8>> {
        self.types
            .get(ty)
            .into_iter()
            .flatten()
            .map(|(n, (_, b))| (n.clone(), b.clone()))
            .collect()
    }

    fn versions(&self, ty: &str) -> BTreeMap<String, String> {
        self.types
            .get(ty)
            .into_iter()
            .flatten()
            .map(|(n, (v, _))| (n.clone(), v.clone()))
            .collect()
    }
}

/// Sees every new good state.
pub type StateReceiver = watch::Receiver<Arc<ProxyState>>;
/// Why the controller's config is not (fully) in force (`None` when it is).
pub type ErrorReceiver = watch::Receiver<Option<String>>;

/// A running client. Dropping it does not stop the client (see [`spawn_xds`]).
pub struct XdsClient {
    pub state: StateReceiver,
    /// The state with the extra types' resources (see [`XdsView`]).
    pub view: watch::Receiver<Arc<XdsView>>,
    pub errors: ErrorReceiver,
    pub status: watch::Receiver<XdsStatus>,
}

impl XdsClient {
    /// Starts the client; it runs until every state receiver is dropped.
    /// The state is empty until the first full sync. Within a Tokio runtime.
    pub fn start(opts: XdsOptions) -> XdsClient {
        let (state_tx, state) = watch::channel(Arc::new(ProxyState::empty()));
        let (error_tx, errors) = watch::channel(None::<String>);
        let (status_tx, status) = watch::channel(XdsStatus::default());
        let (view_tx, view) = watch::channel(Arc::new(XdsView {
            state: state.borrow().clone(),
            extra: ExtraResources::new(),
        }));
        let out = Outputs {
            state: state_tx,
            view: view_tx,
            errors: error_tx,
            status: status_tx,
        };
        tokio::spawn(run(opts, out));
        XdsClient {
            state,
            view,
            errors,
            status,
        }
    }
}

/// Mirrors the local config file's watcher (`ConfigWatcher::spawn`): the
/// state and error receivers of a client that runs for the life of the process (or until
/// every state receiver is dropped).
pub fn spawn_xds(opts: XdsOptions) -> (StateReceiver, ErrorReceiver) {
    let c = XdsClient::start(opts);
    (c.state, c.errors)
}

struct Shared {
    held: Held,
    /// Types received at least once (since start).
    seen: BTreeSet<String>,
    synced: bool,
    /// type URL -> why its last response was refused (cleared by an ACK of that type).
    nacks: BTreeMap<String, String>,
}

impl Shared {
    fn report(&self, error_tx: &watch::Sender<Option<String>>, link: Option<String>) {
        let mut parts: Vec<String> = link.into_iter().collect();
        parts.extend(self.nacks.values().cloned());
        error_tx.send_replace((!parts.is_empty()).then(|| parts.join("\n")));
    }
}

/// Where a client publishes.
struct Outputs {
    state: watch::Sender<Arc<ProxyState>>,
    view: watch::Sender<Arc<XdsView>>,
    errors: watch::Sender<Option<String>>,
    status: watch::Sender<XdsStatus>,
}

async fn run(opts: XdsOptions, out: Outputs) {
    let Outputs {
        state: state_tx,
        view: view_tx,
        errors: error_tx,
        status: status_tx,
    } = &out;
    let mut shared = Shared {
        held: Held::default(),
        seen: BTreeSet::new(),
        synced: false,
        nacks: BTreeMap::new(),
    };
    let mut backoff = opts.initial_backoff;
    loop {
        if state_tx.is_closed() && view_tx.is_closed() {
            return;
        }
        status_tx.send_modify(|s| s.connections += 1);
        let result = session(&opts, &mut shared, &out).await;
        status_tx.send_modify(|s| s.connected = false);
        let (got_response, reason) = match result {
            Ok(got) => (got, "the controller closed the stream".to_string()),
            Err((got, e)) => (got, e),
        };
        if got_response {
            backoff = opts.initial_backoff;
        }
        tracing::warn!(address = %opts.address, retry_in = ?backoff, "xDS: {reason}; keeping the last good config");
        shared.report(
            error_tx,
            Some(format!(
                "xDS: {reason}; serving the last good config, retrying"
            )),
        );
        // Jitter: up to a quarter of the delay, so that nodes do not reconnect in step.
        let jitter = backoff.mul_f64(rand::random::<f64>() * 0.25);
        tokio::time::sleep(backoff + jitter).await;
        backoff = (backoff * 2).min(opts.max_backoff);
    }
}

fn request(opts: &XdsOptions, ty: &str, held: &Held) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        node: Some(Node {
            id: opts.node.clone(),
            ..Default::default()
        }),
        type_url: ty.to_string(),
        resource_names_subscribe: vec!["*".into()],
        initial_resource_versions: held.versions(ty),
        ..Default::default()
    }
}

/// One stream. `Ok(true)`/`Err((true, _))`: at least one response arrived.
async fn session(
    opts: &XdsOptions,
    shared: &mut Shared,
    out: &Outputs,
) -> Result<bool, (bool, String)> {
    let Outputs {
        state: state_tx,
        view: view_tx,
        errors: error_tx,
        status: status_tx,
    } = out;
    let types: Vec<&str> = type_urls::ALL
        .iter()
        .copied()
        .chain(opts.extra_types.iter().map(String::as_str))
        .collect();
    let endpoint = tonic::transport::Endpoint::from_shared(opts.address.clone())
        .map_err(|e| (false, format!("bad address {}: {e}", opts.address)))?
        .connect_timeout(opts.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5));
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| (false, format!("connecting to {}: {e}", opts.address)))?;
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let (tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(32 + types.len());
    for ty in &types {
        // The capacity exceeds the number of types: cannot fail.
        let _ = tx.try_send(request(opts, ty, &shared.held));
    }
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(token) = &opts.token {
        let value = format!("Bearer {token}").parse().map_err(|_| {
            (
                false,
                "the bootstrap token is not valid metadata".to_string(),
            )
        })?;
        req.metadata_mut().insert("authorization", value);
    }
    let mut stream = client
        .delta_aggregated_resources(req)
        .await
        .map_err(|e| (false, format!("opening the stream: {}", e.message())))?
        .into_inner();
    status_tx.send_modify(|s| s.connected = true);
    tracing::info!(address = %opts.address, node = %opts.node, "xDS stream open");
    let mut got = false;
    loop {
        let first = match stream.message().await {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(got),
            Err(e) => return Err((got, format!("stream: {}", e.message()))),
        };
        got = true;
        // Take every response already here, then publish once.
        let mut batch = vec![first];
        while let Some(next) = stream.message().now_or_never() {
            match next {
                Ok(Some(r)) => batch.push(r),
                Ok(None) => break,
                Err(e) => return Err((got, format!("stream: {}", e.message()))),
            }
        }
        let mut new_state = None;
        for resp in batch {
            status_tx.send_modify(|s| {
                s.response_sizes.push((
                    resp.type_url.clone(),
                    resp.resources.len(),
                    resp.removed_resources.len(),
                ));
                let n = s.response_sizes.len();
                if n > 64 {
                    s.response_sizes.drain(..n - 64);
                }
            });
            let verdict = shared.held.apply(&resp).and_then(|next| {
                if opts.extra_types.contains(&resp.type_url) {
                    if let Some(check) = &opts.extra_check {
                        (check.0)(&resp.type_url, &next.raw(&resp.type_url))?;
                    }
                }
                let input = next.resources()?;
                build(&input)
                    .map(|state| (next, state))
                    .map_err(|e| e.to_string())
            });
            let reply = match verdict {
                Ok((next, state)) => {
                    shared.held = next;
                    shared.seen.insert(resp.type_url.clone());
                    shared.nacks.remove(&resp.type_url);
                    new_state = Some(state);
                    status_tx.send_modify(|s| s.acks += 1);
                    DeltaDiscoveryRequest {
                        type_url: resp.type_url.clone(),
                        response_nonce: resp.nonce.clone(),
                        ..Default::default()
                    }
                }
                Err(message) => {
                    let message = format!("{}: {message}", resp.type_url);
                    tracing::error!(nonce = %resp.nonce, "xDS update rejected, keeping the last good config: {message}");
                    shared.nacks.insert(resp.type_url.clone(), message.clone());
                    status_tx.send_modify(|s| s.nacks += 1);
                    DeltaDiscoveryRequest {
                        type_url: resp.type_url.clone(),
                        response_nonce: resp.nonce.clone(),
                        error_detail: Some(rpc::Status {
                            code: tonic::Code::InvalidArgument as i32,
                            message,
                            details: Vec::new(),
                        }),
                        ..Default::default()
                    }
                }
            };
            if tx.send(reply).await.is_err() {
                return Err((got, "the request stream closed".into()));
            }
        }
        if !shared.synced && types.iter().all(|t| shared.seen.contains(*t)) {
            shared.synced = true;
            tracing::info!(node = %opts.node, "xDS: initial sync complete");
        }
        if let (true, Some(state)) = (shared.synced, new_state) {
            for w in state.warnings() {
                tracing::warn!("xDS config: {w}");
            }
            tracing::info!(
                workloads = state.workloads().len(),
                services = state.services().len(),
                "xDS config applied"
            );
            let state = Arc::new(state);
            state_tx.send_replace(state.clone());
            let extra = opts
                .extra_types
                .iter()
                .map(|t| (t.clone(), shared.held.raw(t)))
                .collect();
            view_tx.send_replace(Arc::new(XdsView { state, extra }));
        }
        shared.report(error_tx, None);
    }
}
