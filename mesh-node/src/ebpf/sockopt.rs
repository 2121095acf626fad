//! `SO_ORIGINAL_DST` on an accepted outbound socket.

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use mesh_common::SO_ORIGINAL_DST;

/// getsockopt(SOL_IP, SO_ORIGINAL_DST) on an accepted outbound socket
/// (answered by the getsockopt program). If that fails, tries
/// (SOL_IPV6, IP6T_SO_ORIGINAL_DST), which the program answers for
/// destinations captured from IPv6 sockets. Returns the first error if both fail.
pub fn original_dst(sock: &impl AsRawFd) -> io::Result<SocketAddr> {
    let fd = sock.as_raw_fd();
    let v4_err = match getsockopt_addr::<libc::sockaddr_in>(fd, libc::SOL_IP) {
        Ok(sa) => return parse_in(&sa),
        Err(e) => e,
    };
    match getsockopt_addr::<libc::sockaddr_in6>(fd, libc::SOL_IPV6) {
        Ok(sa) => parse_in6(&sa),
        Err(_) => Err(v4_err),
    }
}

/// `getsockopt(fd, level, SO_ORIGINAL_DST)` into a `T`; errors if the
/// answer is shorter than the address family's `sa_family` field.
fn getsockopt_addr<T: Copy>(fd: libc::c_int, level: libc::c_int) -> io::Result<T> {
    let mut out = MaybeUninit::<T>::zeroed();
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: `out` is valid for writes of `len` bytes and `len` for a socklen_t.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            level,
            SO_ORIGINAL_DST,
            out.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if (len as usize) < size_of::<libc::sa_family_t>() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("SO_ORIGINAL_DST returned {len} bytes"),
        ));
    }
    // SAFETY: zero-initialised and then (partly) written by the kernel; the
    // sockaddr types are plain integers, valid for every bit pattern.
    Ok(unsafe { out.assume_init() })
}

fn parse_in(sa: &libc::sockaddr_in) -> io::Result<SocketAddr> {
    if libc::c_int::from(sa.sin_family) != libc::AF_INET {
        return Err(bad_family(sa.sin_family));
    }
    let ip = Ipv4Addr::from(sa.sin_addr.s_addr.to_ne_bytes());
    Ok(SocketAddr::V4(SocketAddrV4::new(
        ip,
        u16::from_be(sa.sin_port),
    )))
}

fn parse_in6(sa: &libc::sockaddr_in6) -> io::Result<SocketAddr> {
    if libc::c_int::from(sa.sin6_family) != libc::AF_INET6 {
        return Err(bad_family(sa.sin6_family));
    }
    let ip = Ipv6Addr::from(sa.sin6_addr.s6_addr);
    let port = u16::from_be(sa.sin6_port);
    // A v4 destination captured from a v6 socket comes back v4-mapped.
    Ok(match ip.to_ipv4_mapped() {
        Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
        None => SocketAddr::V6(SocketAddrV6::new(ip, port, 0, 0)),
    })
}

fn bad_family(family: libc::sa_family_t) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("SO_ORIGINAL_DST returned address family {family}"),
    )
}
