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
    /// A minimal HTTP/1.1 server: answers a request `200` with its name,
    /// the path and the `end-user` header, then closes the connection.
    Http {
        #[arg(long)]
        name: String,
        #[arg(long)]
        port: u16,
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
        Cmd::Http { name, port } => return http_serve(&name, port),
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

fn http_serve(name: &str, port: u16) -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind(("0.0.0.0", port))?;
    println!("listening on {port} (http)");
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let name = name.to_string();
        std::thread::spawn(move || http_answer(conn, &name));
    }
    Ok(())
}

/// Reads one request, answers it, closes the connection.
fn http_answer(conn: std::net::TcpStream, name: &str) -> std::io::Result<()> {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut out = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(());
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let (mut len, mut user) = (0u64, String::from("-"));
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 {
            return Ok(());
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap_or(0),
                "end-user" => user = v.trim().to_string(),
                _ => {}
            }
        }
    }
    std::io::copy(&mut (&mut r).take(len), &mut std::io::sink())?;
    let body = format!("{name} path={path} end-user={user}\n");
    write!(
        out,
        "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )?;
    out.flush()?;
    out.shutdown(std::net::Shutdown::Write)
}
