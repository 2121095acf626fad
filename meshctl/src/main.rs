//! `meshctl`: Ambit's operator CLI.
//!
//! Subcommands live in their own modules and return an [`ExitCode`]:
//! `analyze` (offline), `proxy-status` (the controller's sync status) and
//! `proxy-config` (what one node holds).

mod analyze;
mod http;
mod node_status;
mod proxy_config;
mod proxy_status;
mod table;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit status: success, or no error-level finding.
pub const EXIT_OK: u8 = 0;
/// Exit status: the config has errors.
pub const EXIT_FINDINGS: u8 = 1;
/// Exit status: usage or I/O problem, including an unreachable controller or
/// node (clap also exits 2 on usage errors).
pub const EXIT_USAGE: u8 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "meshctl",
    version,
    about = "Ambit's operator CLI",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check Istio and Gateway API YAML as Ambit reads it: errors, what
    /// Ambit does not implement, and references across resources.
    ///
    /// Exit status: 0 when there is no error (warnings allowed), 1 when
    /// there are errors, 2 on usage or I/O problems.
    Analyze(analyze::AnalyzeArgs),
    /// Each xDS client of the controller (nodes): connected, the version it
    /// last ACKed per resource type, and its last NACK, from the
    /// controller's /debug/syncz; with --node, each node's readiness and
    /// the pods it failed to enrol, from its admin server.
    ///
    /// Exit status: 0 when the controller and every node answered, 2 when
    /// one is unreachable or answered something else.
    ProxyStatus(proxy_status::ProxyStatusArgs),
    /// What one node holds (workloads, services, policies, certificates
    /// and their expiry), from its admin server's /config_dump.
    ///
    /// Exit status: 0 when the node answered, 2 when it is unreachable or
    /// answered something else.
    ProxyConfig(proxy_config::ProxyConfigArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Analyze(args) => analyze::run(&args),
        Command::ProxyStatus(args) => proxy_status::run(&args),
        Command::ProxyConfig(args) => proxy_config::run(&args),
    }
}
