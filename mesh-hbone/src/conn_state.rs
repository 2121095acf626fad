//! What a pooled connection shares with its driver task and its streams:
//! the counters the pool picks by, and the guard a stream holds.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Counters shared by a pooled connection, its driver task and its streams.
#[derive(Debug, Default)]
pub(crate) struct ConnState {
    pub(crate) active: AtomicUsize,
    /// Streams ever opened; the idle reaper compares it between ticks.
    pub(crate) opened: AtomicU64,
    pub(crate) dead: AtomicBool,
}

/// Counts one stream against its connection until dropped.
pub(crate) struct StreamSlot(pub(crate) Arc<ConnState>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}
