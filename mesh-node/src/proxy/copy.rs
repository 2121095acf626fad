//! Moving bytes both ways between two streams, with half-close kept.

use tokio::io::{AsyncRead, AsyncWrite};

/// Buffer per direction. TLS records carry at most 16 KiB, so larger reads
/// buy little throughput, while every open connection pays for two buffers.
const RELAY_BUFFER: usize = 32 * 1024;

/// Copies until both directions reach EOF; returns (a→b, b→a) byte counts.
pub async fn relay<A, B>(a: &mut A, b: &mut B) -> std::io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    tokio::io::copy_bidirectional_with_sizes(a, b, RELAY_BUFFER, RELAY_BUFFER).await
}
