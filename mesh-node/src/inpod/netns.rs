//! Entering a pod's network namespace to open sockets there.
//!
//! A socket belongs to the netns of the thread that created it, for its whole
//! life. So mesh-node switches the current thread into the pod's netns just
//! long enough to call `socket()`, then switches back; no await happens
//! in between, so a tokio worker thread is never left in the wrong netns.

use std::fs::File;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};

/// `SO_NETNS_COOKIE` (Linux 5.14+): the kernel's 64-bit id of a netns, the
/// same value `bpf_get_netns_cookie` returns to the kernel programs.
const SO_NETNS_COOKIE: libc::c_int = 71;

/// An open handle on a network namespace.
#[derive(Debug)]
pub struct PodNetns {
    path: PathBuf,
    file: File,
    cookie: u64,
}

impl PodNetns {
    /// Opens the netns at `path` (e.g. `/run/netns/<name>` or `/proc/<pid>/ns/net`).
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path).map_err(|e| {
            io::Error::new(e.kind(), format!("opening netns {}: {e}", path.display()))
        })?;
        let mut ns = PodNetns {
            path: path.to_path_buf(),
            file,
            cookie: 0,
        };
        let probe = ns.run_in(|| std::net::UdpSocket::bind("127.0.0.1:0"))??;
        ns.cookie = netns_cookie_of(&probe)?;
        Ok(ns)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// The kernel's cookie for this netns (the enrolment key of the programs).
    pub fn cookie(&self) -> u64 {
        self.cookie
    }

    /// Runs `f` on the current thread while it is inside this netns, then
    /// returns the thread to the netns it was in. `f` must not block on async work.
    pub fn run_in<T>(&self, f: impl FnOnce() -> T) -> io::Result<T> {
        let home = File::open("/proc/thread-self/ns/net")?;
        setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        let out = f();
        // Failing to return would leave a runtime thread in a pod's netns:
        // every later socket would land in the wrong place. Abort instead.
        if let Err(e) = setns(home.as_fd(), CloneFlags::CLONE_NEWNET) {
            eprintln!("mesh-node: cannot return to own netns ({e}); aborting");
            std::process::abort();
        }
        Ok(out)
    }
}

/// The netns cookie of the namespace a socket lives in.
pub fn netns_cookie_of(sock: &impl AsRawFd) -> io::Result<u64> {
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: `cookie` and `len` are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cookie)
}

/// Lets bind() to port 0 leave the port to connect(), which picks one unique
/// for the whole 4-tuple (socket2 has no setter for it).
fn set_bind_address_no_port(sock: &impl AsRawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: `on` is a valid c_int for reads of the size given.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Marks a socket so the kernel programs never capture it.
pub fn set_mesh_mark(sock: &impl AsFd) -> io::Result<()> {
    socket2::SockRef::from(sock).set_mark(mesh_common::MESH_MARK)
}

impl PodNetns {
    /// A TCP socket inside this netns, marked so the kernel programs never
    /// capture it, with Nagle off (the tunnel carries interactive traffic).
    pub fn tcp_socket(&self, dst: std::net::SocketAddr) -> io::Result<tokio::net::TcpSocket> {
        let sock = self.run_in(|| {
            if dst.is_ipv4() {
                tokio::net::TcpSocket::new_v4()
            } else {
                tokio::net::TcpSocket::new_v6()
            }
        })??;
        set_mesh_mark(&sock)?;
        sock.set_nodelay(true)?;
        Ok(sock)
    }

    /// The socket mesh-node delivers inbound traffic to the app on: inside
    /// this netns, bound to the caller's address `source` (which the pod does
    /// not own, hence IP_TRANSPARENT / IPV6_TRANSPARENT; CAP_NET_ADMIN in the
    /// pod's netns, which mesh-node has) so the app's `accept()` sees the real
    /// caller, as ztunnel's in-pod inbound does. It carries
    /// [`mesh_common::DELIVERY_MARK`]: the app's side inherits it
    /// (`tcp_fwmark_accept`), which routes the app's replies back here (see
    /// `delivery_routes`), and is bound to the loopback device. Port 0 with IP_BIND_ADDRESS_NO_PORT: the port is
    /// chosen at connect(), unique per 4-tuple rather than per caller address.
    pub fn delivery_socket(
        &self,
        source: IpAddr,
        target: SocketAddr,
    ) -> io::Result<tokio::net::TcpSocket> {
        let sock = self.run_in(|| {
            if target.is_ipv4() {
                tokio::net::TcpSocket::new_v4()
            } else {
                tokio::net::TcpSocket::new_v6()
            }
        })??;
        let sref = socket2::SockRef::from(&sock);
        sref.set_mark(mesh_common::DELIVERY_MARK)?;
        if target.is_ipv4() {
            sref.set_ip_transparent_v4(true)?;
        } else {
            sref.set_ip_transparent_v6(true)?;
        }
        // Bound to the loopback device: the kernel then takes the route of
        // the delivery table (`local default dev lo`), and the SYN's ingress
        // ifindex is lo's, which is how the sk_lookup program tells this
        // delivery from traffic that came from outside (unbound, a SYN to the
        // pod's own address has the ifindex of the device that address is on).
        sref.bind_device(Some(b"lo"))?;
        set_bind_address_no_port(&sock)?;
        sock.set_nodelay(true)?;
        sock.bind(SocketAddr::new(source, 0))?;
        Ok(sock)
    }

    /// A listening socket inside this netns (non-blocking, ready for tokio).
    /// SO_REUSEPORT, so that a new mesh-node can listen beside one that is
    /// draining during a hand-over (see [`Self::enable_listener_migration`]).
    pub fn listen(&self, addr: std::net::SocketAddr) -> io::Result<std::net::TcpListener> {
        let named = |e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("binding {addr} in netns {}: {e}", self.path.display()),
            )
        };
        let sock = self.run_in(|| {
            socket2::Socket::new(
                socket2::Domain::for_address(addr),
                socket2::Type::STREAM,
                Some(socket2::Protocol::TCP),
            )
        })??;
        sock.set_reuse_address(true)?;
        sock.set_reuse_port(true)?;
        sock.bind(&addr.into()).map_err(named)?;
        sock.listen(1024).map_err(named)?;
        sock.set_nonblocking(true)?;
        Ok(sock.into())
    }

    /// `net.ipv4.tcp_migrate_req=1` in this netns: when a listener of a
    /// SO_REUSEPORT group closes, the connections in its queue move to
    /// another listener of the group instead of being reset. That is how a
    /// draining mesh-node hands its queued connections to the new one.
    pub fn enable_listener_migration(&self) -> io::Result<()> {
        self.run_in(|| std::fs::write("/proc/sys/net/ipv4/tcp_migrate_req", b"1"))?
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "setting net.ipv4.tcp_migrate_req in netns {}: {e}",
                        self.path.display()
                    ),
                )
            })
    }
}
