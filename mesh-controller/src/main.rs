//! `mesh-controller [--folder <dir> | --kubeconfig <file>] --listen
//! 127.0.0.1:15010 --ca-dir <dir> --trust-domain cluster.local
//! --bootstrap-dir <dir>`; with neither --folder nor --kubeconfig, the
//! in-cluster config (the pod's service account).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use mesh_controller::source::kube::KubeConfigSource;
use mesh_controller::{Controller, ControllerOptions};

#[derive(Parser, Debug)]
#[command(
    name = "mesh-controller",
    about = "Ambit's controller: Kubernetes or folder source, delta xDS, CA"
)]
struct Args {
    /// Folder of Kubernetes/Istio YAML (watched).
    #[arg(long, conflicts_with = "kubeconfig")]
    folder: Option<PathBuf>,
    /// Watch the Kubernetes API server of this kubeconfig (current
    /// context). Without it and without --folder: in-cluster config.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// gRPC address of xDS and the CA.
    #[arg(long, default_value = "127.0.0.1:15010")]
    listen: SocketAddr,
    /// HTTP address of the status endpoints (/debug/syncz).
    #[arg(long, default_value = "127.0.0.1:15014")]
    status_listen: SocketAddr,
    /// Plug-in CA files (root-cert.pem, cert-chain.pem, key.pem); a
    /// self-signed root is generated and saved here when they are absent.
    #[arg(long)]
    ca_dir: Option<PathBuf>,
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
    /// Where per-node tokens (<node>.token) and root-cert.pem are written.
    /// Without it, clients are not authenticated.
    #[arg(long)]
    bootstrap_dir: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let mut opts = match (args.folder, args.kubeconfig) {
            (Some(folder), _) => ControllerOptions::new(folder),
            (None, Some(kc)) => ControllerOptions::kube(KubeConfigSource::Kubeconfig(kc)),
            (None, None) => ControllerOptions::kube(KubeConfigSource::InCluster),
        };
        opts.listen = args.listen;
        opts.status_listen = args.status_listen;
        opts.ca_dir = args.ca_dir;
        opts.trust_domain = args.trust_domain;
        opts.bootstrap_dir = args.bootstrap_dir;
        let _controller = Controller::start(opts).await?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("mesh-controller stopping");
        Ok(())
    })
}
