//! The HBONE server: terminate mTLS, then turn each HTTP/2 `CONNECT` into an
//! [`InboundTunnel`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::RecvStream;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{timeout_at, Instant};
use tokio_rustls::TlsAcceptor;
use tracing::debug;

use super::stream::{HboneStream, TunnelHeaders};
use super::{
    HboneError, BAGGAGE, CONNECTION_WINDOW, FORWARDED, MAX_FRAME_SIZE, STREAM_WINDOW, TRACEPARENT,
};
use mesh_identity::{peer_identity, Identity};

/// TLS plus HTTP/2 handshake must finish within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// What timed out, in [`HboneError::Timeout`].
const HANDSHAKE: &str = "HBONE server handshake";
/// Concurrent streams a client may open on one connection (clients open a
/// new connection after about 100).
const MAX_CONCURRENT_STREAMS: u32 = 1000;

/// A `CONNECT` received from an authenticated peer, awaiting a decision.
/// Dropping it without [`accept`](Self::accept) or
/// [`reject`](Self::reject) resets the stream.
pub struct InboundTunnel {
    /// The client's identity, from its certificate.
    pub peer: Identity,
    /// The `:authority`: the destination `ip:port` the client asks for.
    pub target: SocketAddr,
    pub forwarded: Option<String>,
    pub baggage: Option<String>,
    pub traceparent: Option<String>,
    respond: SendResponse<Bytes>,
    recv: RecvStream,
}

impl std::fmt::Debug for InboundTunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundTunnel")
            .field("peer", &self.peer.to_string())
            .field("target", &self.target)
            .field("forwarded", &self.forwarded)
            .field("baggage", &self.baggage)
            .field("traceparent", &self.traceparent)
            .finish_non_exhaustive()
    }
}

impl InboundTunnel {
    /// Answer `200` and hand over the byte stream.
    pub fn accept(mut self) -> Result<HboneStream, HboneError> {
        let response = Response::builder()
            .status(StatusCode::OK)
            .body(())
            .map_err(|e| HboneError::InvalidRequest(e.to_string()))?;
        let send = self.respond.send_response(response, false)?;
        Ok(HboneStream::new(
            send,
            self.recv,
            self.peer,
            self.target,
            TunnelHeaders {
                forwarded: self.forwarded,
                baggage: self.baggage,
                traceparent: self.traceparent,
            },
            None,
        ))
    }

    /// Answer `status` (e.g. 401 for a policy denial, 503 when the target
    /// is unreachable) and end the stream.
    pub fn reject(mut self, status: StatusCode) {
        respond_status(&mut self.respond, status);
    }
}

fn respond_status(respond: &mut SendResponse<Bytes>, status: StatusCode) {
    let mut response = Response::new(());
    *response.status_mut() = status;
    if let Err(e) = respond.send_response(response, true) {
        debug!(error = %e, %status, "HBONE: could not send response");
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The h2 server settings HBONE uses.
fn h2_builder() -> h2::server::Builder {
    let mut builder = h2::server::Builder::new();
    builder
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS);
    builder
}

/// Serve HBONE on one accepted TCP connection until the client closes it.
///
/// Each well-formed `CONNECT` is passed to `on_tunnel`, which must not
/// block (spawn a task to accept and proxy). Other methods and authorities
/// that are not an `ip:port` get `400`; the connection stays up. When
/// `drain` becomes `true` the server sends GOAWAY: no new streams, the
/// existing ones run to completion, then this returns.
pub async fn serve_connection<F>(
    tcp: TcpStream,
    tls: Arc<rustls::ServerConfig>,
    drain: watch::Receiver<bool>,
    on_tunnel: F,
) -> Result<(), HboneError>
where
    F: FnMut(InboundTunnel) + Send,
{
    let remote = tcp.peer_addr()?;
    tcp.set_nodelay(true)?;
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let tls = timeout_at(deadline, TlsAcceptor::from(tls).accept(tcp))
        .await
        .map_err(|_| HboneError::Timeout(HANDSHAKE))?
        .map_err(|source| HboneError::Tls {
            peer: remote,
            source,
        })?;
    let peer = peer_identity(tls.get_ref().1.peer_certificates().unwrap_or_default())?;
    serve_authenticated(tls, peer, remote, deadline, drain, on_tunnel).await
}

/// [`serve_connection`] after TLS: HBONE's HTTP/2 on a byte stream whose
/// client is already authenticated as `peer`. `remote` is for the logs;
/// the HTTP/2 handshake must finish by `handshake_deadline`. Public so that
/// the request path, h2's parsing included, can be fuzzed without TLS
/// (mesh-fuzz); the node serves only through [`serve_connection`].
pub async fn serve_authenticated<IO, F>(
    io: IO,
    peer: Identity,
    remote: SocketAddr,
    handshake_deadline: Instant,
    mut drain: watch::Receiver<bool>,
    mut on_tunnel: F,
) -> Result<(), HboneError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    F: FnMut(InboundTunnel),
{
    let mut conn = timeout_at(handshake_deadline, h2_builder().handshake::<_, Bytes>(io))
        .await
        .map_err(|_| HboneError::Timeout(HANDSHAKE))??;
    debug!(%remote, %peer, "HBONE connection accepted");

    let mut draining = false;
    let mut watch_drain = true;
    if *drain.borrow_and_update() {
        conn.graceful_shutdown();
        draining = true;
    }
    loop {
        tokio::select! {
            next = conn.accept() => match next {
                None => return Ok(()),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok((request, respond))) => {
                    if let Some(tunnel) = tunnel(request, respond, &peer) {
                        on_tunnel(tunnel);
                    }
                }
            },
            changed = drain.changed(), if watch_drain && !draining => match changed {
                Ok(()) => {
                    if *drain.borrow_and_update() {
                        debug!(%remote, "HBONE connection draining");
                        conn.graceful_shutdown();
                        draining = true;
                    }
                }
                // The sender is gone: nobody can ask us to drain any more.
                Err(_) => watch_drain = false,
            },
        }
    }
}

