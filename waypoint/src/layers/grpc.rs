//! Local replies to gRPC callers: a local reply to a gRPC request becomes
//! a gRPC status (`grpc-status`, the reason in `grpc-message`) as Envoy's
//! do, so gRPC clients see a status instead of a bare HTTP error. Upstream
//! responses pass untouched.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::StatusCode;

use super::reply::Reply;
use crate::body::full;
use crate::telemetry::UpstreamHost;

/// `r` as the gRPC caller gets it.
pub fn local_reply_as_status(mut r: Reply) -> Reply {
    if r.extensions().get::<UpstreamHost>().is_some() || r.headers().contains_key("grpc-status") {
        return r;
    }
    // The gRPC HTTP-to-status mapping, except that a timeout is a deadline.
    let code: u16 = match r.status().as_u16() {
        200 => return r,
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        504 => 4,
        429 | 502 | 503 => 14,
        _ => 2,
    };
    let reason = r.status().canonical_reason().unwrap_or("local reply");
    // Envoy's form: a trailers-only response, `200` and no body.
    *r.status_mut() = StatusCode::OK;
    *r.body_mut() = full(Bytes::new());
    let h = r.headers_mut();
    h.insert("grpc-status", HeaderValue::from(code));
    h.insert("grpc-message", HeaderValue::from_static(reason));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::local_reply;

    #[test]
    fn local_replies_become_statuses() {
        for (status, grpc) in [(404, "12"), (503, "14"), (504, "4"), (403, "7"), (418, "2")] {
            let code = StatusCode::from_u16(status).expect("status");
            let r = local_reply_as_status(local_reply(code, "x"));
            assert_eq!(r.status(), StatusCode::OK, "{status}");
            assert_eq!(r.headers()["grpc-status"], grpc, "{status}");
            assert_eq!(r.headers()[header::CONTENT_TYPE], "application/grpc");
        }
        let r = local_reply_as_status(local_reply(StatusCode::NOT_FOUND, "x"));
        assert_eq!(r.headers()["grpc-message"], "Not Found");
    }

    #[test]
    fn upstream_answers_and_statuses_pass() {
        let mut r = local_reply(StatusCode::SERVICE_UNAVAILABLE, "x");
        r.extensions_mut().insert(UpstreamHost {
            addr: "10.0.0.1:80".parse().expect("addr"),
            labels: Default::default(),
        });
        assert_eq!(
            local_reply_as_status(r).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let mut r = local_reply(StatusCode::SERVICE_UNAVAILABLE, "x");
        r.headers_mut()
            .insert("grpc-status", HeaderValue::from_static("8"));
        assert_eq!(
            local_reply_as_status(r).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let ok = local_reply_as_status(local_reply(StatusCode::OK, "x"));
        assert!(!ok.headers().contains_key("grpc-status"));
    }
}
