//! Connection counters under Istio's metric names, and the count of
//! connections in flight that a drain waits for.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

#[derive(Default, Debug)]
pub struct Metrics {
    pub tcp_connections_opened: AtomicU64,
    pub tcp_connections_closed: AtomicU64,
    pub tcp_sent_bytes: AtomicU64,
    pub tcp_received_bytes: AtomicU64,
    pub denied: AtomicU64,
    active: AtomicU64,
    idle: Notify,
}

impl Metrics {
    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    /// Waits until no connection is in flight.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.active() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Prometheus text format, Istio's names.
    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "# TYPE istio_tcp_connections_opened_total counter\n\
             istio_tcp_connections_opened_total{{reporter=\"destination\"}} {}\n\
             # TYPE istio_tcp_connections_closed_total counter\n\
             istio_tcp_connections_closed_total{{reporter=\"destination\"}} {}\n\
             # TYPE istio_tcp_sent_bytes_total counter\n\
             istio_tcp_sent_bytes_total{{reporter=\"destination\"}} {}\n\
             # TYPE istio_tcp_received_bytes_total counter\n\
             istio_tcp_received_bytes_total{{reporter=\"destination\"}} {}\n\
             # TYPE ambit_connections_denied_total counter\n\
             ambit_connections_denied_total {}\n\
             # TYPE ambit_connections_active gauge\n\
             ambit_connections_active {}\n",
            g(&self.tcp_connections_opened),
            g(&self.tcp_connections_closed),
            g(&self.tcp_sent_bytes),
            g(&self.tcp_received_bytes),
            g(&self.denied),
            self.active(),
        )
    }
}

/// Held for the life of one proxied connection.
pub struct ConnectionTracker {
    metrics: Arc<Metrics>,
}

impl ConnectionTracker {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        metrics.active.fetch_add(1, Ordering::Relaxed);
        metrics
            .tcp_connections_opened
            .fetch_add(1, Ordering::Relaxed);
        ConnectionTracker { metrics }
    }

    pub fn bytes(&self, sent: u64, received: u64) {
        self.metrics
            .tcp_sent_bytes
            .fetch_add(sent, Ordering::Relaxed);
        self.metrics
            .tcp_received_bytes
            .fetch_add(received, Ordering::Relaxed);
    }
}

impl Drop for ConnectionTracker {
    fn drop(&mut self) {
        self.metrics
            .tcp_connections_closed
            .fetch_add(1, Ordering::Relaxed);
        if self.metrics.active.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.metrics.idle.notify_waiters();
        }
    }
}
