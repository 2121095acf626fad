//! HBONE: TCP tunnelled as HTTP/2 `CONNECT` streams over mutual TLS, as
//! Istio ambient's ztunnel speaks it (see HBONE.md).
//!
//! - [`HboneClient`]: one per source identity; pools and multiplexes
//!   connections per (destination identity, HBONE address).
//! - [`serve_connection`]: the server side of one accepted TCP connection;
//!   each `CONNECT` becomes an [`InboundTunnel`] to accept or reject
//!   (vetted by [`vet_connect`], a pure function).
//! - [`HboneStream`]: a tunnel, as `AsyncRead + AsyncWrite`.

mod alert;
mod client;
mod conn_state;
mod server;
mod stream;

use std::net::SocketAddr;

pub use client::{
    ConnectRequest, HboneClient, HboneClientOptions, PlainSocketFactory, SocketFactory,
};
pub use server::{
    serve_authenticated, serve_connection, vet_connect, ConnectRefusal, InboundTunnel,
    VettedConnect,
};
pub use stream::{HboneStream, TunnelHeaders};

use mesh_identity::IdentityError;

/// The HBONE port on every pod (and waypoint); the kernel programs know it
/// too, so it is defined beside them.
pub use mesh_common::HBONE_PORT;
/// HTTP/2 per-stream flow-control window.
pub const STREAM_WINDOW: u32 = 4 * 1024 * 1024;
/// HTTP/2 connection flow-control window (four stream windows).
pub const CONNECTION_WINDOW: u32 = 4 * STREAM_WINDOW;
/// HTTP/2 SETTINGS_MAX_FRAME_SIZE.
pub const MAX_FRAME_SIZE: u32 = 1024 * 1024;
/// Streams per pooled connection before the client opens another.
pub const MAX_STREAMS_PER_CONNECTION: usize = 100;

/// Header names sent alongside `CONNECT`.
pub const FORWARDED: &str = "forwarded";
pub const BAGGAGE: &str = "baggage";
pub const TRACEPARENT: &str = "traceparent";

#[derive(Debug, thiserror::Error)]
pub enum HboneError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS handshake with {peer}: {source}")]
    Tls {
        peer: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP/2: {0}")]
    H2(#[from] h2::Error),
    /// The peer sent a fatal TLS alert and closed, e.g. because it refused
    /// this side's certificate; `after` is how the failure surfaced here.
    #[error("{peer} sent TLS alert {alert:?} and closed the connection (after: {after})")]
    TlsAlert {
        peer: SocketAddr,
        alert: rustls::AlertDescription,
        after: Box<HboneError>,
    },
    /// The peer closed right after the TLS handshake without sending a byte
    /// or an alert, as a peer does that refuses this side's certificate
    /// after the handshake (or that is no HBONE server).
    #[error("{peer} closed the connection right after the TLS handshake, without a TLS alert or any data (it may have refused this side's certificate; after: {after})")]
    ClosedAfterHandshake {
        peer: SocketAddr,
        after: Box<HboneError>,
    },
    #[error("peer rejected CONNECT with status {0}")]
    Rejected(http::StatusCode),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("timed out during {0}")]
    Timeout(&'static str),
    #[error("invalid CONNECT request: {0}")]
    InvalidRequest(String),
}

#[cfg(test)]
mod tests;
