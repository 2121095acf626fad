//! The HTTP sample app (`ambit-probe http` and `ambit-probe http-load`):
//! a server that can play the bookinfo roles (productpage → details and
//! reviews, reviews → ratings) and a keep-alive load client that reports
//! what it saw, for the L7 end-to-end tests and the waypoint benchmark.
//!
//! The server answers every request with `x-served-by: <name>` and a JSON
//! [`Answer`]; with `--call` it first calls its upstreams, passing on the
//! headers bookinfo's services pass on (`end-user`, `x-request-id`, the
//! trace headers, `authorization`), so a request to productpage walks the
//! whole application. It prints one line per request (`request <n> ...`)
//! so a test can count what reached it (a mirror, an ejected endpoint).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};

/// How the server behaves.
#[derive(Clone, Debug, Default)]
pub struct ServerSpec {
    pub name: String,
    pub port: u16,
    /// Every `n`th request is answered `fail_status` (1 = every request).
    pub fail_every: Option<u64>,
    pub fail_status: u16,
    /// Wait this long before answering.
    pub delay: Duration,
    /// Upstream URLs called (in order) before answering.
    pub calls: Vec<String>,
    /// Answer this many bytes instead of the JSON [`Answer`] (benchmarks).
    pub payload: Option<usize>,
}

/// What the server answers, as JSON.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Answer {
    pub served_by: String,
    pub method: String,
    pub path: String,
    pub host: String,
    /// The request headers the tests look at (lower-case names).
    pub headers: BTreeMap<String, String>,
    pub upstream: Vec<UpstreamAnswer>,
}

/// One upstream call's outcome.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct UpstreamAnswer {
    pub url: String,
    pub status: u16,
    /// The upstream's [`Answer`] when it sent one.
    pub answer: Option<Box<Answer>>,
}

/// Headers bookinfo's services pass to their upstreams (and echo back in
/// [`Answer::headers`]).
const PROPAGATED: &[&str] = &[
    "end-user",
    "x-request-id",
    "traceparent",
    "tracestate",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "b3",
    "authorization",
];

/// Further request headers echoed back in [`Answer::headers`].
const SHOWN: &[&str] = &["x-forwarded-proto", "x-forwarded-client-cert"];

