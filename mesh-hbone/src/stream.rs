//! One tunnel: an HTTP/2 stream as `AsyncRead + AsyncWrite`.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use h2::{Reason, RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::conn_state::StreamSlot;
use mesh_identity::Identity;

/// Largest single write handed to h2 (it is split into frames of at most
/// MAX_FRAME_SIZE by h2 itself).
const MAX_WRITE: usize = 1024 * 1024;

/// The optional headers that travelled with the `CONNECT`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TunnelHeaders {
    /// `forwarded`, e.g. `for="10.0.0.1:40000";host=web.demo.svc.cluster.local`.
    pub forwarded: Option<String>,
    pub baggage: Option<String>,
    pub traceparent: Option<String>,
}

/// A tunnel. Reads return the peer's bytes (EOF at the peer's END_STREAM);
/// writes send DATA frames; `shutdown` sends END_STREAM (half-close), after
/// which reading still works. Dropping the stream before both directions
/// ended resets it (RST_STREAM CANCEL).
pub struct HboneStream {
    send: SendStream<Bytes>,
    recv: RecvStream,
    /// Received but not yet read.
    pending: Bytes,
    read_eof: bool,
    write_closed: bool,
    peer: Identity,
    target: SocketAddr,
    headers: TunnelHeaders,
    // Held for its Drop: the client pool's stream count.
    _slot: Option<StreamSlot>,
}

impl std::fmt::Debug for HboneStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HboneStream")
            .field("peer", &self.peer.to_string())
            .field("target", &self.target)
            .field("read_eof", &self.read_eof)
            .field("write_closed", &self.write_closed)
            .finish_non_exhaustive()
    }
}

impl HboneStream {
    pub(crate) fn new(
        send: SendStream<Bytes>,
        recv: RecvStream,
        peer: Identity,
        target: SocketAddr,
        headers: TunnelHeaders,
        slot: Option<StreamSlot>,
    ) -> Self {
        HboneStream {
            send,
            recv,
            pending: Bytes::new(),
            read_eof: false,
            write_closed: false,
            peer,
            target,
            headers,
            _slot: slot,
        }
    }

    /// The other end's verified identity: the server's on the client side,
    /// the client's on the server side.
    pub fn peer_identity(&self) -> &Identity {
        &self.peer
    }

    /// The `:authority` of the `CONNECT`: the final destination.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// The headers sent (client side) or received (server side) with the
    /// `CONNECT`.
    pub fn headers(&self) -> &TunnelHeaders {
        &self.headers
    }

    /// The HTTP/2 stream id (for logs).
    pub fn stream_id(&self) -> u32 {
        self.send.stream_id().as_u32()
    }
}

/// An h2 error as an I/O error of a fitting kind.
pub(crate) fn h2_to_io(e: h2::Error) -> io::Error {
    if e.is_io() {
        if let Some(io) = e.into_io() {
            return io;
        }
        return io::Error::other("HTTP/2 I/O error");
    }
    let kind = if e.is_reset() || e.is_go_away() {
        io::ErrorKind::ConnectionReset
    } else {
        io::ErrorKind::Other
    };
    io::Error::new(kind, e)
}

impl AsyncRead for HboneStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending[..n]);
                this.pending.advance(n);
                // Reopen the window only for what the reader consumed. This
                // fails only once the stream was reset, when h2 has already
                // reclaimed the capacity itself.
                let _ = this.recv.flow_control().release_capacity(n);
                return Poll::Ready(Ok(()));
            }
            if this.read_eof || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => this.pending = data,
                Some(Err(e)) if e.reason() == Some(Reason::NO_ERROR) && e.is_remote() => {
                    // RST_STREAM(NO_ERROR): the peer is done; not a failure.
                    this.read_eof = true;
                }
                Some(Err(e)) => return Poll::Ready(Err(h2_to_io(e))),
                None => this.read_eof = true,
            }
        }
    }
}

impl AsyncWrite for HboneStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.write_closed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "HBONE stream: write after shutdown",
            )));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            let capacity = this.send.capacity();
            if capacity > 0 {
                let n = capacity.min(buf.len());
                this.send
                    .send_data(Bytes::copy_from_slice(&buf[..n]), false)
                    .map_err(h2_to_io)?;
                return Poll::Ready(Ok(n));
            }
            // Ask for capacity for this write (h2 counts it on top of what
            // is already buffered) and wait until some is assigned.
            this.send.reserve_capacity(buf.len().min(MAX_WRITE));
            match ready!(this.send.poll_capacity(cx)) {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Poll::Ready(Err(h2_to_io(e))),
                None => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "HBONE stream closed by the peer",
                    )))
                }
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // h2's connection task writes queued frames out on its own.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.write_closed {
            this.write_closed = true;
            // Release any reservation beyond what is buffered, then END_STREAM.
            this.send.reserve_capacity(0);
            this.send.send_data(Bytes::new(), true).map_err(h2_to_io)?;
        }
        Poll::Ready(Ok(()))
    }
}
