//! Small system helpers: running `ip`, finding the cgroup2 mount, entering
//! namespaces in a child before exec.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Runs `ip <args>` and fails with its stderr if it fails.
pub fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running `ip` (is iproute2 installed?)")?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs `ip -n <netns> <args>`.
pub fn ip_in(netns: &str, args: &[&str]) -> Result<()> {
    let mut all = vec!["-n", netns];
    all.extend_from_slice(args);
    ip(&all)
}

/// Runs a command inside a named netns (via setns in the child) and returns stdout.
pub fn run_in_netns(netns: &str, program: &str, args: &[&str]) -> Result<String> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    let _held = enter_in_child(&mut cmd, Some(netns), None)?;
    let out = cmd
        .output()
        .with_context(|| format!("running {program} in {netns}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} in {netns} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Where cgroup2 is mounted on this machine (`/sys/fs/cgroup` on pure v2
/// hosts, `/sys/fs/cgroup/unified` on hybrid ones). Never hard-coded.
pub fn cgroup2_mount() -> Result<PathBuf> {
    let f = File::open("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    for line in BufReader::new(f).lines() {
        let line = line?;
        // "... <mount point> <opts> ... - <fstype> <source> <super opts>"
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if right.split_whitespace().next() == Some("cgroup2") {
            if let Some(mp) = left.split_whitespace().nth(4) {
                return Ok(PathBuf::from(mp));
            }
        }
    }
    bail!("no cgroup2 mount found in /proc/self/mountinfo: the mesh needs cgroup v2")
}

pub fn netns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// Arranges for `cmd`'s child to enter `netns` and join `cgroup` before exec.
/// Files are opened here, in the parent (after `fork` only raw syscalls
/// run); the caller keeps the returned files open until `spawn` returns.
#[must_use = "keep the files open until the command has been spawned"]
pub fn enter_in_child(
    cmd: &mut Command,
    netns: Option<&str>,
    cgroup: Option<&Path>,
) -> Result<Vec<File>> {
    let mut held = Vec::new();
    let ns_fd: Option<RawFd> = match netns {
        Some(n) => {
            let f = File::open(netns_path(n)).with_context(|| format!("opening netns {n}"))?;
            let fd = f.as_raw_fd();
            held.push(f);
            Some(fd)
        }
        None => None,
    };
    let cg_fd: Option<RawFd> = match cgroup {
        Some(c) => {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(c.join("cgroup.procs"))
                .with_context(|| format!("opening {}/cgroup.procs", c.display()))?;
            let fd = f.as_raw_fd();
            held.push(f);
            Some(fd)
        }
        None => None,
    };
    // SAFETY: the closure only calls async-signal-safe syscalls (setns, write)
    // on descriptors opened before fork.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(fd) = cg_fd {
                // "0" moves the writing process: the child, before exec.
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some(fd) = ns_fd {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    Ok(held)
}

pub fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the namespace testbed needs root (network namespaces, cgroups, eBPF): run as root");
    }
    Ok(())
}
