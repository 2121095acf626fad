//! Ambit's controller: reads the cluster's config (the Kubernetes API or a
//! folder of YAML),
//! translates it into per-node xDS resources, serves them over incremental
//! ADS, and signs SPIFFE certificates for the nodes' pods.
//!
//! * [`source`]: config sources ([`source::kube`], [`source::folder`]).
//! * [`translate`]: snapshot -> per-node resources.
//! * [`xds`]: the delta ADS server.
//! * [`ca`]: the certificate authority and its gRPC service.
//! * [`status`]: per-client sync status (ACK/NACK), served over HTTP.
//! * [`bootstrap`]: per-node bootstrap tokens (local mode).

pub mod bootstrap;
pub mod ca;
pub mod source;
pub mod status;
pub mod to_proto;
pub mod translate;
pub mod xds;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mesh_proto::encoded::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use mesh_proto::istio::v1::auth::istio_certificate_service_server::IstioCertificateServiceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::bootstrap::Tokens;
use crate::ca::CaService;
use crate::source::folder::FolderSource;
use crate::source::kube::{KubeConfigSource, KubeSource};
use crate::status::StatusRegistry;
use crate::translate::MeshSettings;
use crate::xds::{LargePermits, PushLimits, XdsServer};
use mesh_identity::ca::CertificateAuthority;

#[derive(Clone, Debug)]
pub struct ControllerOptions {
    /// The folder source's folder (unused when `kube` is set).
    pub folder: PathBuf,
    /// Read the config from the Kubernetes API instead of `folder`.
    pub kube: Option<KubeConfigSource>,
    /// gRPC: xDS and the CA.
    pub listen: SocketAddr,
    /// HTTP: `/debug/syncz`, `/debug/config_error`, `/healthz/ready`.
    pub status_listen: SocketAddr,
    pub ca_dir: Option<PathBuf>,
    pub trust_domain: String,
    /// Where per-node tokens and `root-cert.pem` are written. `None`: no
    /// authentication (any client may name any node; tests only).
    pub bootstrap_dir: Option<PathBuf>,
    pub poll_interval: Duration,
    /// How many large xDS responses may be on their way at once.
    pub push_limits: PushLimits,
}

impl ControllerOptions {
    pub fn new(folder: impl Into<PathBuf>) -> Self {
        ControllerOptions {
            folder: folder.into(),
            kube: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 15010)),
            status_listen: SocketAddr::from(([127, 0, 0, 1], 15014)),
            ca_dir: None,
            trust_domain: "cluster.local".into(),
            bootstrap_dir: None,
            poll_interval: FolderSource::DEFAULT_INTERVAL,
            push_limits: PushLimits::default(),
        }
    }

    /// Options for the Kubernetes source (`poll_interval` is then the
    /// debounce of watch events).
    pub fn kube(source: KubeConfigSource) -> Self {
        ControllerOptions {
            kube: Some(source),
            poll_interval: KubeSource::DEFAULT_DEBOUNCE,
            ..ControllerOptions::new(PathBuf::new())
        }
    }
}

/// A running controller (its tasks stop when this is dropped).
pub struct Controller {
    pub addr: SocketAddr,
    pub status_addr: SocketAddr,
    pub status: Arc<StatusRegistry>,
    pub tokens: Arc<Tokens>,
    pub ca: Arc<CertificateAuthority>,
    pub config_errors: watch::Receiver<Option<String>>,
    /// The xDS server's large-response permits (see [`PushLimits`]).
    pub large_permits: LargePermits,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Controller {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Controller {
    /// Loads the folder (which must be valid) or the cluster's objects
    /// (their initial lists), the CA, issues bootstrap tokens, binds and
    /// serves. Within a Tokio runtime.
    pub async fn start(opts: ControllerOptions) -> anyhow::Result<Controller> {
        let (snapshots, errors) = match &opts.kube {
            None => FolderSource::spawn(&opts.folder, opts.poll_interval)?,
            Some(k) => {
                let client = source::kube::client(k).await?;
                KubeSource::spawn(client, opts.poll_interval).await?
            }
        };
        let ca = Arc::new(CertificateAuthority::load_or_create(
            opts.ca_dir.as_deref(),
            &opts.trust_domain,
        )?);
        let tokens = Arc::new(match &opts.bootstrap_dir {
            Some(dir) => {
                let t = Tokens::in_dir(dir)?;
                std::fs::write(dir.join("root-cert.pem"), ca.root_pem())?;
                t
            }
            None => Tokens::disabled(),
        });
        let mut tasks = Vec::new();
        if opts.bootstrap_dir.is_some() {
            tasks.push(tokio::spawn(issue_tokens(
                snapshots.clone(),
                tokens.clone(),
            )));
            // First pass now, so that the files exist when start returns.
            for node in clients(&snapshots.borrow()) {
                if let Err(e) = tokens.ensure(&node) {
                    tracing::error!(%node, error = %e, "bootstrap token");
                }
            }
        }
        let status = Arc::new(StatusRegistry::default());
        let mesh = MeshSettings {
            trust_domain: opts.trust_domain.clone(),
            ..MeshSettings::default()
        };
        let xds = XdsServer::new(
            snapshots.clone(),
            tokens.clone(),
            status.clone(),
            mesh,
            opts.push_limits.clone(),
        );
        let large_permits = xds.large_permits();
        let ca_svc = CaService::new(ca.clone(), tokens.clone(), snapshots.clone());

        let listener = TcpListener::bind(opts.listen).await?;
        let addr = listener.local_addr()?;
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let server = tonic::transport::Server::builder()
            .add_service(AggregatedDiscoveryServiceServer::new(xds))
            .add_service(IstioCertificateServiceServer::new(ca_svc))
            .serve_with_incoming(incoming);
        tasks.push(tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::error!(error = %e, "gRPC server stopped");
            }
        }));

        let status_listener = TcpListener::bind(opts.status_listen).await?;
        let status_addr = status_listener.local_addr()?;
        tasks.push(tokio::spawn(status::serve(
            status_listener,
            status.clone(),
            errors.clone(),
        )));
        tracing::info!(%addr, %status_addr, trust_domain = %opts.trust_domain, "mesh-controller serving");
        Ok(Controller {
            addr,
            status_addr,
            status,
            tokens,
            ca,
            config_errors: errors,
            large_permits,
            tasks,
        })
    }
}

/// The xDS clients that get a bootstrap token: the nodes with pods, and
/// the waypoints the cluster declares.
fn clients(snap: &source::Snapshot) -> Vec<String> {
    let mut v = snap.nodes();
    v.extend(snap.waypoints().iter().map(|w| w.node_id()));
    v
}

async fn issue_tokens(mut snapshots: watch::Receiver<Arc<source::Snapshot>>, tokens: Arc<Tokens>) {
    while snapshots.changed().await.is_ok() {
        let nodes = clients(&snapshots.borrow_and_update());
        for node in nodes {
            if let Err(e) = tokens.ensure(&node) {
                tracing::error!(%node, error = %e, "bootstrap token");
            }
        }
    }
}
