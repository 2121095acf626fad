//! The node's metrics: connection counters under Istio's metric names
//! (prometheus-client's registry and OpenMetrics text), the count of
//! connections in flight that a drain waits for, and pod enrolment failures.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::Notify;

/// The content type of [`Metrics::render`]'s text.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    tcp_connections_opened: Counter,
    tcp_connections_closed: Counter,
    tcp_sent_bytes: Counter,
    tcp_received_bytes: Counter,
    denied: Counter,
    closed_by_policy: Counter,
    active: Gauge,
    enrolment_failures: Counter,
    enrolments_failing: Gauge,
    idle: Notify,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let tcp_connections_opened = Counter::default();
        let tcp_connections_closed = Counter::default();
        let tcp_sent_bytes = Counter::default();
        let tcp_received_bytes = Counter::default();
        let denied = Counter::default();
        let closed_by_policy = Counter::default();
        let active = Gauge::default();
        let enrolment_failures = Counter::default();
        let enrolments_failing = Gauge::default();
        // The node proxy reports as the destination side, as ztunnel's
        // inbound does.
        let istio = registry.sub_registry_with_label(("reporter".into(), "destination".into()));
        istio.register(
            "istio_tcp_connections_opened",
            "Connections opened",
            tcp_connections_opened.clone(),
        );
        istio.register(
            "istio_tcp_connections_closed",
            "Connections closed",
            tcp_connections_closed.clone(),
        );
        istio.register(
            "istio_tcp_sent_bytes",
            "Bytes sent to the peer",
            tcp_sent_bytes.clone(),
        );
        istio.register(
            "istio_tcp_received_bytes",
            "Bytes received from the peer",
            tcp_received_bytes.clone(),
        );
        registry.register(
            "ambit_connections_denied",
            "Connections denied by policy",
            denied.clone(),
        );
        registry.register(
            "ambit_connections_closed_by_policy",
            "Open connections closed because a config change denies them",
            closed_by_policy.clone(),
        );
        registry.register(
            "ambit_connections_active",
            "Connections in flight",
            active.clone(),
        );
        registry.register(
            "ambit_pod_enrolment_failures",
            "Failed attempts to enrol a pod",
            enrolment_failures.clone(),
        );
        registry.register(
            "ambit_pod_enrolments_failing",
            "Pods that should be enrolled and are not",
            enrolments_failing.clone(),
        );
        Metrics {
            registry,
            tcp_connections_opened,
            tcp_connections_closed,
            tcp_sent_bytes,
            tcp_received_bytes,
            denied,
            closed_by_policy,
            active,
            enrolment_failures,
            enrolments_failing,
            idle: Notify::new(),
        }
    }
}

impl Metrics {
    pub fn active(&self) -> u64 {
        u64::try_from(self.active.get()).unwrap_or(0)
    }

    /// Counts a connection refused by policy.
    pub fn deny(&self) {
        self.denied.inc();
    }

    /// Counts an open connection closed because a config change denies it.
    pub fn closed_by_policy(&self) {
        self.closed_by_policy.inc();
    }

    /// Counts a failed attempt to enrol a pod.
    pub fn enrolment_failed(&self) {
        self.enrolment_failures.inc();
    }

    /// Sets how many pods should be enrolled and are not.
    pub fn set_enrolments_failing(&self, pods: usize) {
        self.enrolments_failing
            .set(i64::try_from(pods).unwrap_or(i64::MAX));
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

    /// OpenMetrics text ([`METRICS_CONTENT_TYPE`]), Istio's names.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Held for the life of one proxied connection.
pub struct ConnectionTracker {
    metrics: Arc<Metrics>,
}

impl ConnectionTracker {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        metrics.active.inc();
        metrics.tcp_connections_opened.inc();
        ConnectionTracker { metrics }
    }

    pub fn bytes(&self, sent: u64, received: u64) {
        self.metrics.tcp_sent_bytes.inc_by(sent);
        self.metrics.tcp_received_bytes.inc_by(received);
    }
}

impl Drop for ConnectionTracker {
    fn drop(&mut self) {
        self.metrics.tcp_connections_closed.inc();
        if self.metrics.active.dec() == 1 {
            self.metrics.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_istio_names_with_the_reporter_label() {
        let metrics = Arc::new(Metrics::default());
        let tracker = ConnectionTracker::new(metrics.clone());
        tracker.bytes(10, 20);
        metrics.deny();
        metrics.closed_by_policy();
        metrics.enrolment_failed();
        metrics.set_enrolments_failing(1);
        let text = metrics.render();
        for line in [
            "istio_tcp_connections_opened_total{reporter=\"destination\"} 1",
            "istio_tcp_connections_closed_total{reporter=\"destination\"} 0",
            "istio_tcp_sent_bytes_total{reporter=\"destination\"} 10",
            "istio_tcp_received_bytes_total{reporter=\"destination\"} 20",
            "ambit_connections_denied_total 1",
            "ambit_connections_active 1",
            "ambit_connections_closed_by_policy_total 1",
            "ambit_pod_enrolment_failures_total 1",
            "ambit_pod_enrolments_failing 1",
            "# TYPE istio_tcp_connections_opened counter",
            "# TYPE ambit_connections_active gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
        }
        drop(tracker);
        assert_eq!(metrics.active(), 0);
        assert!(metrics
            .render()
            .contains("istio_tcp_connections_closed_total{reporter=\"destination\"} 1\n"));
    }
}
