//! The waypoint's metrics registry: Istio's request metrics and Envoy's
//! local rate limit counters, and the recording of one request once its
//! response head is known.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use http::Response;
use http_body_util::BodyExt;
use hyper::body::Body;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::access_log::access_log;
use super::body::CountingBody;
use super::flags::{response_flags, ResponseFlag, UpstreamHost};
use super::labels::{app_of, request_labels, version_of, RequestLabels, SourceInfo};
use super::meta::RequestMeta;
use super::series::{Series, SeriesKeyRef};
use crate::body::ProxyBody;
use crate::discovery::Discovery;
use crate::limits::LimitMetrics;
use crate::ratelimit::Stats;

/// Istio's `istio_request_duration_milliseconds` buckets.
pub const DURATION_BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];
/// Istio's byte-size buckets (powers of ten, 1 B to 1 GB).
pub const SIZE_BUCKETS: [f64; 10] = [1.0, 10.0, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

/// The content type of [`Telemetry::metrics_text`].
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatPrefix {
    stat_prefix: String,
}

/// The waypoint's metrics registry and access log switch.
pub struct Telemetry {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Family<RequestLabels, Histogram, fn() -> Histogram>,
    request_bytes: Family<RequestLabels, Histogram, fn() -> Histogram>,
    response_bytes: Family<RequestLabels, Histogram, fn() -> Histogram>,
    rl_enabled: Family<StatPrefix, Counter>,
    rl_ok: Family<StatPrefix, Counter>,
    rl_rate_limited: Family<StatPrefix, Counter>,
    rl_enforced: Family<StatPrefix, Counter>,
    access_log: AtomicBool,
    /// Of the timeouts and limits.
    limits: LimitMetrics,
    /// Tells this registry's cached series from another's.
    id: usize,
}

static NEXT_TELEMETRY_ID: AtomicUsize = AtomicUsize::new(0);

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS_MS)
}

