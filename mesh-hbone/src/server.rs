//! The HBONE server: terminate mTLS, then turn each HTTP/2 `CONNECT` into an
//! [`InboundTunnel`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::RecvStream;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::debug;

use super::stream::{HboneStream, TunnelHeaders};
use super::{
    HboneError, BAGGAGE, CONNECTION_WINDOW, FORWARDED, MAX_FRAME_SIZE, STREAM_WINDOW, TRACEPARENT,
};
use mesh_identity::{peer_identity, Identity};

/// TLS plus HTTP/2 handshake must finish within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
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
    mut drain: watch::Receiver<bool>,
    mut on_tunnel: F,
) -> Result<(), HboneError>
where
    F: FnMut(InboundTunnel) + Send,
{
    let remote = tcp.peer_addr()?;
    tcp.set_nodelay(true)?;
    let handshake = async {
        let tls = TlsAcceptor::from(tls)
            .accept(tcp)
            .await
            .map_err(|source| HboneError::Tls {
                peer: remote,
                source,
            })?;
        let peer = peer_identity(tls.get_ref().1.peer_certificates().unwrap_or_default())?;
        let conn = h2_builder().handshake::<_, Bytes>(tls).await?;
        Ok::<_, HboneError>((peer, conn))
    };
    let (peer, mut conn) = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
        .await
        .map_err(|_| HboneError::Timeout("HBONE server handshake"))??;
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
    if request.method() != Method::CONNECT {
        debug!(method = %request.method(), "HBONE: not a CONNECT");
        respond_status(&mut respond, StatusCode::BAD_REQUEST);
        return None;
    }
    let target = request
        .uri()
        .authority()
        .and_then(|a| a.as_str().parse::<SocketAddr>().ok());
    let Some(target) = target else {
        debug!(uri = %request.uri(), "HBONE: CONNECT authority is not ip:port");
        respond_status(&mut respond, StatusCode::BAD_REQUEST);
        return None;
    };
    let (parts, recv) = request.into_parts();
    Some(InboundTunnel {
        peer: peer.clone(),
        target,
        forwarded: header(&parts.headers, FORWARDED),
        baggage: header(&parts.headers, BAGGAGE),
        traceparent: header(&parts.headers, TRACEPARENT),
        respond,
        recv,
    })
}
