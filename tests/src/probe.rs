//! `ambit-probe`: the sample app that plays client and server in the pods.
//!
//! A server greets each connection with one JSON line ([`Hello`]: its name,
//! the address the connection reached, the peer it came from), then echoes
//! (or, in sink mode, counts) until the client half-closes. Clients report
//! JSON ([`SendReport`], [`LoadReport`]) so tests can assert on them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Hello {
    pub server: String,
    /// The address the accepted connection reached (the server's side).
    pub local: String,
    /// The peer as the server sees it.
    pub peer: String,
    /// The accepted socket's SO_MARK: mesh-node's delivery mark
    /// (`mesh_common::DELIVERY_MARK`) when mesh-node delivered the connection,
    /// 0 when it came straight from the caller.
    #[serde(default)]
    pub mark: u32,
}

impl Hello {
    /// The connection was delivered by the server's node proxy.
    pub fn via_node_proxy(&self) -> bool {
        self.mark == mesh_common::DELIVERY_MARK
    }

    /// The IP of the peer the server saw.
    pub fn peer_ip(&self) -> Option<std::net::IpAddr> {
        self.peer.parse::<SocketAddr>().ok().map(|a| a.ip())
    }
}

/// The SO_MARK of a socket.
fn mark_of(conn: &TcpStream) -> std::io::Result<u32> {
    use std::os::fd::AsRawFd;
    let mut mark: u32 = 0;
    let mut len = std::mem::size_of::<u32>() as libc::socklen_t;
    // SAFETY: `mark` and `len` are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MARK,
            (&mut mark as *mut u32).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(mark)
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SendReport {
    pub hello: Hello,
    pub local: String,
    pub sent: u64,
    pub received: u64,
    pub intact: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoadReport {
    pub kind: String,
    pub seconds: f64,
    pub operations: u64,
    pub bytes: u64,
    /// Latencies in microseconds (request/response only).
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServeMode {
    Echo,
    Sink,
}

/// Serves forever on `addr` (`0.0.0.0:<port>` for all addresses), a thread
/// per connection.
pub fn serve(name: &str, addr: SocketAddr, mode: ServeMode) -> Result<()> {
    let listener = TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
    println!("listening on {}", listener.local_addr()?);
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let name = name.to_string();
        std::thread::spawn(move || {
            let _ = serve_one(&name, conn, mode);
        });
    }
    Ok(())
}

fn serve_one(name: &str, mut conn: TcpStream, mode: ServeMode) -> Result<()> {
    conn.set_nodelay(true)?;
    let hello = Hello {
        server: name.to_string(),
        local: conn.local_addr()?.to_string(),
        peer: conn.peer_addr()?.to_string(),
        mark: mark_of(&conn)?,
    };
    let mut line = serde_json::to_string(&hello)?;
    line.push('\n');
    conn.write_all(line.as_bytes())?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut total: u64 = 0;
    loop {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if mode == ServeMode::Echo {
            conn.write_all(&buf[..n])?;
        }
    }
    if mode == ServeMode::Sink {
        conn.write_all(format!("{total}\n").as_bytes())?;
    }
    conn.shutdown(Shutdown::Write)?;
    Ok(())
}

/// The deterministic payload byte at offset `i` (marker first, then a pattern).
fn payload_byte(marker: &[u8], i: u64) -> u8 {
    if (i as usize) < marker.len() {
        marker[i as usize]
    } else {
        (i.wrapping_mul(31) ^ (i >> 8)) as u8
    }
}

fn connect(to: SocketAddr, timeout: Duration) -> Result<(TcpStream, BufReader<TcpStream>, Hello)> {
    let conn =
        TcpStream::connect_timeout(&to, timeout).with_context(|| format!("connecting to {to}"))?;
    conn.set_nodelay(true)?;
    conn.set_read_timeout(Some(timeout))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .with_context(|| format!("reading the greeting from {to}"))?;
    let hello: Hello = serde_json::from_str(line.trim())
        .with_context(|| format!("greeting from {to} is not JSON: {line:?}"))?;
    Ok((conn, reader, hello))
}

/// Sends `bytes` bytes (starting with `marker`) and checks the echo.
pub fn send(to: SocketAddr, bytes: u64, marker: &str, timeout: Duration) -> Result<SendReport> {
    let (mut conn, mut reader, hello) = connect(to, timeout)?;
    let local = conn.local_addr()?.to_string();
    let marker_bytes = marker.as_bytes().to_vec();
    let m2 = marker_bytes.clone();
    let checker = std::thread::spawn(move || -> Result<(u64, bool)> {
        let mut buf = vec![0u8; 256 * 1024];
        let mut got: u64 = 0;
        let mut intact = true;
        loop {
            let n = reader.read(&mut buf).context("reading the echo")?;
            if n == 0 {
                break;
            }
            for (j, b) in buf[..n].iter().enumerate() {
                if *b != payload_byte(&m2, got + j as u64) {
                    intact = false;
                }
            }
            got += n as u64;
        }
        Ok((got, intact))
    });
    let mut chunk = vec![0u8; 256 * 1024];
    let mut sent: u64 = 0;
    while sent < bytes {
        let n = ((bytes - sent) as usize).min(chunk.len());
        for (j, b) in chunk[..n].iter_mut().enumerate() {
            *b = payload_byte(&marker_bytes, sent + j as u64);
        }
        conn.write_all(&chunk[..n]).context("sending")?;
        sent += n as u64;
    }
    conn.shutdown(Shutdown::Write)?;
    let (received, same) = checker
        .join()
        .map_err(|_| anyhow::anyhow!("checker thread panicked"))??;
    Ok(SendReport {
        hello,
        local,
        sent,
        received,
        intact: same && received == sent,
    })
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(idx).copied()
}

/// Request/response of `size` bytes on each of `conns` connections, at
/// `rate` per second in all (0 = as fast as possible), for `secs` seconds.
pub fn request_response(
    to: SocketAddr,
    size: usize,
    rate: u64,
    secs: f64,
    conns: usize,
) -> Result<LoadReport> {
    let conns = conns.max(1);
    let per_conn_rate = rate as f64 / conns as f64;
    let start = Instant::now();
    let workers: Vec<_> = (0..conns)
        .map(|_| {
            std::thread::spawn(move || -> Result<Vec<f64>> {
                let (mut conn, mut reader, _) = connect(to, Duration::from_secs(10))?;
                let req = vec![0x5au8; size];
                let mut resp = vec![0u8; size];
                let mut lat = Vec::new();
                let period =
                    (per_conn_rate > 0.0).then(|| Duration::from_secs_f64(1.0 / per_conn_rate));
                let mut next = Instant::now();
                while start.elapsed().as_secs_f64() < secs {
                    if let Some(p) = period {
                        let now = Instant::now();
                        if next > now {
                            std::thread::sleep(next - now);
                        }
                        next += p;
                    }
                    let t = Instant::now();
                    conn.write_all(&req)?;
                    reader.read_exact(&mut resp)?;
                    lat.push(t.elapsed().as_secs_f64() * 1e6);
                }
                Ok(lat)
            })
        })
        .collect();
    let mut lat = Vec::new();
    for w in workers {
        lat.extend(w.join().map_err(|_| anyhow::anyhow!("worker panicked"))??);
    }
    let seconds = start.elapsed().as_secs_f64();
    let ops = lat.len() as u64;
    lat.sort_by(|a, b| a.total_cmp(b));
    Ok(LoadReport {
        kind: "rr".into(),
        seconds,
        operations: ops,
        bytes: ops * size as u64 * 2,
        p50_us: percentile(&lat, 0.50),
        p99_us: percentile(&lat, 0.99),
    })
}

/// Opens `count` connections, prints "holding N", keeps them for `secs`.
pub fn hold(to: SocketAddr, count: usize, secs: f64) -> Result<()> {
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        held.push(connect(to, Duration::from_secs(10))?);
    }
    println!("holding {}", held.len());
    std::thread::sleep(Duration::from_secs_f64(secs));
    Ok(())
}

/// One stream of bulk data to a sink server for `secs` seconds.
pub fn bulk(to: SocketAddr, secs: f64) -> Result<LoadReport> {
    let (mut conn, mut reader, _) = connect(to, Duration::from_secs(30))?;
    let chunk = vec![0xa5u8; 256 * 1024];
    let start = Instant::now();
    let mut sent: u64 = 0;
    while start.elapsed().as_secs_f64() < secs {
        conn.write_all(&chunk)?;
        sent += chunk.len() as u64;
    }
    conn.shutdown(Shutdown::Write)?;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let seconds = start.elapsed().as_secs_f64();
    let counted: u64 = line
        .trim()
        .parse()
        .with_context(|| format!("sink answered {line:?}"))?;
    if counted != sent {
        bail!("sink counted {counted} bytes, {sent} sent");
    }
    Ok(LoadReport {
        kind: "bulk".into(),
        seconds,
        operations: 1,
        bytes: sent,
        p50_us: None,
        p99_us: None,
    })
}

/// How a [`stream`] ended.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StreamReport {
    pub kind: String,
    /// Round trips completed.
    pub echoes: u64,
    /// `"time limit"`, or what ended it (EOF, a reset, a bad echo).
    pub ended: String,
    pub seconds: f64,
}

