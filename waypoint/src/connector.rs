//! How the waypoint opens a byte stream to an upstream endpoint. Plain TCP
//! here; HBONE (mTLS + HTTP/2 CONNECT through `mesh_hbone`) plugs in
//! behind the same trait.

use std::future::Future;
use std::io;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::discovery::Endpoint;

/// A connected byte stream.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

pub type BoxIo = Box<dyn Io>;
pub type ConnectFuture<'a> = Pin<Box<dyn Future<Output = io::Result<BoxIo>> + Send + 'a>>;

/// Opens upstream connections. The pool applies `connectTimeout` around
/// `connect`; an error is a connect failure (`retryOn: connect-failure`).
pub trait Connector: Send + Sync + 'static {
    fn connect<'a>(&'a self, endpoint: &'a Endpoint) -> ConnectFuture<'a>;
}

/// Plain TCP to `endpoint.addr`, `TCP_NODELAY` set.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpConnector;

impl Connector for TcpConnector {
    fn connect<'a>(&'a self, endpoint: &'a Endpoint) -> ConnectFuture<'a> {
        Box::pin(async move {
            let s = TcpStream::connect(endpoint.addr).await?;
            s.set_nodelay(true)?;
            Ok(Box::new(s) as BoxIo)
        })
    }
}
