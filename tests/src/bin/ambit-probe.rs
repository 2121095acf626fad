//! The sample app: `ambit-probe serve|send|rr|bulk|cps`. See `mesh_tests::probe`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};
use mesh_tests::probe::{self, ServeMode};

#[derive(Parser)]
#[command(about = "Ambit's sample app: a greeting echo server and its clients")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve on a port: greet, then echo (or count with --sink).
    Serve {
        #[arg(long)]
        name: String,
        #[arg(long)]
        port: u16,
        #[arg(long)]
        sink: bool,
    },
    /// Send a payload and check the echo; prints a JSON report.
    Send {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 1)]
        bytes: u64,
        #[arg(long, default_value = "AMBIT")]
        marker: String,
        #[arg(long, default_value_t = 10)]
        timeout_secs: u64,
    },
    /// Request/response latency.
    Rr {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 1024)]
        size: usize,
        #[arg(long, default_value_t = 0)]
        rate: u64,
        #[arg(long, default_value_t = 3.0)]
        secs: f64,
        #[arg(long, default_value_t = 1)]
        conns: usize,
    },
    /// Open many idle connections and keep them open.
    Hold {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 1000)]
        count: usize,
        #[arg(long, default_value_t = 10.0)]
        secs: f64,
    },
    /// Single-stream bulk throughput to a --sink server.
    Bulk {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 3.0)]
        secs: f64,
    },
    /// New connections per second.
    Cps {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 3.0)]
        secs: f64,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let report = match cli.cmd {
        Cmd::Serve { name, port, sink } => {
            let mode = if sink {
                ServeMode::Sink
            } else {
                ServeMode::Echo
            };
            return probe::serve(&name, port, mode);
        }
        Cmd::Send {
            to,
            bytes,
            marker,
            timeout_secs,
        } => {
            let r = probe::send(to, bytes, &marker, Duration::from_secs(timeout_secs))?;
            let intact = r.intact;
            println!("{}", serde_json::to_string(&r)?);
            if !intact {
                anyhow::bail!("payload did not come back intact");
            }
            return Ok(());
        }
        Cmd::Rr {
            to,
            size,
            rate,
            secs,
            conns,
        } => probe::request_response(to, size, rate, secs, conns)?,
        Cmd::Hold { to, count, secs } => return probe::hold(to, count, secs),
        Cmd::Bulk { to, secs } => probe::bulk(to, secs)?,
        Cmd::Cps { to, secs } => probe::connections(to, secs)?,
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
