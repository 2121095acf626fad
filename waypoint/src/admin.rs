//! The admin HTTP server (Istio's `:15020`): `GET /metrics` (OpenMetrics
//! text) and `GET /healthz/ready`. It runs on its own thread with its own
//! single-threaded runtime, so scrapes never compete with the data path's
//! runtime workers.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::engine::Waypoint;
use crate::telemetry::METRICS_CONTENT_TYPE;

/// The default admin address, Istio's agent port.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:15020";

fn text(status: StatusCode, body: impl Into<Bytes>, ty: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ty));
    r
}

/// Answers one admin request.
pub fn answer<B>(wp: &Waypoint, req: &Request<B>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => text(StatusCode::OK, wp.metrics_text(), METRICS_CONTENT_TYPE),
        (&Method::GET, "/healthz/ready") => text(StatusCode::OK, "ready\n", "text/plain"),
        (&Method::GET, _) => text(StatusCode::NOT_FOUND, "not found\n", "text/plain"),
        _ => text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n", "text/plain"),
    }
}

/// Serves the admin endpoints on `listener` until it fails.
pub async fn serve(listener: TcpListener, wp: Arc<Waypoint>) {
    loop {
        let (s, _) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let wp = wp.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let r = answer(&wp, &req);
                async move { Ok::<_, Infallible>(r) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(s), svc)
                .await
            {
                tracing::debug!(error = %e, "admin connection ended");
            }
        });
    }
}

/// Binds `addr` (errors are reported here, before the thread starts) and
/// serves the admin endpoints on a thread of its own; returns the bound
/// address.
pub fn spawn(
    addr: SocketAddr,
    wp: Arc<Waypoint>,
) -> io::Result<(SocketAddr, std::thread::JoinHandle<()>)> {
    let std_listener = std::net::TcpListener::bind(addr)?;
    std_listener.set_nonblocking(true)?;
    let bound = std_listener.local_addr()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let thread = std::thread::Builder::new()
        .name("waypoint-admin".into())
        .spawn(move || {
            rt.block_on(async move {
                match TcpListener::from_std(std_listener) {
                    Ok(l) => serve(l, wp).await,
                    Err(e) => tracing::warn!(error = %e, "admin listener"),
                }
            })
        })?;
    Ok((bound, thread))
}
