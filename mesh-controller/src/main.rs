//! `mesh-controller [--folder <dir> | --kubeconfig <file>] --listen
//! 127.0.0.1:15010 --ca-dir <dir> --trust-domain cluster.local
//! --bootstrap-dir <dir>`; with neither --folder nor --kubeconfig, the
//! in-cluster config (the pod's service account).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use mesh_controller::source::kube::KubeConfigSource;
use mesh_controller::xds::PushLimits;
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
    /// How many clients may be receiving a large response (a first sync)
    /// at once; each is buffered whole until the client has read it.
    #[arg(long, default_value_t = PushLimits::default().large_in_flight)]
    large_responses_in_flight: usize,
}

fn main() -> anyhow::Result<()> {
    one_malloc_arena();
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
        opts.push_limits.large_in_flight = args.large_responses_in_flight;
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

/// glibc gives each thread that allocates concurrently its own arena (up to
/// 8 per core), and memory freed in one arena is never reused for another's
/// allocations nor returned while fragmented. Reloads parse and translate
/// the whole cluster on blocking-pool threads, so each reload grew RSS by
/// its transient size again: measured with `xds-bench` at 100 nodes, live
/// heap peaked at 120 MiB while RSS reached 260 MiB; with one arena, RSS
/// peaks at about 150 MiB. Small allocations still go through glibc's
/// per-thread caches without the arena lock. Left alone when the operator
/// set the arena count (`MALLOC_ARENA_MAX`, `GLIBC_TUNABLES`).
fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let set_by_operator = std::env::var_os("MALLOC_ARENA_MAX").is_some()
            || std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("arena_max"));
        if !set_by_operator {
            // SAFETY: mallopt only changes allocator parameters; called
            // before any other thread exists.
            unsafe {
                libc::mallopt(libc::M_ARENA_MAX, 1);
            }
        }
    }
}
