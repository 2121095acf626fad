//! Forwards the kernel programs' aya-log records to `tracing`.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use aya::Ebpf;
use aya_log::EbpfLogger;
use tracing::level_filters::LevelFilter;

/// The `tracing` target kernel log records are emitted under.
pub const TARGET: &str = "mesh_ebpf";

/// How long the reader thread sleeps in poll(); bounds the time Drop waits.
const POLL_MS: libc::c_int = 200;

/// aya-log's level numbering (`aya_log_common::Level`): 0 = off, 1 = error … 5 = trace.
pub(super) fn kernel_log_level() -> u8 {
    match LevelFilter::current() {
        LevelFilter::OFF => 0,
        LevelFilter::ERROR => 1,
        LevelFilter::WARN => 2,
        LevelFilter::INFO => 3,
        LevelFilter::DEBUG => 4,
        LevelFilter::TRACE => 5,
    }
}

/// A `log::Log` that re-emits records as `tracing` events.
struct ToTracing;

impl log::Log for ToTracing {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let msg = record.args();
        match record.level() {
            log::Level::Error => tracing::error!(target: TARGET, "{msg}"),
            log::Level::Warn => tracing::warn!(target: TARGET, "{msg}"),
            log::Level::Info => tracing::info!(target: TARGET, "{msg}"),
            log::Level::Debug => tracing::debug!(target: TARGET, "{msg}"),
            log::Level::Trace => tracing::trace!(target: TARGET, "{msg}"),
        }
    }

    fn flush(&self) {}
}

/// A thread draining the aya-log ring buffer; stopped and joined on drop.
pub(super) struct LogForwarder {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LogForwarder {
    /// Starts forwarding, or returns `None` (with a warning) when the object
    /// has no log map or the thread cannot start: logs are not essential.
    pub(super) fn start(ebpf: &mut Ebpf) -> Option<Self> {
        let mut logger = match EbpfLogger::init_with_logger(ebpf, ToTracing) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("kernel program logs unavailable: {e}");
                return None;
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("ebpf-log".into())
            .spawn(move || {
                while !stop2.load(Ordering::Relaxed) {
                    let mut pfd = libc::pollfd {
                        fd: logger.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd, the fd owned by `logger` which outlives the call.
                    let rc = unsafe { libc::poll(&mut pfd, 1, POLL_MS) };
                    if rc < 0 {
                        // EINTR or worse: back off a little instead of spinning.
                        std::thread::sleep(Duration::from_millis(POLL_MS as u64));
                    }
                    logger.flush();
                }
                logger.flush();
            });
        match thread {
            Ok(t) => Some(LogForwarder {
                stop,
                thread: Some(t),
            }),
            Err(e) => {
                tracing::warn!("cannot start the kernel log thread: {e}");
                None
            }
        }
    }
}

impl Drop for LogForwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
