//! What an HBONE tunnel carries: HTTP (an HTTP/1.x request
//! line or the HTTP/2 preface) or anything else, relayed as plain TCP.
//! Server-first protocols send nothing, so silence for [`SNIFF_WAIT`]
//! means TCP. The bytes read while sniffing are replayed ([`Prefixed`]).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// How long a silent tunnel is given before it is taken for TCP.
pub const SNIFF_WAIT: Duration = Duration::from_millis(100);

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const METHODS: &[&[u8]] = &[
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"CONNECT ",
    b"OPTIONS ",
    b"TRACE ",
    b"PATCH ",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sniffed {
    Http,
    Tcp,
}

/// The protocol of a stream starting with `b`; `None` while `b` could
/// still begin either.
pub fn classify(b: &[u8]) -> Option<Sniffed> {
    if b.is_empty() {
        return None;
    }
    let mut undecided = false;
    for tok in std::iter::once(&H2_PREFACE).chain(METHODS) {
        let n = b.len().min(tok.len());
        if b[..n] == tok[..n] {
            if n == tok.len() {
                return Some(Sniffed::Http);
            }
            undecided = true;
        }
    }
    (!undecided).then_some(Sniffed::Tcp)
}

/// Reads from `io` until its protocol is known or `wait` has passed;
/// returns it with the bytes read.
pub async fn sniff<I: AsyncRead + Unpin>(
    io: &mut I,
    wait: Duration,
) -> io::Result<(Sniffed, Vec<u8>)> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(p) = classify(&buf) {
            return Ok((p, buf));
        }
        match tokio::time::timeout_at(deadline, io.read(&mut chunk)).await {
            // Silence, or the caller closed its side: not HTTP.
            Err(_) | Ok(Ok(0)) => return Ok((Sniffed::Tcp, buf)),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => return Err(e),
        }
    }
}

/// A stream whose first bytes were already read: they are read again
/// first.
pub struct Prefixed<I> {
    prefix: Vec<u8>,
    pos: usize,
    inner: I,
}

impl<I> Prefixed<I> {
    pub fn new(prefix: Vec<u8>, inner: I) -> Self {
        Prefixed {
            prefix,
            pos: 0,
            inner,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.prefix.len() {
            let rest = &this.prefix[this.pos..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn classifies_first_bytes() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Sniffed::Http));
        assert_eq!(classify(b"DELETE /x"), Some(Sniffed::Http));
        assert_eq!(classify(H2_PREFACE), Some(Sniffed::Http));
        assert_eq!(classify(b"PRI * HTTP/2.0\r\n"), None);
        assert_eq!(classify(b"GE"), None);
        assert_eq!(classify(b"P"), None);
        assert_eq!(classify(b""), None);
        assert_eq!(classify(b"GETX"), Some(Sniffed::Tcp));
        assert_eq!(classify(b"\x16\x03\x01\x02\x00"), Some(Sniffed::Tcp));
        assert_eq!(classify(b"*3\r\n$3\r\nSET"), Some(Sniffed::Tcp));
        assert_eq!(classify(b"get / HTTP/1.1"), Some(Sniffed::Tcp));
    }

    #[tokio::test]
    async fn silence_is_tcp_and_bytes_are_replayed() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let started = std::time::Instant::now();
        let (p, pre) = sniff(&mut b, SNIFF_WAIT).await.expect("sniff");
        assert_eq!((p, pre.len()), (Sniffed::Tcp, 0));
        assert!(started.elapsed() >= SNIFF_WAIT);

        a.write_all(b"GET / HTTP/1.1\r\n").await.expect("write");
        let (p, pre) = sniff(&mut b, SNIFF_WAIT).await.expect("sniff");
        assert_eq!(p, Sniffed::Http);
        let mut s = Prefixed::new(pre, b);
        drop(a);
        let mut all = Vec::new();
        s.read_to_end(&mut all).await.expect("read");
        assert_eq!(all, b"GET / HTTP/1.1\r\n");
    }
}
