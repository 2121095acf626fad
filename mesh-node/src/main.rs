//! mesh-node: one per node. See the crate docs of `mesh_node`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use mesh_node::app::{self, ConfigSource, NodeOptions};

#[derive(Parser, Debug)]
#[command(
    about = "Ambit's node proxy: captures pod traffic in the kernel, carries it over mTLS (HBONE)",
    args_override_self = true
)]
struct Args {
    /// The local config file (workloads, services, policies, certificates);
    /// watched. The debugging mode: use either this or --xds-address.
    #[arg(
        long,
        required_unless_present = "xds_address",
        conflicts_with = "xds_address"
    )]
    config: Option<PathBuf>,
    /// The controller's gRPC address (`http://host:port`): config over delta
    /// xDS, certificates from its CA.
    #[arg(long)]
    xds_address: Option<String>,
    /// File holding this node's bootstrap token (with --xds-address).
    #[arg(long, requires = "xds_address")]
    bootstrap_token: Option<PathBuf>,
    /// Trust roots to install (PEM), e.g. the bootstrap folder's root-cert.pem.
    #[arg(long, requires = "xds_address")]
    xds_roots: Option<PathBuf>,
    /// This node's name: pods whose `node` matches are enrolled here.
    #[arg(long)]
    node: String,
    /// The node's cgroup2 directory; the kernel programs attach to it.
    #[arg(long)]
    cgroup: PathBuf,
    /// Admin address (readiness, metrics), inside the node's netns.
    #[arg(long, default_value = "127.0.0.1:15000")]
    admin: std::net::SocketAddr,
    /// Turn on the sockops/sk_msg same-node fast path. Off by default: on
    /// kernels up to at least 6.18, a socket in a sockhash returns EAGAIN to a
    /// blocking read woken without data (e.g. by its own shutdown from
    /// another thread), which some applications do not survive.
    #[arg(long)]
    fast_path: bool,
    /// How long a drain (SIGTERM) waits for open connections.
    #[arg(long, default_value_t = 10.0)]
    drain_timeout_secs: f64,
    /// Data-path worker threads.
    #[arg(long, default_value_t = 2)]
    worker_threads: usize,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(false)
        .init();
    let args = Args::parse();
    let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("reading {}: {e}", p.display()));
    let source = match (args.config, args.xds_address) {
        (Some(path), _) => ConfigSource::File(path),
        (None, Some(address)) => {
            let token = match args.bootstrap_token.as_ref().map(read).transpose() {
                Ok(t) => t.map(|b| String::from_utf8_lossy(&b).trim().to_string()),
                Err(e) => return fail(&e),
            };
            let roots_pem = match args.xds_roots.as_ref().map(read).transpose() {
                Ok(r) => r,
                Err(e) => return fail(&e),
            };
            ConfigSource::Controller {
                address,
                token,
                roots_pem,
            }
        }
        (None, None) => return fail("either --config or --xds-address is needed"),
    };
    let opts = NodeOptions {
        source,
        node: args.node,
        cgroup: args.cgroup,
        admin: args.admin,
        fast_path: args.fast_path,
        drain_timeout: Duration::from_secs_f64(args.drain_timeout_secs.max(0.0)),
        worker_threads: args.worker_threads.max(1),
    };
    match app::run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string()),
    }
}

fn fail(message: &str) -> ExitCode {
    tracing::error!("mesh-node failed: {message}");
    eprintln!("mesh-node: {message}");
    ExitCode::FAILURE
}
