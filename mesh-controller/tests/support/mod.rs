//! What the controller's integration tests share: a controller on loopback,
//! an ADS client's options as a node or a waypoint, a bounded wait on a
//! pushed view, and a plain GET on the status server.

// Each test binary uses part of this module.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_controller::{Controller, ControllerOptions};
use mesh_proto::type_urls;
use mesh_xds::XdsOptions;
use tokio::sync::watch;

/// A controller reading `folder`, on ephemeral loopback ports, polling the
/// folder every 50 ms; bootstrap tokens and CA files where given.
pub fn controller_options(
    folder: &Path,
    bootstrap: Option<&Path>,
    ca: Option<&Path>,
) -> ControllerOptions {
    let mut o = ControllerOptions::new(folder);
    o.listen = "127.0.0.1:0".parse().expect("loopback address");
    o.status_listen = "127.0.0.1:0".parse().expect("loopback address");
    o.bootstrap_dir = bootstrap.map(Path::to_path_buf);
    o.ca_dir = ca.map(Path::to_path_buf);
    o.poll_interval = Duration::from_millis(50);
    o
}

/// An ADS client of `c` as `node` (with that node's token), retrying fast.
pub fn node_client(c: &Controller, node: &str) -> XdsOptions {
    let mut o = XdsOptions::new(format!("http://{}", c.addr), node);
    o.token = c.tokens.token_of(node);
    o.initial_backoff = Duration::from_millis(50);
    o.max_backoff = Duration::from_millis(400);
    o
}

/// [`node_client`], also subscribed to the L7 type, as a waypoint is.
pub fn waypoint_client(c: &Controller, node: &str) -> XdsOptions {
    let mut o = node_client(c, node);
    o.extra_types = vec![type_urls::L7_RESOURCE.to_string()];
    o
}

/// Waits until the value pushed on `rx` satisfies `pred`, up to `within`;
/// panics with `describe` of the last value otherwise.
pub async fn wait_pushed<T>(
    rx: &mut watch::Receiver<Arc<T>>,
    within: Duration,
    pred: impl Fn(&T) -> bool,
    describe: impl Fn(&T) -> String,
) -> Arc<T> {
    let deadline = Instant::now() + within;
    loop {
        let v = rx.borrow_and_update().clone();
        if pred(&v) {
            return v;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "condition not met in {within:?}; last: {}",
            describe(&v)
        );
        let _ = tokio::time::timeout(left, rx.changed()).await;
    }
}

/// `GET path` over a fresh connection; the whole response as text.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the status server");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write the request");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read the response");
    out
}
