//! Wiring the node proxy together: kernel programs, config, certificates,
//! pod enrolment, the admin server, and the drain on SIGTERM.
//!
//! The data path runs on its own multi-threaded runtime; the admin server
//! and the config watcher's reporting run on a separate single thread, so a
//! busy data path never delays readiness or metrics and vice versa.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::admin;
use crate::ebpf::{MeshPrograms, PinDir};
use crate::inpod::{EnrolmentStatus, PodEnrolments};
use crate::proxy::{ConnectionManager, Metrics};
use mesh_identity::CertStore;
use mesh_model::config::ConfigWatcher;
use mesh_model::state::ProxyState;
use mesh_xds::{spawn_ca, spawn_xds, CaOptions, XdsOptions};

/// How often a failed pod enrolment is tried again.
const ENROLMENT_RETRY: Duration = Duration::from_secs(1);

/// Where the node's config comes from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// A local file, watched: the debugging mode (certificates named in it).
    File(PathBuf),
    /// The controller: delta xDS for config, its CA for certificates.
    Controller {
        /// `http://host:port` of the controller's gRPC server.
        address: String,
        /// This node's bootstrap token (proves which node is asking).
        token: Option<String>,
        /// Trust roots to install (the bootstrap folder's root-cert.pem).
        roots_pem: Option<Vec<u8>>,
    },
}

#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub source: ConfigSource,
    pub node: String,
    /// The node's cgroup2 directory: the kernel programs attach here.
    pub cgroup: PathBuf,
    /// Where the kernel state that outlives mesh-node is pinned (bpffs).
    pub pin_dir: PathBuf,
    pub admin: std::net::SocketAddr,
    pub fast_path: bool,
    pub drain_timeout: Duration,
    pub worker_threads: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("joining cgroup {path}: {source}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("loading the kernel programs: {0}")]
    Ebpf(#[from] crate::ebpf::EbpfError),
    #[error("pin directory {path}: {source}")]
    PinDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("runtime: {0}")]
    Runtime(std::io::Error),
}

/// mesh-node's own sockets must see the cgroup hooks (getsockopt answers
/// SO_ORIGINAL_DST for it) while its cgroup keeps them uncaptured: it lives
/// in a child of the node cgroup, as it would under the root cgroup of a
/// real node. Returns that child's directory.
fn join_own_cgroup(node_cgroup: &Path) -> Result<PathBuf, NodeError> {
    let own = node_cgroup.join("mesh-node");
    let err = |source| NodeError::Cgroup {
        path: own.clone(),
        source,
    };
    match std::fs::create_dir(&own) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(err(e)),
    }
    std::fs::write(own.join("cgroup.procs"), std::process::id().to_string()).map_err(err)?;
    Ok(own)
}

/// Loads roots and the certificates of this node's identities from the paths
/// the config names. Failures are logged; the previous certificates stay.
pub fn apply_certificates(certs: &CertStore, state: &ProxyState) {
    let Some(spec) = state.certificates() else {
        return;
    };
    if let Err(e) = certs.load_roots_file(&spec.roots) {
        error!(error = %e, "loading trust roots");
    }
    for id in &spec.identities {
        if let Err(e) = certs.load_files(&id.cert_chain, &id.key) {
            error!(identity = %id.identity, error = %e, "loading certificate");
        }
    }
}