fn size_histogram() -> Histogram {
    Histogram::new(SIZE_BUCKETS)
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let duration = Family::new_with_constructor(duration_histogram as fn() -> Histogram);
        let request_bytes = Family::new_with_constructor(size_histogram as fn() -> Histogram);
        let response_bytes = Family::new_with_constructor(size_histogram as fn() -> Histogram);
        // Counters get `_total` appended by the encoder.
        registry.register(
            "istio_requests",
            "Requests by Istio's standard labels",
            requests.clone(),
        );
        registry.register(
            "istio_request_duration_milliseconds",
            "Time to the response head, milliseconds",
            duration.clone(),
        );
        registry.register(
            "istio_request_bytes",
            "Request body sizes",
            request_bytes.clone(),
        );
        registry.register(
            "istio_response_bytes",
            "Response body sizes (when known at the head)",
            response_bytes.clone(),
        );
        let rl = |registry: &mut Registry, name: &str, help: &str| {
            let f = Family::<StatPrefix, Counter>::default();
            registry.register(name, help, f.clone());
            f
        };
        // Envoy's `<stat_prefix>.http_local_rate_limit.*`, the prefix as a label.
        let rl_enabled = rl(
            &mut registry,
            "envoy_http_local_rate_limit_enabled",
            "Requests the local rate limit checked",
        );
        let rl_ok = rl(
            &mut registry,
            "envoy_http_local_rate_limit_ok",
            "Requests under the local rate limit",
        );
        let rl_rate_limited = rl(
            &mut registry,
            "envoy_http_local_rate_limit_rate_limited",
            "Requests over the local rate limit",
        );
        let rl_enforced = rl(
            &mut registry,
            "envoy_http_local_rate_limit_enforced",
            "Requests denied by the local rate limit",
        );
        let limits = LimitMetrics::register(&mut registry);
        Telemetry {
            limits,
            registry,
            requests,
            duration,
            request_bytes,
            response_bytes,
            rl_enabled,
            rl_ok,
            rl_rate_limited,
            rl_enforced,
            access_log: AtomicBool::new(true),
            id: NEXT_TELEMETRY_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The metrics of the timeouts and limits.
    pub fn limits(&self) -> &LimitMetrics {
        &self.limits
    }

    /// Turns the access log off or on (the `--no-access-log` flag); the
    /// Telemetry config can only turn it off further.
    pub fn set_access_log(&self, on: bool) {
        self.access_log.store(on, Ordering::Relaxed);
    }

    /// The metrics in OpenMetrics text ([`METRICS_CONTENT_TYPE`]).
    pub fn metrics_text(&self) -> String {
        let mut s = String::new();
        // Writing into a String does not fail.
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }

    /// Counts one local rate limit check.
    pub fn record_rate_limit(&self, stat_prefix: &str, s: Stats) {
        let l = StatPrefix {
            stat_prefix: stat_prefix.to_string(),
        };
        for (on, f) in [
            (s.enabled, &self.rl_enabled),
            (s.ok, &self.rl_ok),
            (s.rate_limited, &self.rl_rate_limited),
            (s.enforced, &self.rl_enforced),
        ] {
            if on {
                f.get_or_create(&l).inc();
            }
        }
    }

    /// Records one request whose response head is `resp`; returns the
    /// response (its body counted when its length is not known yet).
    pub fn record(
        &self,
        meta: &RequestMeta,
        source: &SourceInfo,
        peer: SocketAddr,
        discovery: &dyn Discovery,
        resp: Response<ProxyBody>,
        started: Instant,
    ) -> Response<ProxyBody> {
        let elapsed = started.elapsed();
        let upstream = resp.extensions().get::<UpstreamHost>();
        let dest_wl = upstream.and_then(|u| discovery.workload(u.addr.ip()));
        let flag = resp.extensions().get::<ResponseFlag>().map(|f| f.0);
        let key = SeriesKeyRef {
            telemetry: self.id,
            destination_workload: dest_wl.as_ref(),
            destination_service: meta.destination_service.as_deref(),
            destination_app: upstream.and_then(|u| app_of(&u.labels)),
            destination_version: upstream.and_then(|u| version_of(&u.labels)),
            grpc: meta.grpc,
            grpc_status: if meta.grpc {
                resp.headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
            } else {
                None
            },
            code: resp.status().as_u16(),
            flag,
            delayed: meta.delayed,
        };
        let series = match source.series.get(&key) {
            Some(s) => s,
            None => {
                let s = self.series(&request_labels(&key, source));
                source.series.put(key.to_owned(), s.clone());
                s
            }
        };
        let response_len = resp.body().size_hint().exact().or_else(|| {
            resp.headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
        });
        series.requests.inc();
        series.duration.observe(elapsed.as_secs_f64() * 1000.0);
        series.request_bytes.observe(meta.request_bytes as f64);
        if let Some(n) = response_len {
            series.response_bytes.observe(n as f64);
        }
        if meta.access_log && self.access_log.load(Ordering::Relaxed) {
            let flags = response_flags(flag, meta.delayed);
            access_log(meta, &flags, peer, upstream, response_len, elapsed, &resp);
        }
        if response_len.is_some() {
            return resp;
        }
        let histogram = series.response_bytes;
        resp.map(|body| {
            CountingBody {
                inner: body,
                bytes: 0,
                histogram: Some(histogram),
            }
            .boxed_unsync()
        })
    }
}

impl Telemetry {
    /// The series of `labels`, created when new.
    fn series(&self, labels: &RequestLabels) -> Series {
        Series {
            requests: self.requests.get_or_create(labels).clone(),
            duration: self.duration.get_or_create(labels).clone(),
            request_bytes: self.request_bytes.get_or_create(labels).clone(),
            response_bytes: self.response_bytes.get_or_create(labels).clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::*;
    use crate::body::local_reply;
    use crate::discovery::StaticDiscovery;
    use crate::telemetry::flags::flagged;

    #[test]
    fn record_labels_and_text() {
        let t = Telemetry::new();
        let meta = RequestMeta {
            destination_service: Some("reviews.bookinfo.svc.cluster.local".into()),
            request_bytes: 3,
            ..RequestMeta::default()
        };
        let r = flagged(
            local_reply(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream"),
            ResponseFlag::NO_HEALTHY_UPSTREAM,
        );
        let peer: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        let disc = StaticDiscovery::new();
        let _ = t.record(
            &meta,
            &SourceInfo::default(),
            peer,
            &disc,
            r,
            Instant::now(),
        );
        let text = t.metrics_text();
        let line = text
            .lines()
            .find(|l| l.starts_with("istio_requests_total{"))
            .expect("counter line");
        for want in [
            r#"reporter="waypoint""#,
            r#"response_code="503""#,
            r#"response_flags="UH""#,
            r#"destination_service_name="reviews""#,
            r#"destination_service_namespace="bookinfo""#,
            r#"source_workload="unknown""#,
            r#"connection_security_policy="none""#,
        ] {
            assert!(line.contains(want), "{want} in {line}");
        }
        assert!(line.ends_with(" 1"), "{line}");
        assert!(text.contains("istio_request_duration_milliseconds_bucket{"));
    }

    /// The value of `istio_requests_total` whose labels include all of `want`.
    fn count(text: &str, want: &[&str]) -> Option<u64> {
        text.lines()
            .filter(|l| l.starts_with("istio_requests_total{"))
            .find(|l| want.iter().all(|w| l.contains(w)))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn cached_series_keep_each_request_s_labels() {
        let t = Telemetry::new();
        let other = Telemetry::new();
        let peer: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        let disc = StaticDiscovery::new();
        let src = SourceInfo::default();
        let up = |app: &str| UpstreamHost {
            addr: "10.0.0.1:80".parse().expect("addr"),
            labels: [("app".to_string(), app.to_string())].into(),
        };
        let send = |t: &Telemetry, svc: &str, code: StatusCode, app: &str, delayed: bool| {
            let meta = RequestMeta {
                destination_service: Some(svc.into()),
                delayed,
                ..RequestMeta::default()
            };
            let mut r = local_reply(code, "x");
            r.extensions_mut().insert(up(app));
            let _ = t.record(&meta, &src, peer, &disc, r, Instant::now());
        };
        // One connection (one SourceInfo), label sets interleaved, more of
        // them than the cache holds.
        for _ in 0..3 {
            send(&t, "a.ns1.svc.cluster.local", StatusCode::OK, "a", false);
            send(
                &t,
                "a.ns1.svc.cluster.local",
                StatusCode::NOT_FOUND,
                "a",
                false,
            );
            send(&t, "b.ns2.svc.cluster.local", StatusCode::OK, "b", false);
            send(&t, "a.ns1.svc.cluster.local", StatusCode::OK, "a2", false);
            send(&t, "a.ns1.svc.cluster.local", StatusCode::OK, "a", true);
            send(
                &other,
                "a.ns1.svc.cluster.local",
                StatusCode::OK,
                "a",
                false,
            );
        }
        let text = t.metrics_text();
        let a = r#"destination_service="a.ns1.svc.cluster.local""#;
        assert_eq!(
            count(
                &text,
                &[
                    a,
                    r#"response_code="200""#,
                    r#"destination_app="a""#,
                    r#"response_flags="-""#
                ]
            ),
            Some(3),
            "{text}"
        );
        assert_eq!(count(&text, &[a, r#"response_code="404""#]), Some(3));
        assert_eq!(
            count(
                &text,
                &[
                    r#"destination_service_namespace="ns2""#,
                    r#"destination_app="b""#
                ]
            ),
            Some(3)
        );
        assert_eq!(count(&text, &[a, r#"destination_app="a2""#]), Some(3));
        assert_eq!(count(&text, &[a, r#"response_flags="DI""#]), Some(3));
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("istio_requests_total{"))
                .count(),
            5
        );
        let text = other.metrics_text();
        assert_eq!(count(&text, &[a]), Some(3), "{text}");
        // A copy under another principal does not reuse the old series.
        let src2 = src.clone().with_principal("spiffe://td/ns/x/sa/y");
        let meta = RequestMeta {
            destination_service: Some("a.ns1.svc.cluster.local".into()),
            ..RequestMeta::default()
        };
        let mut r = local_reply(StatusCode::OK, "x");
        r.extensions_mut().insert(up("a"));
        let _ = t.record(&meta, &src2, peer, &disc, r, Instant::now());
        let text = t.metrics_text();
        assert_eq!(
            count(&text, &[a, r#"source_principal="spiffe://td/ns/x/sa/y""#]),
            Some(1),
            "{text}"
        );
    }
}
