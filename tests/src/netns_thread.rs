//! Running a closure on a fresh thread inside a pod's (or node's) network
//! namespace, so the test process itself can open sockets there — outside
//! every pod cgroup, so nothing it opens is captured by the mesh.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use nix::sched::{setns, CloneFlags};

/// Runs `f` on a new thread that has entered the netns at `path`; the thread
/// ends with `f`, so no other code ever runs in that netns by mistake.
pub fn in_netns<T, F>(path: &Path, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let ns = File::open(path).with_context(|| format!("opening netns {}", path.display()))?;
    let thread = std::thread::spawn(move || -> Result<T> {
        setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).context("setns")?;
        Ok(f())
    });
    thread
        .join()
        .map_err(|_| anyhow!("the thread in {} panicked", path.display()))?
}
