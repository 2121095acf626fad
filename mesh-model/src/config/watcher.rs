//! Reloads the config file when it changes.
//!
//! Polls the file every 100 ms (a content hash, so it works on every file
//! system, with editors that replace the file, and with mtime granularity of
//! a second). A valid new file produces a new `Arc<ProxyState>` on a watch
//! channel; an invalid one is logged with the full message and reported on
//! the error channel, and the last good state stays in force.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{parse_state_at, ConfigError};
use crate::state::ProxyState;

/// Sees every new good state.
pub type StateReceiver = watch::Receiver<Arc<ProxyState>>;
/// Sees why the file on disk is not in force (`None` when it is).
pub type ErrorReceiver = watch::Receiver<Option<String>>;

pub struct ConfigWatcher {
    path: PathBuf,
    state_rx: watch::Receiver<Arc<ProxyState>>,
    error_rx: watch::Receiver<Option<String>>,
    task: JoinHandle<()>,
    /// Keep polling after this handle is dropped (see [`Self::spawn`]).
    detached: bool,
}

fn hash(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

fn log_warnings(path: &Path, state: &ProxyState) {
    for w in state.warnings() {
        tracing::warn!(path = %path.display(), "config: {w}");
    }
}

impl ConfigWatcher {
    pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(100);

    /// Loads `path` (which must be valid) and starts watching it. Must be
    /// called within a Tokio runtime; the watch stops when this is dropped
    /// (see [`Self::spawn`] for one that does not).
    pub fn start(path: impl Into<PathBuf>) -> Result<ConfigWatcher, ConfigError> {
        Self::start_with_interval(path, Self::DEFAULT_INTERVAL)
    }

    pub fn start_with_interval(
        path: impl Into<PathBuf>,
        interval: Duration,
    ) -> Result<ConfigWatcher, ConfigError> {
        let path = path.into();
        let bytes = std::fs::read(&path).map_err(|source| ConfigError::Io {
            path: path.clone(),
            source,
        })?;
        let text = String::from_utf8_lossy(&bytes);
        let state = parse_state_at(&text, Some(&path))?;
        log_warnings(&path, &state);
        tracing::info!(path = %path.display(), workloads = state.workloads().len(),
            services = state.services().len(), "config loaded");
        let (state_tx, state_rx) = watch::channel(Arc::new(state));
        let (error_tx, error_rx) = watch::channel(None::<String>);
        let task = tokio::spawn(poll(
            path.clone(),
            interval,
            hash(&bytes),
            state_tx,
            error_tx,
        ));
        Ok(ConfigWatcher {
            path,
            state_rx,
            error_rx,
            task,
            detached: false,
        })
    }

    /// Starts watching `path` for the life of the process (or until every
    /// state receiver is dropped) and hands back the state and error
    /// receivers. Must be called within a Tokio runtime.
    pub fn spawn(path: impl Into<PathBuf>) -> Result<(StateReceiver, ErrorReceiver), ConfigError> {
        let mut w = Self::start(path)?;
        w.detached = true;
        Ok((w.state_rx.clone(), w.error_rx.clone()))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The state now in force.
    pub fn state(&self) -> Arc<ProxyState> {
        self.state_rx.borrow().clone()
    }

    /// A receiver that sees every new good state.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ProxyState>> {
        self.state_rx.clone()
    }

    /// Why the file on disk is not in force (`None` when it is).
    pub fn last_error(&self) -> Option<String> {
        self.error_rx.borrow().clone()
    }

    /// A receiver of [`Self::last_error`] changes.
    pub fn errors(&self) -> watch::Receiver<Option<String>> {
        self.error_rx.clone()
    }
}

impl Drop for ConfigWatcher {
    fn drop(&mut self) {
        if !self.detached {
            self.task.abort();
        }
    }
}

async fn poll(
    path: PathBuf,
    interval: Duration,
    initial_hash: u64,
    state_tx: watch::Sender<Arc<ProxyState>>,
    error_tx: watch::Sender<Option<String>>,
) {
    let mut last_hash = Some(initial_hash);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        if state_tx.is_closed() {
            // Nobody listens any more.
            return;
        }
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(source) => {
                let msg = ConfigError::Io {
                    path: path.clone(),
                    source,
                }
                .to_string();
                if error_tx.borrow().as_deref() != Some(msg.as_str()) {
                    tracing::error!(path = %path.display(), "{msg}; keeping the last good config");
                    error_tx.send_replace(Some(msg));
                }
                last_hash = None;
                continue;
            }
        };
        let h = hash(&bytes);
        if last_hash == Some(h) {
            continue;
        }
        last_hash = Some(h);
        let text = String::from_utf8_lossy(&bytes);
        match parse_state_at(&text, Some(&path)) {
            Ok(state) => {
                log_warnings(&path, &state);
                tracing::info!(path = %path.display(), workloads = state.workloads().len(),
                    services = state.services().len(), "config reloaded");
                state_tx.send_replace(Arc::new(state));
                error_tx.send_replace(None);
            }
            Err(e) => {
                let msg = format!("{}: {e}", path.display());
                tracing::error!(path = %path.display(), "config rejected, keeping the last good config: {e}");
                error_tx.send_replace(Some(msg));
            }
        }
    }
}
