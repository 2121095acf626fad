//! Keeping the TLS alert a peer sent before it closed.
//!
//! With TLS 1.3 a client's handshake completes before the server has checked
//! the client certificate; a server that refuses it sends a fatal alert and
//! closes. Whether the client then reads that alert or first fails to write
//! (the server's reset) is a race, and h2 keeps only the kind of the I/O
//! error for its streams ("stream closed because of a broken pipe"). So the
//! client's TLS stream is wrapped: any alert read is kept, and after a write
//! error the bytes already received are read so the alert in them is kept
//! too (the kernel keeps received data readable after a reset). A peer that
//! closes without a byte after the handshake is noted as well: that is how
//! a peer refusing the certificate only after the handshake ends.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use rustls::AlertDescription;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How the peer ended a connection that failed, when it said something.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PeerEnding {
    /// A fatal TLS alert.
    Alert(AlertDescription),
    /// A close before sending a single byte after the handshake, without an
    /// alert: what a peer that refuses the certificate after the handshake
    /// (or is no HBONE server) does.
    SilentClose,
}

#[derive(Debug, Default)]
struct Seen {
    ending: Option<PeerEnding>,
    read_any: bool,
}

/// What the peer sent on one connection, shared with whoever reports its errors.
#[derive(Clone, Debug, Default)]
pub(crate) struct AlertSlot(Arc<Mutex<Seen>>);

impl AlertSlot {
    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn get(&self) -> Option<PeerEnding> {
        self.seen().ending
    }

    fn keep_from(&self, e: &io::Error) {
        if let Some(rustls::Error::AlertReceived(alert)) = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            // An alert explains more than a silent close noted before it.
            let mut seen = self.seen();
            if !matches!(seen.ending, Some(PeerEnding::Alert(_))) {
                seen.ending = Some(PeerEnding::Alert(*alert));
            }
        } else if matches!(
            e.kind(),
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
        ) {
            // A close without close_notify (or a reset) before any data.
            self.keep_read(0);
        }
    }

    fn keep_read(&self, filled: usize) {
        let mut seen = self.seen();
        if filled > 0 {
            seen.read_any = true;
        } else if !seen.read_any && seen.ending.is_none() {
            seen.ending = Some(PeerEnding::SilentClose);
        }
    }
}

/// A TLS stream that records the alerts it receives into an [`AlertSlot`].
pub(crate) struct AlertWatch<T> {
    inner: T,
    slot: AlertSlot,
    /// This side's copy of "data arrived": once set, a read touches no lock
    /// (reads are the data path of every tunnel).
    read_any: bool,
}

impl<T> AlertWatch<T> {
    pub(crate) fn new(inner: T, slot: AlertSlot) -> Self {
        AlertWatch {
            inner,
            slot,
            read_any: false,
        }
    }

    /// A read of `n` bytes: the slot hears of the first data and of every
    /// EOF, not of each read.
    fn note_read(&mut self, n: usize) {
        if n == 0 || !self.read_any {
            self.read_any |= n > 0;
            self.slot.keep_read(n);
        }
    }
}

impl<T: AsyncRead + Unpin> AlertWatch<T> {
    /// After a write error: reads what has already arrived (discarding any
    /// data, the connection is dead) until an error, EOF or nothing more.
    fn read_the_rest(&mut self, cx: &mut Context<'_>) {
        let mut scratch = [0u8; 2048];
        // Bounded: a peer cannot keep this loop going with data.
        for _ in 0..64 {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) => {
                    let n = buf.filled().len();
                    self.note_read(n);
                    if n == 0 {
                        return;
                    }
                }
                Poll::Ready(Err(e)) => {
                    self.slot.keep_from(&e);
                    return;
                }
                _ => return,
            }
        }
    }

    fn on_write<R>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if let Poll::Ready(Err(e)) = &r {
            self.slot.keep_from(e);
            if self.slot.get().is_none() {
                self.read_the_rest(cx);
            }
        }
        r
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for AlertWatch<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        match &r {
            Poll::Ready(Ok(())) => this.note_read(buf.filled().len() - before),
            Poll::Ready(Err(e)) => this.slot.keep_from(e),
            Poll::Pending => {}
        }
        r
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for AlertWatch<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.on_write(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.on_write(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.on_write(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.on_write(cx, r)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rustls::pki_types::ServerName;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use mesh_identity::{CertStore, CertificateAuthority, Identity};

    /// The race h2 loses: the refusing server's alert and reset are both in
    /// before the client writes again. The write fails (reset), and the
    /// alert is still read from what had arrived.
    #[tokio::test]
    async fn the_alert_is_kept_when_a_write_fails_first() {
        let hour = Duration::from_secs(3600);
        let client_id = Identity::new("cluster.local", "demo", "client");
        let server_id = Identity::new("cluster.local", "demo", "server");
        let server_ca = CertificateAuthority::self_signed("cluster.local").unwrap();
        let server_certs = CertStore::with_roots_pem(server_ca.root_pem().as_bytes()).unwrap();
        let (chain, key) = server_ca.issue(&server_id, hour).unwrap();
        server_certs
            .insert_pem(chain.as_bytes(), key.as_bytes())
            .unwrap();
        let other_ca = CertificateAuthority::self_signed("cluster.local").unwrap();
        let client_certs = CertStore::with_roots_pem(server_ca.root_pem().as_bytes()).unwrap();
        let (chain, key) = other_ca.issue(&client_id, hour).unwrap();
        client_certs
            .insert_pem(chain.as_bytes(), key.as_bytes())
            .unwrap();

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor =
            tokio_rustls::TlsAcceptor::from(server_certs.server_config(&server_id).unwrap());
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            // Refuses the client certificate: alert, then close.
            acceptor.accept(tcp).await.is_err()
        });
        let config = client_certs.client_config(&client_id, &server_id).unwrap();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(ServerName::IpAddress(addr.ip().into()), tcp)
            .await
            .expect("TLS 1.3: the client's side of the handshake completes");
        assert!(server.await.unwrap(), "the server accepted the certificate");
        let slot = AlertSlot::default();
        let mut stream = AlertWatch::new(tls, slot.clone());
        // The first write reaches the closed server, which answers with a
        // reset; a later one fails.
        let mut failed = None;
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let r = async {
                stream.write_all(&[0u8; 64]).await?;
                stream.flush().await
            }
            .await;
            if let Err(e) = r {
                failed = Some(e);
                break;
            }
        }
        let failed = failed.expect("writes to a closed peer kept succeeding");
        assert_eq!(
            slot.get(),
            Some(PeerEnding::Alert(AlertDescription::DecryptError)),
            "write failed with {failed}, and no alert was kept"
        );
    }
}
