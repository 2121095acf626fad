//! `SO_ORIGINAL_DST` on an accepted outbound socket (socket2's getsockopt).

use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::AsFd;

use socket2::SockRef;

/// getsockopt(SOL_IP, SO_ORIGINAL_DST) on an accepted outbound socket
/// (answered by the getsockopt program). If that fails, tries
/// (SOL_IPV6, IP6T_SO_ORIGINAL_DST), which the program answers for
/// destinations captured from IPv6 sockets. Returns the first error if both fail.
pub fn original_dst(sock: &impl AsFd) -> io::Result<SocketAddr> {
    let sock = SockRef::from(sock);
    let answer = match sock.original_dst_v4() {
        Ok(sa) => sa,
        Err(v4_err) => sock.original_dst_v6().map_err(|_| v4_err)?,
    };
    let Some(addr) = answer.as_socket() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "SO_ORIGINAL_DST returned address family {}",
                answer.family()
            ),
        ));
    };
    // A v4 destination captured from a v6 socket comes back v4-mapped.
    Ok(match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, v6.port())),
            None => SocketAddr::V6(v6),
        },
        v4 => v4,
    })
}
