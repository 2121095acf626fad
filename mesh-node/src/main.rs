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
        required_unless_present_any = ["xds_address", "uninstall"],
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
    #[arg(long, value_parser = node_name)]
    node: String,
    /// The node's cgroup2 directory; the kernel programs attach to it.
    #[arg(long, required_unless_present = "uninstall")]
    cgroup: Option<PathBuf>,
    /// Where the kernel state that outlives mesh-node is pinned, on a bpffs
    /// (default /sys/fs/bpf/ambit/<node>). While it is there, enrolled pods
    /// stay captured: with no mesh-node running, their connections are refused.
    #[arg(long)]
    pin_dir: Option<PathBuf>,
    /// Remove the pinned kernel state (the node leaves the mesh: its pods'
    /// traffic is no longer captured) and exit.
    #[arg(long)]
    uninstall: bool,
    /// Admin address (readiness, metrics), inside the node's netns.
    #[arg(long, default_value = "127.0.0.1:15000")]
    admin: std::net::SocketAddr,
    /// Turn on the sockops/sk_msg same-node fast path. Off by default: on
    /// kernels up to at least 6.18, a socket in a sockhash returns EAGAIN to a
    /// blocking read woken without data (e.g. by its own shutdown from
    /// another thread), which some applications do not survive.
    #[arg(long)]
    fast_path: bool,
    /// How long a drain (SIGTERM) waits for open connections, in seconds
    /// (fractions allowed).
    #[arg(long, default_value = "10", value_parser = seconds)]
    drain_timeout_secs: Duration,
    /// Data-path worker threads (1 to 1024).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=1024))]
    worker_threads: u16,
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
    let pin_dir = args
        .pin_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("/sys/fs/bpf/ambit").join(&args.node));
    if args.uninstall {
        return match mesh_node::ebpf::PinDir::remove(&pin_dir) {
            Ok(()) => {
                tracing::info!(pin_dir = %pin_dir.display(), "pinned kernel state removed");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&format!("removing {}: {e}", pin_dir.display())),
        };
    }
    let Some(cgroup) = args.cgroup else {
        return fail("--cgroup is needed");
    };
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
        cgroup,
        pin_dir,
        admin: args.admin,
        fast_path: args.fast_path,
        drain_timeout: args.drain_timeout_secs,
        worker_threads: usize::from(args.worker_threads),
    };
    match app::run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string()),
    }
}

/// A number of seconds for a flag: finite, not negative, within what a
/// `Duration` holds. `inf`, `NaN` and `1e400` parse as `f64`, and
/// `Duration::from_secs_f64` panics on them, so they are refused here, where
/// clap names the flag in its error.
fn seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|e| format!("not a number of seconds ({e})"))?;
    if !secs.is_finite() || secs < 0.0 {
        return Err("expected a finite number of seconds, 0 or more".into());
    }
    Duration::try_from_secs_f64(secs).map_err(|e| format!("not a usable duration ({e})"))
}

/// A Kubernetes node name (an RFC 1123 subdomain): it names a directory
/// under the pin root, so nothing else may pass.
fn node_name(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text.len() <= 253
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && text
            .split('.')
            .all(|label| !label.is_empty() && !label.starts_with('-') && !label.ends_with('-'));
    if ok {
        Ok(text.to_string())
    } else {
        Err(
            "expected a node name: lower-case letters, digits, '-' and '.', as Kubernetes allows"
                .into(),
        )
    }
}

fn fail(message: &str) -> ExitCode {
    tracing::error!("mesh-node failed: {message}");
    eprintln!("mesh-node: {message}");
    ExitCode::FAILURE
}