/// One long-lived connection: prints `stream open` once greeted, then
/// `echo N` after each round trip of a small message every `interval`,
/// until the connection ends or `secs` pass.
pub fn stream(to: SocketAddr, interval: Duration, secs: f64) -> Result<StreamReport> {
    let (mut conn, mut reader, _) = connect(to, Duration::from_secs(10))?;
    println!("stream open");
    let start = Instant::now();
    let mut echoes = 0u64;
    let ended = loop {
        if start.elapsed().as_secs_f64() >= secs {
            break "time limit".to_string();
        }
        let msg = format!("{echoes:016}");
        if let Err(e) = conn.write_all(msg.as_bytes()) {
            break format!("write: {e}");
        }
        let mut back = [0u8; 16];
        match reader.read_exact(&mut back) {
            Ok(()) if back == msg.as_bytes() => {}
            Ok(()) => break format!("echo {echoes} came back altered"),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break "EOF".to_string(),
            Err(e) => break format!("read: {e}"),
        }
        echoes += 1;
        println!("echo {echoes}");
        std::thread::sleep(interval);
    };
    Ok(StreamReport {
        kind: "stream".into(),
        echoes,
        ended,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// New connections per second: connect, read the greeting, close.
pub fn connections(to: SocketAddr, secs: f64) -> Result<LoadReport> {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        let (conn, _, _) = connect(to, Duration::from_secs(10))?;
        drop(conn);
        n += 1;
    }
    Ok(LoadReport {
        kind: "cps".into(),
        seconds: start.elapsed().as_secs_f64(),
        operations: n,
        bytes: 0,
        p50_us: None,
        p99_us: None,
    })
}
