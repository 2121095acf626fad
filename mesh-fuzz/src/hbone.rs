//! The HBONE server's input: the request head of a `CONNECT`, alone and
//! as HTTP/2 frames.

use std::net::SocketAddr;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use mesh_hbone::{serve_authenticated, vet_connect, InboundTunnel};
use mesh_identity::Identity;

use crate::Reached;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A request head as text: the method on the first line, the URI on the
/// second (`10.0.0.2:8080` for a CONNECT), then one `name: value` header a
/// line. A method, URI or header that `http` refuses to represent never
/// reaches the vetting (h2 refuses it first): the line is dropped, or for
/// the method and URI the input ends there.
pub fn hbone_connect(data: &[u8]) -> Reached {
    let mut lines = data.split(|&b| b == b'\n');
    let Some(Ok(method)) = lines.next().map(Method::from_bytes) else {
        return Reached::Undecoded;
    };
    let Some(Ok(uri)) = lines.next().map(Uri::try_from) else {
        return Reached::Undecoded;
    };
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            headers.append(name, value);
        }
    }
    match vet_connect(&method, &uri, &headers) {
        Ok(connect) => {
            // A tunnel is a CONNECT to the socket address it names.
            assert_eq!(method, Method::CONNECT);
            let authority = uri.authority().map(|a| a.as_str());
            assert_eq!(
                authority.and_then(|a| a.parse::<SocketAddr>().ok()),
                Some(connect.target)
            );
            Reached::Accepted
        }
        Err(refusal) => {
            assert_eq!(refusal.status(), StatusCode::BAD_REQUEST);
            Reached::Refused
        }
    }
}

/// Longer than any input takes: the server must end once the client has
/// sent everything and closed its side.
const SERVE_LIMIT: Duration = Duration::from_secs(10);

/// Times the client side yields to the server before its EOF.
const SETTLE_POLLS: usize = 16;

thread_local! {
    static RUNTIME: Option<Runtime> = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok();
}

/// `data` as everything an authenticated client sends on one HBONE
/// connection (preface, SETTINGS, HEADERS, DATA, ...), then its EOF, to
/// [`serve_authenticated`] over an in-memory pipe. Tunnels to an even port
/// are accepted and read to their end (mesh-hbone's stream), the others
/// rejected; what the server answers is read and dropped.
pub fn hbone_h2(data: &[u8]) -> Reached {
    RUNTIME.with(|rt| match rt {
        Some(rt) => rt.block_on(serve_bytes(data)),
        None => Reached::Undecoded,
    })
}

async fn serve_bytes(data: &[u8]) -> Reached {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let (mut from_server, mut to_server) = tokio::io::split(client);
    let (_drain_tx, drain) = watch::channel(false);
    let peer = Identity::new("cluster.local", "demo", "client");
    let remote: SocketAddr = ([127, 0, 0, 1], 40000).into();
    let deadline = tokio::time::Instant::now() + SERVE_LIMIT;
    let mut tunnels = 0usize;
    let mut readers = Vec::new();
    let on_tunnel = |tunnel: InboundTunnel| {
        tunnels += 1;
        if let Some(reader) = answer(tunnel) {
            readers.push(reader);
        }
    };
    let serve = serve_authenticated(server, peer, remote, deadline, drain, on_tunnel);
    let send = async {
        // The server may close first (a protocol error): then the rest is
        // not for it.
        let _ = to_server.write_all(data).await;
        // h2 drops what it has not handed out yet when the client's EOF
        // comes in the same read: let the server take the streams first.
        // (Deterministic: one thread, an in-memory pipe.)
        for _ in 0..SETTLE_POLLS {
            tokio::task::yield_now().await;
        }
        let _ = to_server.shutdown().await;
    };
    let discard = async {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = from_server.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    let all = async { tokio::join!(serve, send, discard) };
    let Ok((served, (), ())) = tokio::time::timeout(SERVE_LIMIT, all).await else {
        panic!("the HBONE server still runs {SERVE_LIMIT:?} after the client's EOF");
    };
    // The connection is gone: every tunnel ends too.
    for reader in readers {
        if tokio::time::timeout(SERVE_LIMIT, reader).await.is_err() {
            panic!("a tunnel still runs {SERVE_LIMIT:?} after its connection ended");
        }
    }
    match (served, tunnels) {
        (_, 1..) => Reached::Accepted,
        (Ok(()), 0) => Reached::Refused,
        (Err(_), 0) => Reached::Undecoded,
    }
}

/// Accepts a tunnel to an even port (the task reading it), rejects the others.
fn answer(tunnel: InboundTunnel) -> Option<JoinHandle<()>> {
    if tunnel.target.port() & 1 == 1 {
        tunnel.reject(StatusCode::UNAUTHORIZED);
        return None;
    }
    let mut stream = tunnel.accept().ok()?;
    Some(tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                // The client's END_STREAM: answer, then half-close.
                let _ = stream.write_all(b"pong\n").await;
                let _ = stream.shutdown().await;
                break;
            }
        }
    }))
}
