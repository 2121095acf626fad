//! The access log: one Envoy-like `key=value` line per request (a tracing
//! event at info, target `access`), with its start time in RFC 3339.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use http::Response;

use super::flags::UpstreamHost;
use super::meta::RequestMeta;
use crate::body::ProxyBody;

pub(super) fn access_log(
    meta: &RequestMeta,
    flags: &str,
    peer: SocketAddr,
    upstream: Option<&UpstreamHost>,
    response_len: Option<u64>,
    elapsed: Duration,
    resp: &Response<ProxyBody>,
) {
    let start = SystemTime::now()
        .checked_sub(elapsed)
        .unwrap_or_else(SystemTime::now);
    // The fields after `start_time` are written by its value, so that the
    // fmt layer does its per-field work (styling, and char-by-char escaping
    // were this a message) once, not 15 times; the text is the same
    // `key=value` line. (A JSON formatter sees them all in `start_time`.)
    tracing::info!(
        target: "access",
        start_time = ?AccessLine {
            start,
            meta,
            flags,
            peer,
            upstream,
            response_len,
            elapsed,
            code: resp.status().as_u16(),
        },
        "access"
    );
}

/// The access log line from the `start_time` value on, as `key=value`
/// pairs.
struct AccessLine<'a> {
    start: SystemTime,
    meta: &'a RequestMeta,
    flags: &'a str,
    peer: SocketAddr,
    upstream: Option<&'a UpstreamHost>,
    response_len: Option<u64>,
    elapsed: Duration,
    code: u16,
}

impl std::fmt::Debug for AccessLine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.meta;
        write!(
            f,
            "{} method={} path={} protocol={:?} response_code={} \
             response_flags={} bytes_received={} bytes_sent=",
            Rfc3339(self.start),
            m.method,
            m.path,
            m.version,
            self.code,
            self.flags,
            m.request_bytes,
        )?;
        match self.response_len {
            Some(n) => write!(f, "{n}")?,
            None => f.write_str("-")?,
        }
        write!(
            f,
            " duration_ms={} upstream_host=",
            self.elapsed.as_millis() as u64
        )?;
        match self.upstream {
            Some(u) => write!(f, "{}", u.addr)?,
            None => f.write_str("-")?,
        }
        write!(
            f,
            " x_request_id={} authority={} downstream_peer={} route_name={}",
            m.request_id
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-"),
            m.authority,
            self.peer,
            m.route_name.as_deref().unwrap_or("-"),
        )
    }
}

/// `2026-12-01T18:07:04.123Z`: UTC, milliseconds, `Z`.
pub fn rfc3339(t: SystemTime) -> String {
    Rfc3339(t).to_string()
}

/// [`rfc3339`] without the `String`.
struct Rfc3339(SystemTime);

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A clock before 1970 (or past 9999) is written as the epoch.
        let t = jiff::Timestamp::try_from(self.0)
            .ok()
            .filter(|t| *t >= jiff::Timestamp::UNIX_EPOCH)
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        // Precision 3: milliseconds, the rest truncated.
        write!(f, "{t:.3}")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use http::StatusCode;

    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::body::local_reply;
    use crate::discovery::StaticDiscovery;
    use crate::telemetry::labels::SourceInfo;
    use crate::telemetry::registry::Telemetry;

    /// Collects formatted tracing output.
    #[derive(Clone, Default)]
    struct Buf(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn access_log_line_and_switches() {
        let buf = Buf::default();
        let w = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_writer(move || w.clone())
            .with_ansi(false)
            .finish();
        let t = Telemetry::new();
        let mut meta = RequestMeta::from_request(
            &http::Request::builder()
                .uri("/ratings/1?x=y")
                .header("host", "ratings.bookinfo:9080")
                .header("x-request-id", "rid-1")
                .body(())
                .expect("request"),
        );
        meta.route_name = Some("r1".into());
        let peer: SocketAddr = "10.0.0.9:5555".parse().expect("addr");
        let disc = StaticDiscovery::new();
        tracing::subscriber::with_default(sub, || {
            let _ = t.record(
                &meta,
                &SourceInfo::default(),
                peer,
                &disc,
                local_reply(StatusCode::OK, "hello"),
                Instant::now(),
            );
            meta.access_log = false; // Telemetry `accessLogging: disabled`
            let _ = t.record(
                &meta,
                &SourceInfo::default(),
                peer,
                &disc,
                local_reply(StatusCode::OK, "hello"),
                Instant::now(),
            );
            meta.access_log = true;
            t.set_access_log(false); // --no-access-log
            let _ = t.record(
                &meta,
                &SourceInfo::default(),
                peer,
                &disc,
                local_reply(StatusCode::OK, "hello"),
                Instant::now(),
            );
        });
        let out = String::from_utf8(buf.0.lock().expect("lock").clone()).expect("utf8");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 1, "{out}");
        for want in [
            " access: ",
            "method=GET",
            "path=/ratings/1",
            "response_code=200",
            "response_flags=-",
            "bytes_sent=5",
            "x_request_id=rid-1",
            "authority=ratings.bookinfo:9080",
            "downstream_peer=10.0.0.9:5555",
            "route_name=r1",
            "protocol=HTTP/1.1",
        ] {
            assert!(lines[0].contains(want), "{want} in {}", lines[0]);
        }
    }

    #[test]
    fn rfc3339_formats_utc() {
        let t = UNIX_EPOCH + Duration::from_millis(1_796_148_424_123);
        assert_eq!(rfc3339(t), "2026-12-01T18:07:04.123Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn rfc3339_truncates_to_milliseconds_and_clamps_to_the_epoch() {
        let t = UNIX_EPOCH + Duration::from_nanos(1_796_148_424_123_999_999);
        assert_eq!(rfc3339(t), "2026-12-01T18:07:04.123Z");
        let before = UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(rfc3339(before), "1970-01-01T00:00:00.000Z");
    }
}
