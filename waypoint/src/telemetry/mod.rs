//! Per-request telemetry: Istio's standard metrics (names, labels and
//! buckets as Istio's Prometheus stats, `reporter="waypoint"`), an
//! Envoy-like access log line (tracing event at info, target `access`),
//! the Telemetry resources' settings the waypoint applies (sampling
//! percentage, access log on/off), and Envoy's response flags.
//!
//! Metrics are recorded once the response head is known, for forwarded
//! requests and local replies alike; the duration is to the response head
//! (the body streams on afterwards). `istio_response_bytes` observes the
//! body length at the head when it is known there (`content-length`, local
//! replies), else when a streamed body ends (or is dropped), counted as it
//! passes; the access log's `bytes_sent` is `-` for the latter.
//!
//! Label values that are not known are `unknown`, as Istio's.
//!
//! One module per concern: [`flags`] (what the request path marks on a
//! response), [`meta`] (what it learned about the request), [`labels`]
//! (the caller and Istio's label set), [`series`] (the label sets a
//! connection recorded into lately), [`registry`] (the metrics and the
//! recording), [`body`] (bytes counted as a body streams), [`access_log`]
//! and [`policy`] (the Telemetry resources compiled).

pub mod access_log;
pub mod body;
pub mod flags;
pub mod labels;
pub mod meta;
pub mod policy;
pub mod registry;
pub mod series;

pub use self::access_log::rfc3339;
pub use self::flags::{flagged, ResponseFlag, UpstreamHost};
pub use self::labels::{RequestLabels, SharedStr, SourceInfo};
pub use self::meta::RequestMeta;
pub use self::policy::TelemetryPolicy;
pub use self::registry::{Telemetry, DURATION_BUCKETS_MS, METRICS_CONTENT_TYPE, SIZE_BUCKETS};
