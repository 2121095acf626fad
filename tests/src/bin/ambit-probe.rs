//! The sample app: `ambit-probe serve|send|rr|bulk|stream|cps` (see `mesh_tests::probe`)
//! and `http|http-load` (see `mesh_tests::http_app`).

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};
use mesh_tests::http_app;
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
        /// The address to listen on (all addresses by default).
        #[arg(long, default_value = "0.0.0.0")]
        bind: std::net::IpAddr,
    },
    /// The HTTP sample app (bookinfo's roles): answers JSON with
    /// `x-served-by: <name>`, optionally failing, slow, or calling upstreams.
    Http {
        #[arg(long)]
        name: String,
        #[arg(long)]
        port: u16,
        /// Answer every Nth request with --fail-status (1: every request).
        #[arg(long)]
        fail_every: Option<u64>,
        #[arg(long, default_value_t = 503)]
        fail_status: u16,
        /// Milliseconds to wait before answering.
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        /// Upstream URL to call first (repeatable), passing on end-user,
        /// x-request-id, trace and authorization headers.
        #[arg(long = "call")]
        calls: Vec<String>,
        /// Answer this many bytes instead of JSON, without a log line.
        #[arg(long)]
        payload: Option<usize>,
    },
    /// HTTP load: keep-alive GETs; prints an HttpLoadReport as JSON.
    HttpLoad {
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 100)]
        requests: u64,
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
        /// `name: value` (repeatable).
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
        /// Requests per second in all (0: full speed).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Run this many seconds instead of --requests.
        #[arg(long)]
        secs: Option<f64>,
        /// HTTP/2 with prior knowledge (multiplexed on each connection).
        #[arg(long)]
        http2: bool,
        /// Keep this many response bodies in the report.
        #[arg(long, default_value_t = 0)]
        keep_bodies: usize,
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
    /// One long-lived stream: a small echo every --interval-ms, a line
    /// per echo, and a StreamReport (JSON) when it ends or --secs pass.
    Stream {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 20)]
        interval_ms: u64,
        #[arg(long, default_value_t = 30.0)]
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
        Cmd::Serve {
            name,
            port,
            sink,
            bind,
        } => {
            let mode = if sink {
                ServeMode::Sink
            } else {
                ServeMode::Echo
            };
            return probe::serve(&name, SocketAddr::new(bind, port), mode);
        }
        Cmd::Http {
            name,
            port,
            fail_every,
            fail_status,
            delay_ms,
            calls,
            payload,
        } => {
            return runtime()?.block_on(http_app::serve(http_app::ServerSpec {
                name,
                port,
                fail_every,
                fail_status,
                delay: Duration::from_millis(delay_ms),
                calls,
                payload,
            }))
        }
        Cmd::HttpLoad {
            url,
            requests,
            concurrency,
            headers,
            rate,
            secs,
            http2,
            keep_bodies,
        } => {
            let headers = headers
                .iter()
                .map(|h| match h.split_once(':') {
                    Some((k, v)) => Ok((k.to_string(), v.to_string())),
                    None => anyhow::bail!("header {h:?} is not `name: value`"),
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let report = runtime()?.block_on(http_app::load(http_app::LoadSpec {
                url,
                requests,
                concurrency,
                headers,
                rate,
                duration: secs.map(Duration::from_secs_f64),
                http2,
                keep_bodies,
            }))?;
            println!("{}", serde_json::to_string(&report)?);
            return Ok(());
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
        Cmd::Stream {
            to,
            interval_ms,
            secs,
        } => {
            let r = probe::stream(to, Duration::from_millis(interval_ms), secs)?;
            println!("{}", serde_json::to_string(&r)?);
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

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}
