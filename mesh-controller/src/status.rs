//! What each xDS client has: connected or not, what was sent, what it
//! ACKed, its last NACK and why. Served as JSON over HTTP for
//! `meshctl proxy-status`:
//!
//! * `GET /debug/syncz`: `[{node, connected, peer, types: {type_url: {...}}}]`
//! * `GET /debug/config_error`: why the folder on disk is not in force (empty when it is)
//! * `GET /healthz/ready`

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Nack {
    pub nonce: String,
    pub version: String,
    pub message: String,
    pub at_unix: u64,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct TypeStatus {
    /// Snapshot version of the last response sent.
    pub sent_version: String,
    pub sent_nonce: String,
    /// How many resources of this type the client should now hold.
    pub resources: usize,
    /// Snapshot version of the last response ACKed.
    pub acked_version: String,
    pub acked_nonce: String,
    pub last_nack: Option<Nack>,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ClientStatus {
    pub node: String,
    pub connected: bool,
    pub peer: String,
    pub connected_at_unix: u64,
    pub disconnected_at_unix: Option<u64>,
    pub types: BTreeMap<String, TypeStatus>,
    #[serde(skip)]
    pub(crate) connection: u64,
}

/// Per-node status, the latest connection of each node.
#[derive(Debug, Default)]
pub struct StatusRegistry {
    clients: Mutex<BTreeMap<String, ClientStatus>>,
}

impl StatusRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ClientStatus>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn snapshot(&self) -> Vec<ClientStatus> {
        self.lock().values().cloned().collect()
    }

    pub fn get(&self, node: &str) -> Option<ClientStatus> {
        self.lock().get(node).cloned()
    }

    pub(crate) fn connected(&self, node: &str, connection: u64, peer: String) {
        self.lock().insert(
            node.to_string(),
            ClientStatus {
                node: node.to_string(),
                connected: true,
                peer,
                connected_at_unix: now(),
                disconnected_at_unix: None,
                types: BTreeMap::new(),
                connection,
            },
        );
    }

    pub(crate) fn disconnected(&self, node: &str, connection: u64) {
        if let Some(c) = self.lock().get_mut(node) {
            if c.connection == connection {
                c.connected = false;
                c.disconnected_at_unix = Some(now());
            }
        }
    }

    pub(crate) fn update(
        &self,
        node: &str,
        connection: u64,
        type_url: &str,
        f: impl FnOnce(&mut TypeStatus),
    ) {
        if let Some(c) = self.lock().get_mut(node) {
            if c.connection == connection {
                f(c.types.entry(type_url.to_string()).or_default());
            }
        }
    }
}

fn respond(status: u16, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

/// Serves the status endpoints on `listener` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<StatusRegistry>,
    errors: watch::Receiver<Option<String>>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let registry = registry.clone();
        let errors = errors.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let registry = registry.clone();
                let errors = errors.clone();
                async move {
                    let r = match req.uri().path() {
                        "/debug/syncz" => {
                            match serde_json::to_string_pretty(&registry.snapshot()) {
                                Ok(j) => respond(200, "application/json", j),
                                Err(e) => respond(500, "text/plain", e.to_string()),
                            }
                        }
                        "/debug/config_error" => respond(
                            200,
                            "text/plain",
                            errors.borrow().clone().unwrap_or_default(),
                        ),
                        "/healthz/ready" => respond(200, "text/plain", "ok\n".into()),
                        _ => respond(404, "text/plain", "not found\n".into()),
                    };
                    Ok::<_, Infallible>(r)
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await
            {
                tracing::debug!(error = %e, "status connection");
            }
        });
    }
}
