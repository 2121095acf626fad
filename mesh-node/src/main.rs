//! mesh-node: one per node. See the crate docs of `mesh_node`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use mesh_node::app::{self, NodeOptions};

#[derive(Parser, Debug)]
#[command(
    about = "Ambit's node proxy: captures pod traffic in the kernel, carries it over mTLS (HBONE)",
    args_override_self = true
)]
struct Args {
    /// The local config file (workloads, services, policies, certificates); watched.
    #[arg(long)]
    config: PathBuf,
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
    let opts = NodeOptions {
        config: args.config,
        node: args.node,
        cgroup: args.cgroup,
        admin: args.admin,
        fast_path: args.fast_path,
        drain_timeout: Duration::from_secs_f64(args.drain_timeout_secs.max(0.0)),
        worker_threads: args.worker_threads.max(1),
    };
    match app::run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("mesh-node failed: {e}");
            eprintln!("mesh-node: {e}");
            ExitCode::FAILURE
        }
    }
}
