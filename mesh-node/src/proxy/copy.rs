//! Moving bytes both ways between two streams, with half-close kept.

use tokio::io::{AsyncRead, AsyncWrite};

/// Buffer per direction: large enough for bulk transfers to stay in big
/// writes (HBONE frames are up to 1 MiB), small enough for many connections.
const RELAY_BUFFER: usize = 128 * 1024;

/// Copies until both directions reach EOF; returns (a→b, b→a) byte counts.
pub async fn relay<A, B>(a: &mut A, b: &mut B) -> std::io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    tokio::io::copy_bidirectional_with_sizes(a, b, RELAY_BUFFER, RELAY_BUFFER).await
}
