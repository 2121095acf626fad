//! The admin server (15000 by default, node-local): readiness, metrics in
//! Prometheus text form under Istio's names, and the last config error.
//! It runs on its own thread and runtime, away from the data path.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use tokio::sync::watch;
use tracing::{error, warn};

use crate::proxy::Metrics;

pub fn spawn(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    ready: watch::Receiver<bool>,
    config_error: watch::Receiver<Option<String>>,
) {
    let spawned = std::thread::Builder::new()
        .name("mesh-admin".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    error!(error = %e, "admin runtime");
                    return;
                }
            };
            rt.block_on(serve(addr, metrics, ready, config_error));
        });
    if let Err(e) = spawned {
        error!(error = %e, "starting the admin thread");
    }
}

async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    ready: watch::Receiver<bool>,
    config_error: watch::Receiver<Option<String>>,
) {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            warn!(%addr, error = %e, "admin server not started");
            return;
        }
    };
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        let ready = ready.clone();
        let config_error = config_error.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let body = respond(&req, &metrics, &ready, &config_error);
                async move { Ok::<_, Infallible>(body) }
            });
            let io = hyper_util::rt::TokioIo::new(tcp);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await;
        });
    }
}

fn respond(
    req: &Request<hyper::body::Incoming>,
    metrics: &Metrics,
    ready: &watch::Receiver<bool>,
    config_error: &watch::Receiver<Option<String>>,
) -> Response<Full<Bytes>> {
    let (status, body) = match req.uri().path() {
        "/healthz/ready" if *ready.borrow() => (StatusCode::OK, "ready\n".to_string()),
        "/healthz/ready" => (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_string()),
        "/metrics" => (StatusCode::OK, metrics.render()),
        "/config_error" => match config_error.borrow().as_ref() {
            Some(e) => (StatusCode::OK, format!("{e}\n")),
            None => (StatusCode::OK, "none\n".to_string()),
        },
        _ => (StatusCode::NOT_FOUND, "not found\n".to_string()),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp
}