/// Vet one request; answers 400 itself when it is not a tunnel.
fn tunnel(
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    peer: &Identity,
) -> Option<InboundTunnel> {
    let (parts, recv) = request.into_parts();
    let connect = match vet_connect(&parts.method, &parts.uri, &parts.headers) {
        Ok(connect) => connect,
        Err(refusal) => {
            debug!(%refusal, "HBONE: request refused");
            respond_status(&mut respond, refusal.status());
            return None;
        }
    };
    Some(InboundTunnel {
        peer: peer.clone(),
        target: connect.target,
        forwarded: connect.headers.forwarded,
        baggage: connect.headers.baggage,
        traceparent: connect.headers.traceparent,
        respond,
        recv,
    })
}

/// What a well-formed HBONE `CONNECT` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VettedConnect {
    /// The `:authority`: the destination `ip:port`.
    pub target: SocketAddr,
    pub headers: TunnelHeaders,
}

/// Why a request on the HBONE port is not a tunnel (answered `400`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConnectRefusal {
    #[error("method {0} is not CONNECT")]
    NotConnect(Method),
    #[error("CONNECT has no authority")]
    NoAuthority,
    #[error("CONNECT authority {0:?} is not ip:port")]
    AuthorityNotIpPort(String),
}

impl ConnectRefusal {
    /// The status the server answers with.
    pub fn status(&self) -> StatusCode {
        StatusCode::BAD_REQUEST
    }
}

/// Vets the head of a request received on the HBONE port: it must be a
/// `CONNECT` to an `ip:port` authority (ztunnel takes the authority as a
/// socket address too; host names are for waypoints' clients, not HBONE).
/// The tunnel headers are kept when they are text; a value that is not
/// (e.g. a raw 0xff byte) is dropped, as if it had not been sent, because
/// they are informational only.
///
/// Pure: no I/O, so it can be unit-tested and fuzzed on its own.
pub fn vet_connect(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<VettedConnect, ConnectRefusal> {
    if method != Method::CONNECT {
        return Err(ConnectRefusal::NotConnect(method.clone()));
    }
    let authority = uri.authority().ok_or(ConnectRefusal::NoAuthority)?;
    let target = authority
        .as_str()
        .parse::<SocketAddr>()
        .map_err(|_| ConnectRefusal::AuthorityNotIpPort(authority.as_str().to_string()))?;
    Ok(VettedConnect {
        target,
        headers: TunnelHeaders {
            forwarded: header(headers, FORWARDED),
            baggage: header(headers, BAGGAGE),
            traceparent: header(headers, TRACEPARENT),
        },
    })
}

#[cfg(test)]
mod vet_tests {
    use http::HeaderValue;

    use super::*;

    fn uri(authority: &str) -> Uri {
        Uri::builder()
            .authority(authority)
            .build()
            .unwrap_or_else(|e| panic!("{authority}: {e}"))
    }

    #[test]
    fn a_connect_to_ip_port_is_a_tunnel_with_its_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            FORWARDED,
            HeaderValue::from_static("for=\"10.0.0.1:40000\";host=web.demo.svc.cluster.local"),
        );
        headers.insert(BAGGAGE, HeaderValue::from_static("k8s.cluster.name=c1"));
        let got = vet_connect(&Method::CONNECT, &uri("10.0.0.2:8080"), &headers);
        assert_eq!(
            got,
            Ok(VettedConnect {
                target: "10.0.0.2:8080".parse().unwrap(),
                headers: TunnelHeaders {
                    forwarded: Some(
                        "for=\"10.0.0.1:40000\";host=web.demo.svc.cluster.local".into()
                    ),
                    baggage: Some("k8s.cluster.name=c1".into()),
                    traceparent: None,
                },
            })
        );
        let v6 = vet_connect(&Method::CONNECT, &uri("[fd00::2]:80"), &HeaderMap::new());
        assert_eq!(v6.map(|c| c.target), Ok("[fd00::2]:80".parse().unwrap()));
    }

    #[test]
    fn other_methods_are_refused() {
        for method in [Method::GET, Method::POST, Method::OPTIONS] {
            assert_eq!(
                vet_connect(&method, &uri("10.0.0.2:8080"), &HeaderMap::new()),
                Err(ConnectRefusal::NotConnect(method.clone()))
            );
        }
    }

    #[test]
    fn an_authority_that_is_not_ip_port_is_refused() {
        for authority in [
            "web.demo.svc:80",
            "10.0.0.2",
            "10.0.0.2:99999",
            "user@10.0.0.2:80",
        ] {
            assert_eq!(
                vet_connect(&Method::CONNECT, &uri(authority), &HeaderMap::new()),
                Err(ConnectRefusal::AuthorityNotIpPort(authority.into())),
                "{authority}"
            );
        }
        let no_authority = Uri::from_static("/path");
        assert_eq!(
            vet_connect(&Method::CONNECT, &no_authority, &HeaderMap::new()),
            Err(ConnectRefusal::NoAuthority)
        );
        assert_eq!(
            ConnectRefusal::NoAuthority.status(),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn a_header_value_that_is_not_text_is_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, HeaderValue::from_bytes(b"00-\xff-01").unwrap());
        let got = vet_connect(&Method::CONNECT, &uri("10.0.0.2:8080"), &headers);
        assert_eq!(got.map(|c| c.headers), Ok(TunnelHeaders::default()));
    }
}
