//! Watching a process's open descriptors and resident memory while a test
//! pokes it, with a hard limit: past `kill_above_fds` descriptors the process
//! is killed (SIGKILL) so that a runaway (a connection loop) cannot hurt the
//! machine the tests run on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Open descriptors of `pid` (entries of `/proc/<pid>/fd`).
pub fn fd_count(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count())
}

/// Resident set size of `pid` in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The peaks seen while watching.
#[derive(Clone, Copy, Debug, Default)]
pub struct Peaks {
    pub fds: usize,
    pub rss_kib: u64,
    /// True if the watcher killed the process for passing the fd limit.
    pub killed: bool,
}

/// Samples a process every millisecond until [`ProcWatch::finish`].
pub struct ProcWatch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Peaks>>,
}

impl ProcWatch {
    pub fn start(pid: u32, kill_above_fds: usize) -> ProcWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peaks = Peaks::default();
            while !flag.load(Ordering::Relaxed) {
                let Some(fds) = fd_count(pid) else { break };
                peaks.fds = peaks.fds.max(fds);
                if let Some(rss) = rss_kib(pid) {
                    peaks.rss_kib = peaks.rss_kib.max(rss);
                }
                if fds > kill_above_fds {
                    // SAFETY: kill(2) on a pid the caller names (a process the
                    // test started); no memory is shared.
                    unsafe {
                        libc::kill(pid as libc::pid_t, libc::SIGKILL);
                    }
                    peaks.killed = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            peaks
        });
        ProcWatch {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops watching and returns the peaks.
    pub fn finish(mut self) -> Peaks {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for ProcWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
