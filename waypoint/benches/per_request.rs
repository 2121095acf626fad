//! Per-request CPU cost of the waypoint, without root or namespaces.
//!
//! A keep-alive HTTP/1.1 client sends GETs answered with 1 KiB by a
//! trivial hyper backend, directly and through a `Waypoint`
//! (`StaticDiscovery` + `TcpConnector`, one VirtualService route), all on
//! 127.0.0.1 and all on ONE thread (a current-thread tokio runtime), so
//! the thread's CPU time and callgrind's instruction count cover client,
//! backend and waypoint alike; the waypoint's cost is the difference to
//! the direct run.
//!
//! ```text
//! # CPU µs per request of each mode (thread CPU time, not wall time):
//! cargo bench -p waypoint --bench per_request
//! # instructions per request: two runs of a mode under callgrind, the
//! # difference divided by the difference in requests (removes set-up):
//! B=$(ls -t target/release/deps/per_request-* | grep -v '\.d$' | head -1)
//! for n in 2000 4000; do valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.$n \
//!   $B --mode waypoint --requests $n 2>&1 | grep -E 'refs|Collected'; done
//! ```
//!
//! Modes: `direct`, `waypoint` (access log on, formatted by the same
//! tracing-subscriber fmt layer as the binary into /dev/null), `nolog`
//! (access log off). Without `--mode`, all three run, alternating rounds.
//!
//! The waypoint's share (mode minus `direct`; callgrind counts user space
//! only, CPU time includes the kernel's four extra socket operations):
//!
//! | | instructions, log / no log | CPU µs, log / no log |
//! |---|---|---|
//! | before the series cache etc. | 123k / 98k | 25 / 21 |
//! | after | 86k / 74k | 20 / 17 |

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use waypoint::{Config, Endpoint, StaticDiscovery, TcpConnector, Waypoint};

const HOST: &str = "reviews.bookinfo.svc.cluster.local";

fn config() -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: bookinfo}}
spec:
  hosts: [{HOST}]
  http:
  - match:
    - uri: {{prefix: /api}}
    route:
    - destination: {{host: {HOST}}}
  - route:
    - destination: {{host: {HOST}}}
"
    )
}

async fn backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let body = Bytes::from(vec![b'x'; 1024]);
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let _ = s.set_nodelay(true);
            let body = body.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req: Request<Incoming>| {
                    let body = body.clone();
                    async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

async fn waypoint(backend: SocketAddr, access_log: bool) -> SocketAddr {
    let (cfg, issues) = Config::from_yaml(&config(), "bench.yaml");
    assert!(issues.is_empty(), "{issues:?}");
    let disc = StaticDiscovery::new().with(
        HOST,
        vec![Endpoint::new(
            backend,
            &[("app", "reviews"), ("version", "v1")],
        )],
    );
    let wp = Waypoint::new(cfg, Arc::new(disc), Arc::new(TcpConnector));
    wp.telemetry().set_access_log(access_log);
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(wp.serve(l));
    addr
}

/// A keep-alive client: `n` GETs on one connection.
async fn drive(addr: SocketAddr, n: u64) {
    let s = TcpStream::connect(addr).await.expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let (mut tx, conn) = http1::handshake(TokioIo::new(s)).await.expect("handshake");
    tokio::spawn(conn);
    for _ in 0..n {
        let req = Request::builder()
            .uri("/reviews/0")
            .header("host", HOST)
            .header("user-agent", "bench")
            .header("accept", "*/*")
            .body(Empty::<Bytes>::new())
            .expect("request");
        let resp = tx.send_request(req).await.expect("response");
        assert!(resp.status().is_success(), "{}", resp.status());
        let b = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(b.len(), 1024);
    }
}

/// CPU time of this thread (the whole current-thread runtime).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn main() {
    let mut mode: Option<String> = None;
    let mut requests: u64 = 20_000;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--mode" => mode = args.next(),
            "--requests" => {
                requests = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--requests N")
            }
            // `cargo bench` passes `--bench`; a filter is ignored.
            _ => {}
        }
    }
    // The binary's subscriber (fmt, env filter `info`), into /dev/null.
    let sink = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .expect("/dev/null");
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(Mutex::new(sink))
        .init();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let be = backend().await;
        let with_log = waypoint(be, true).await;
        let no_log = waypoint(be, false).await;
        let target = |m: &str| match m {
            "direct" => be,
            "waypoint" => with_log,
            "nolog" => no_log,
            o => panic!("unknown mode {o} (direct, waypoint, nolog)"),
        };
        if let Some(m) = mode {
            drive(target(&m), requests).await;
            return;
        }
        let modes = ["direct", "waypoint", "nolog"];
        // Warm up pools, allocator and metric families.
        for m in modes {
            drive(target(m), 1_000).await;
        }
        let rounds = 5;
        let mut cpu = [Duration::ZERO; 3];
        for _ in 0..rounds {
            for (i, m) in modes.iter().enumerate() {
                let t = thread_cpu();
                drive(target(m), requests / rounds).await;
                cpu[i] += thread_cpu() - t;
            }
        }
        let per = |d: Duration| d.as_secs_f64() * 1e6 / (requests / rounds * rounds) as f64;
        let direct = per(cpu[0]);
        eprintln!(
            "per-request CPU (client + backend + proxy, one thread), {requests} requests each:"
        );
        for (i, m) in modes.iter().enumerate() {
            let p = per(cpu[i]);
            if i == 0 {
                eprintln!("  {m:9} {p:7.2} µs");
            } else {
                eprintln!(
                    "  {m:9} {p:7.2} µs   waypoint's share {:7.2} µs",
                    p - direct
                );
            }
        }
    });
}