/// Serves forever on `0.0.0.0:port`, HTTP/1.1 and HTTP/2 (prior knowledge).
pub async fn serve(spec: ServerSpec) -> Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", spec.port))
        .await
        .with_context(|| format!("binding port {}", spec.port))?;
    println!("listening on {} (http)", listener.local_addr()?);
    let spec = Arc::new(spec);
    let count = Arc::new(AtomicU64::new(0));
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(a) => a,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (spec, count) = (spec.clone(), count.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let (spec, count) = (spec.clone(), count.clone());
                async move { Ok::<_, Infallible>(answer(&spec, &count, req).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

async fn answer(
    spec: &ServerSpec,
    count: &AtomicU64,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let n = count.fetch_add(1, Ordering::Relaxed) + 1;
    let (parts, body) = req.into_parts();
    // Drain the body so a keep-alive connection stays usable.
    let _ = body.collect().await;
    if let Some(size) = spec.payload {
        // The benchmark's answer: no log line, no JSON.
        let mut r = Response::new(Full::new(Bytes::from(vec![b'x'; size])));
        if let Ok(v) = HeaderValue::from_str(&spec.name) {
            r.headers_mut().insert("x-served-by", v);
        }
        return r;
    }
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .unwrap_or("")
        .to_string();
    println!(
        "request {n} {} {} host={host} end-user={}",
        parts.method,
        parts.uri.path(),
        header_str(&parts.headers, "end-user").unwrap_or("-")
    );
    if !spec.delay.is_zero() {
        tokio::time::sleep(spec.delay).await;
    }
    let mut upstream = Vec::new();
    for url in &spec.calls {
        upstream.push(call_upstream(url, &parts.headers).await);
    }
    let failing = spec
        .fail_every
        .is_some_and(|k| k > 0 && n.is_multiple_of(k));
    let status = if failing {
        StatusCode::from_u16(spec.fail_status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
    } else {
        StatusCode::OK
    };
    let headers = PROPAGATED
        .iter()
        .chain(SHOWN)
        .filter_map(|h| Some((h.to_string(), header_str(&parts.headers, h)?.to_string())))
        .collect();
    let a = Answer {
        served_by: spec.name.clone(),
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default(),
        host,
        headers,
        upstream,
    };
    let body = serde_json::to_vec(&a).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(&spec.name) {
        r.headers_mut().insert("x-served-by", v);
    }
    r
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

async fn call_upstream(url: &str, incoming: &HeaderMap) -> UpstreamAnswer {
    let mut headers = HeaderMap::new();
    for name in PROPAGATED {
        if let Some(v) = incoming.get(*name) {
            headers.insert(HeaderName::from_static(name), v.clone());
        }
    }
    match get_once(url, headers).await {
        Ok((status, body)) => UpstreamAnswer {
            url: url.to_string(),
            status,
            answer: serde_json::from_slice(&body).ok().map(Box::new),
        },
        Err(_) => UpstreamAnswer {
            url: url.to_string(),
            status: 0,
            answer: None,
        },
    }
}

/// One GET on a fresh connection.
async fn get_once(url: &str, headers: HeaderMap) -> Result<(u16, Bytes)> {
    let target = Target::parse(url)?;
    let mut conn = Conn::open(&target, false).await?;
    let (status, _, body) = conn.request(&target, &headers).await?;
    Ok((status, body))
}

/// A parsed `http://host:port/path` URL.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: String,
    pub authority: String,
    pub path: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target> {
        let uri: Uri = url.parse().with_context(|| format!("bad URL {url:?}"))?;
        if uri.scheme_str() != Some("http") {
            bail!("{url}: only http:// URLs are supported");
        }
        let Some(auth) = uri.authority() else {
            bail!("{url}: no host");
        };
        let port = auth.port_u16().unwrap_or(80);
        Ok(Target {
            addr: format!("{}:{port}", auth.host()),
            authority: auth.as_str().to_string(),
            path: uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/".into()),
        })
    }
}

/// One client connection, HTTP/1.1 keep-alive or HTTP/2 prior knowledge.
enum Conn {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Conn {
    async fn open(t: &Target, h2: bool) -> Result<Conn> {
        let tcp = TcpStream::connect(&t.addr)
            .await
            .with_context(|| format!("connecting to {}", t.addr))?;
        let _ = tcp.set_nodelay(true);
        let io = TokioIo::new(tcp);
        if h2 {
            let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .context("HTTP/2 handshake")?;
            tokio::spawn(conn);
            Ok(Conn::H2(send))
        } else {
            let (send, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .context("HTTP/1.1 handshake")?;
            tokio::spawn(conn);
            Ok(Conn::H1(send))
        }
    }

    fn is_closed(&self) -> bool {
        match self {
            Conn::H1(s) => s.is_closed(),
            Conn::H2(s) => s.is_closed(),
        }
    }

    async fn request(
        &mut self,
        t: &Target,
        headers: &HeaderMap,
    ) -> Result<(u16, Option<String>, Bytes)> {
        let uri = match self {
            Conn::H1(_) => t.path.clone(),
            Conn::H2(_) => format!("http://{}{}", t.authority, t.path),
        };
        let mut req = Request::get(uri).body(Full::new(Bytes::new()))?;
        *req.headers_mut() = headers.clone();
        if matches!(self, Conn::H1(_)) && !req.headers().contains_key(http::header::HOST) {
            req.headers_mut()
                .insert(http::header::HOST, HeaderValue::from_str(&t.authority)?);
        }
        let resp = match self {
            Conn::H1(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
            Conn::H2(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
        };
        let status = resp.status().as_u16();
        let served_by = header_str(resp.headers(), "x-served-by").map(str::to_string);
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, served_by, body))
    }
}

/// What the load client asks for.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    pub url: String,
    pub requests: u64,
    pub concurrency: usize,
    pub headers: Vec<(String, String)>,
    /// Requests per second in all (0: as fast as possible).
    pub rate: u64,
    /// Run for this long instead of a number of requests.
    pub duration: Option<Duration>,
    pub http2: bool,
    /// Keep (a sample of) the answers' bodies in the report.
    pub keep_bodies: usize,
}

/// What the load client saw.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HttpLoadReport {
    pub requests: u64,
    /// Status code → count.
    pub by_status: BTreeMap<u16, u64>,
    /// `x-served-by` → count (`-` when absent).
    pub by_server: BTreeMap<String, u64>,
    /// Requests that got no response (connection errors).
    pub errors: u64,
    pub first_error: Option<String>,
    pub seconds: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    /// The first few bodies, for assertions on content.
    pub bodies: Vec<String>,
}

/// Runs the load and reports; each worker holds one keep-alive connection
/// (reopened when the server closes it).
pub async fn load(spec: LoadSpec) -> Result<HttpLoadReport> {
    let target = Arc::new(Target::parse(&spec.url)?);
    let mut headers = HeaderMap::new();
    for (k, v) in &spec.headers {
        headers.append(
            HeaderName::from_bytes(k.trim().as_bytes()).with_context(|| format!("header {k}"))?,
            HeaderValue::from_str(v.trim()).with_context(|| format!("header {k}: {v}"))?,
        );
    }
    let headers = Arc::new(headers);
    let issued = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = spec.duration.map(|d| start + d);
    let workers = spec.concurrency.max(1);
    // Each worker paces itself to its share of the rate.
    let per_worker_gap =
        (spec.rate > 0).then(|| Duration::from_secs_f64(workers as f64 / spec.rate as f64));
    // HTTP/2: every worker multiplexes its requests on one connection.
    let shared = match spec.http2 {
        true => match Conn::open(&target, true).await? {
            Conn::H2(send) => Some(send),
            Conn::H1(_) => None,
        },
        false => None,
    };
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (target, headers, issued, spec, shared) = (
            target.clone(),
            headers.clone(),
            issued.clone(),
            spec.clone(),
            shared.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut part = Partial::default();
            let mut conn: Option<Conn> = shared.map(Conn::H2);
            let mut next = Instant::now();
            loop {
                if let Some(d) = deadline {
                    if Instant::now() >= d {
                        break;
                    }
                } else if issued.fetch_add(1, Ordering::Relaxed) >= spec.requests {
                    break;
                }
                if let Some(gap) = per_worker_gap {
                    let now = Instant::now();
                    if next > now {
                        tokio::time::sleep(next - now).await;
                    }
                    next += gap;
                }
                let t0 = Instant::now();
                let result = async {
                    if conn.as_ref().is_none_or(Conn::is_closed) {
                        conn = Some(Conn::open(&target, spec.http2).await?);
                    }
                    let Some(c) = conn.as_mut() else {
                        bail!("no connection");
                    };
                    c.request(&target, &headers).await
                }
                .await;
                let us = t0.elapsed().as_secs_f64() * 1e6;
                match result {
                    Ok((status, served_by, body)) => {
                        part.latencies.push(us);
                        *part.by_status.entry(status).or_default() += 1;
                        *part
                            .by_server
                            .entry(served_by.unwrap_or_else(|| "-".into()))
                            .or_default() += 1;
                        if part.bodies.len() < spec.keep_bodies {
                            part.bodies
                                .push(String::from_utf8_lossy(&body).into_owned());
                        }
                    }
                    Err(e) => {
                        conn = None;
                        part.errors += 1;
                        part.first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            part
        }));
    }
    let mut report = HttpLoadReport::default();
    let mut latencies = Vec::new();
    for t in tasks {
        let p = t.await.context("load worker")?;
        latencies.extend(p.latencies);
        for (k, v) in p.by_status {
            *report.by_status.entry(k).or_default() += v;
        }
        for (k, v) in p.by_server {
            *report.by_server.entry(k).or_default() += v;
        }
        report.errors += p.errors;
        if report.first_error.is_none() {
            report.first_error = p.first_error;
        }
        let room = spec.keep_bodies.saturating_sub(report.bodies.len());
        report.bodies.extend(p.bodies.into_iter().take(room));
    }
    report.seconds = start.elapsed().as_secs_f64();
    report.requests = latencies.len() as u64 + report.errors;
    latencies.sort_by(f64::total_cmp);
    let pct = |q: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies[i.min(latencies.len() - 1)]
    };
    report.p50_us = pct(0.50);
    report.p99_us = pct(0.99);
    report.max_us = latencies.last().copied().unwrap_or(0.0);
    Ok(report)
}

#[derive(Default)]
struct Partial {
    latencies: Vec<f64>,
    by_status: BTreeMap<u16, u64>,
    by_server: BTreeMap<String, u64>,
    errors: u64,
    first_error: Option<String>,
    bodies: Vec<String>,
}
