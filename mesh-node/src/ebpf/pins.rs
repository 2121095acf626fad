//! What of the kernel state outlives mesh-node, pinned in bpffs.
//!
//! Capture must never fail open (issue 9, item 4): when mesh-node is
//! stopped, killed or restarting, an enrolled pod's connections are refused,
//! not let out in plaintext, and STRICT does not lapse. So the links that
//! capture and steer (connect4/6, sockops, every pod's sk_lookup) and every
//! map are pinned under one directory per node:
//!
//! ```text
//! <pin dir>/maps-v<MAP_LAYOUT>/<MAP>   the maps, shared by every mesh-node run
//! <pin dir>/links/<program>            the cgroup links
//! <pin dir>/pods/<netns cookie>        each enrolled pod's sk_lookup link
//! ```
//!
//! With mesh-node gone, its sockets are closed: a captured connect() finds
//! no 15001 listener (refused) and sk_lookup finds no mesh listener (refused,
//! see `mesh_sk_lookup`). A new mesh-node reuses the maps, so the links of
//! the run before and its own behave the same while it swaps them (a rename
//! over the old pin), and adopts the pods still enrolled.
//!
//! This is the choice over "detach everything on exit": ztunnel's in-pod
//! mode gets the same fail-closed property from its in-pod redirection rules
//! staying in place. Removing the pins (`mesh-node --uninstall`) is how a node
//! leaves the mesh.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Bumped whenever a map's key, value or type changes, so that a mesh-node
/// never reuses maps of another layout (it makes new ones beside them).
pub const MAP_LAYOUT: u32 = 1;

/// `BPF_FS_MAGIC` from linux/magic.h.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The pin directory of one node.
#[derive(Debug, Clone)]
pub struct PinDir {
    root: PathBuf,
}

impl PinDir {
    /// Prepares `root` (creating it, and mounting bpffs on /sys/fs/bpf when
    /// nothing is mounted there, as the kernel's tools expect). `root` must
    /// lie on a bpffs.
    pub fn prepare(root: &Path) -> io::Result<PinDir> {
        let default_mount = Path::new("/sys/fs/bpf");
        if root.starts_with(default_mount) && !is_bpffs(default_mount)? {
            mount_bpffs(default_mount)?;
        }
        let dir = PinDir {
            root: root.to_path_buf(),
        };
        for d in [dir.maps(), dir.links(), dir.pods()] {
            std::fs::create_dir_all(&d)?;
        }
        let top = nearest_existing(root);
        if !is_bpffs(&top)? {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not on a bpffs", root.display()),
            ));
        }
        Ok(dir)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn maps(&self) -> PathBuf {
        self.root.join(format!("maps-v{MAP_LAYOUT}"))
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.maps().join(name)
    }

    pub fn links(&self) -> PathBuf {
        self.root.join("links")
    }

    pub fn link(&self, program: &str) -> PathBuf {
        self.links().join(program)
    }

    pub fn pods(&self) -> PathBuf {
        self.root.join("pods")
    }

    pub fn pod(&self, netns_cookie: u64) -> PathBuf {
        self.pods().join(format!("{netns_cookie:x}"))
    }

    /// Removes every pin: the links detach (unless a live process still
    /// holds them) and the maps are freed with their last user.
    pub fn remove(root: &Path) -> io::Result<()> {
        match std::fs::remove_dir_all(root) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

/// Pins `link` at `dest`, atomically replacing (and so releasing) what was
/// pinned there before: the old and the new link overlap, never leave a gap.
pub fn pin_replacing(link: aya::programs::links::FdLink, dest: &Path) -> io::Result<()> {
    // bpffs refuses names with a dot.
    let mut staging = dest.as_os_str().to_owned();
    staging.push("_new");
    let staging = PathBuf::from(staging);
    let _ = std::fs::remove_file(&staging);
    let pinned = link
        .pin(&staging)
        .map_err(|e| io::Error::other(format!("pinning {}: {e:?}", staging.display())))?;
    std::fs::rename(&staging, dest)?;
    // The pin holds the link; our descriptor may go.
    drop(pinned);
    Ok(())
}

/// Removes a pin; a missing one is fine.
pub fn unpin(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn nearest_existing(path: &Path) -> PathBuf {
    let mut p = path.to_path_buf();
    while !p.exists() {
        if !p.pop() {
            break;
        }
    }
    p
}

fn is_bpffs(path: &Path) -> io::Result<bool> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path with a NUL byte"))?;
    // SAFETY: an all-zero statfs is a valid out-buffer.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a valid out-buffer.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::NotFound {
            return Ok(false);
        }
        return Err(e);
    }
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between targets.
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

fn mount_bpffs(path: &Path) -> io::Result<()> {
    std::fs::create_dir_all(path)?;
    let target = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path with a NUL byte"))?;
    // SAFETY: NUL-terminated strings that outlive the call; no data argument.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("mounting bpffs on {}: {e}", path.display()),
        ));
    }
    tracing::info!(path = %path.display(), "mounted bpffs");
    Ok(())
}