/// Waits (bounded) until the CA has issued the certificates of this node's
/// enrolled pods, so that the first connections after readiness do not fail
/// for want of a certificate. Past the bound the node starts anyway and the
/// CA client keeps trying.
async fn wait_for_certificates(certs: &CertStore, state: &ProxyState, node: &str) {
    let wanted: Vec<_> = state
        .local_workloads(node)
        .filter(|w| state.is_ambient(w))
        .map(|w| state.identity_of(w))
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while wanted.iter().any(|id| certs.get(id).is_none()) {
        if tokio::time::Instant::now() > deadline {
            warn!("starting without all certificates; the CA client keeps asking");
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn run(opts: NodeOptions) -> Result<(), NodeError> {
    let own = join_own_cgroup(&opts.cgroup)?;
    let pins = PinDir::prepare(&opts.pin_dir).map_err(|source| NodeError::PinDir {
        path: opts.pin_dir.clone(),
        source,
    })?;
    let mut programs = MeshPrograms::load_pinned(&opts.cgroup, pins)?;
    programs.exempt_cgroup(&own)?;
    programs.set_fast_path(opts.fast_path)?;
    let programs = Arc::new(Mutex::new(programs));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.worker_threads)
        .thread_name("mesh-data")
        .enable_all()
        .build()
        .map_err(NodeError::Runtime)?;
    let metrics = Arc::new(Metrics::default());
    let result = runtime.block_on(serve(opts.clone(), programs.clone(), metrics));
    // Connections still open past the drain deadline are dropped here.
    runtime.shutdown_timeout(Duration::from_millis(100));
    drop(programs);
    result
}

async fn serve(
    opts: NodeOptions,
    programs: Arc<Mutex<MeshPrograms>>,
    metrics: Arc<Metrics>,
) -> Result<(), NodeError> {
    let certs = Arc::new(CertStore::new());
    let (state_rx, errors_rx) = match &opts.source {
        ConfigSource::File(path) => {
            let (state_rx, errors_rx) =
                ConfigWatcher::spawn(path).map_err(|e| NodeError::Config {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            apply_certificates(&certs, &state_rx.borrow());
            (state_rx, errors_rx)
        }
        ConfigSource::Controller {
            address,
            token,
            roots_pem,
        } => {
            let mut x = XdsOptions::new(address.clone(), opts.node.clone());
            x.token = token.clone();
            let (mut state_rx, errors_rx) = spawn_xds(x);
            let mut c = CaOptions::new(address.clone(), opts.node.clone());
            c.token = token.clone();
            c.roots_pem = roots_pem.clone();
            spawn_ca(c, certs.clone(), state_rx.clone());
            // Serve only once the first complete config has arrived; until
            // then the node would enrol nothing and refuse everything.
            info!(controller = %address, "waiting for the first config from the controller");
            if state_rx.changed().await.is_err() {
                return Err(NodeError::Config {
                    path: PathBuf::from(address),
                    message: "the xDS client stopped before the first config".into(),
                });
            }
            wait_for_certificates(&certs, &state_rx.borrow().clone(), &opts.node).await;
            (state_rx, errors_rx)
        }
    };

    let (ready_tx, ready_rx) = watch::channel(false);
    let (enrolment_tx, enrolment_rx) = watch::channel(EnrolmentStatus::default());
    admin::spawn(
        opts.admin,
        admin::AdminSources {
            metrics: metrics.clone(),
            ready: ready_rx,
            config_error: errors_rx,
            node: opts.node.clone(),
            state: state_rx.clone(),
            certs: certs.clone(),
            enrolment: enrolment_rx,
        },
    );

    // Open inbound connections are authorized again on every config change.
    let connections = ConnectionManager::new(state_rx.clone(), metrics.clone());
    tokio::spawn(connections.clone().watch_config(state_rx.clone()));
    let mut pods = PodEnrolments::new(
        &opts.node,
        programs.clone(),
        certs.clone(),
        state_rx.clone(),
        metrics.clone(),
        connections,
        enrolment_tx,
    );
    let initial = state_rx.borrow().clone();
    pods.reconcile(&initial);
    // Pods a previous run left captured and this config no longer has.
    match programs.lock() {
        Ok(mut p) => match p.release_leftovers() {
            Ok(0) => {}
            Ok(n) => info!(pods = n, "released pods the previous run left enrolled"),
            Err(e) => error!(error = %e, "releasing pods the previous run left enrolled"),
        },
        Err(_) => error!("eBPF state poisoned"),
    }
    let _ = ready_tx.send(true);
    info!(node = %opts.node, pods = pods.enrolled(), fast_path = opts.fast_path, "mesh-node ready");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(NodeError::Runtime)?;
    let mut changes = state_rx.clone();
    // A pod whose enrolment failed is tried again without waiting for a
    // config change: what blocked it (a port taken in its netns) may go away.
    let mut retry = tokio::time::interval(ENROLMENT_RETRY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = retry.tick(), if pods.failing() > 0 => {
                let state = changes.borrow().clone();
                pods.reconcile(&state);
                if pods.failing() == 0 {
                    info!(pods = pods.enrolled(), "every pod enrolled");
                }
            }
            changed = changes.changed() => {
                if changed.is_err() {
                    warn!("config watcher stopped; keeping the last good config");
                    // Nothing more will change: wait for the signal only.
                    let _ = term.recv().await;
                    break;
                }
                let state = changes.borrow_and_update().clone();
                apply_certificates(&certs, &state);
                pods.reconcile(&state);
                info!(pods = pods.enrolled(), "config applied");
            }
        }
    }
    info!(active = metrics.active(), timeout = ?opts.drain_timeout, "draining");
    let _ = ready_tx.send(false);
    pods.drain();
    if tokio::time::timeout(opts.drain_timeout, metrics.wait_idle())
        .await
        .is_err()
    {
        warn!(
            active = metrics.active(),
            "drain timeout: closing the remaining connections"
        );
    }
    info!("mesh-node stopped");
    Ok(())
}
