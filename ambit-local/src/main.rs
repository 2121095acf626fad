//! The local mode: `ambit-local up` brings up a mesh of network namespaces
//! with the sample app; `ambit-local bench` measures it against direct
//! connections, `ambit-local bench-waypoint` HTTP through a waypoint against
//! direct HTTP. `cargo xtask up|bench` build everything and run this.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Ambit's local mode: namespaces as nodes and pods, no cluster")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Bring up the sample app in a local mesh and show it working.
    Up {
        /// Tear down after the demonstration instead of waiting for Ctrl-C.
        #[arg(long)]
        once: bool,
    },
    /// Benchmark the mesh against direct connections.
    Bench {
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
        #[arg(long, default_value = "BENCHMARKS.md")]
        out: PathBuf,
    },
    /// Benchmark HTTP through a waypoint against direct HTTP.
    BenchWaypoint {
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
        #[arg(long, default_value = "BENCHMARKS-waypoint.md")]
        out: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Up { once } => ambit_local::up::run(once),
        Cmd::Bench { secs, out } => ambit_local::bench::run(secs, &out),
        Cmd::BenchWaypoint { secs, out } => {
            let md = ambit_local::bench_waypoint::run(secs)?;
            std::fs::write(&out, md)?;
            println!("written to {}", out.display());
            Ok(())
        }
    }
}
