//! `meshctl`: Ambit's operator CLI.
//!
//! Subcommands live in their own modules and return an [`ExitCode`]; the
//! ones that talk to the control plane (`proxy-status`, `proxy-config`)
//! will be added next to `analyze` when the xDS server exists.

mod analyze;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit status: success, or no error-level finding.
pub const EXIT_OK: u8 = 0;
/// Exit status: the config has errors.
pub const EXIT_FINDINGS: u8 = 1;
/// Exit status: usage or I/O problem (clap also exits 2 on usage errors).
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Analyze(args) => analyze::run(&args),
    }
}
