//! The request as the tries send it upstream, built once after the route's
//! action chose to forward: the body (streamed and kept for retries up to
//! [`Options::max_request_body`], or, on a route with mirrors, read whole
//! so the copies can be sent too: over the limit `413`), the route's
//! rewrite, hop-by-hop headers dropped, `x-request-id` and
//! `x-forwarded-proto` set, trace context propagated, and the route's and
//! destination's request header operations.
//!
//! [`Options::max_request_body`]: crate::engine::Options::max_request_body

use std::net::IpAddr;

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use rand::Rng;

use super::head::Head;
use super::reply::Reply;
use super::route::Routed;
use crate::body::local_reply;
use crate::headers::HeaderRules;
use crate::limits::BodyBudget;
use crate::replay::UpstreamBody;
use crate::telemetry::{flagged, RequestMeta, ResponseFlag};

/// A request ready to be sent upstream; each try builds its own from it.
#[derive(Clone)]
pub struct Upstream {
    pub method: Method,
    pub path_and_query: String,
    pub authority: String,
    pub headers: HeaderMap,
    pub body: UpstreamBody,
    pub source_ip: IpAddr,
    /// The downstream request's version (the upstream protocol follows it).
    pub version: http::Version,
    /// The downstream asked for trailers (`te: trailers`, gRPC).
    pub te_trailers: bool,
}

/// How the request is forwarded, besides what the [`Head`] says.
pub struct Forwarding<'a> {
    pub routed: &'a Routed<'a>,
    /// The route's header operations merged with the destination's.
    pub rules: &'a HeaderRules,
    pub source_ip: IpAddr,
    /// Of the destination host's Telemetry.
    pub sampling_percent: f64,
}

impl Upstream {
    /// The request body for the tries (and mirrors); what is buffered is
    /// taken from `budget`, shared by every request. A mirrored body the
    /// budget cannot hold is refused with `503` and `x-envoy-overloaded:
    /// true`, as Envoy's overload manager refuses work it cannot take.
    pub async fn body(
        body: Incoming,
        mirrored: bool,
        limit: usize,
        budget: &Arc<BodyBudget>,
    ) -> Result<UpstreamBody, Reply> {
        if body.is_end_stream() {
            return Ok(UpstreamBody::full(Bytes::new()));
        }
        if !mirrored {
            return Ok(UpstreamBody::streaming_within(
                body,
                limit,
                Some(budget.reservation()),
            ));
        }
        // Mirrors run beside the primary: each needs the whole body.
        let mut reservation = budget.reservation();
        let mut buf = BytesMut::new();
        let mut body = body;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                return Err(local_reply(
                    StatusCode::BAD_REQUEST,
                    "request body could not be read",
                ));
            };
            let Ok(data) = frame.into_data() else {
                // Trailers: a buffered body is sent without them.
                continue;
            };
            if buf.len() + data.len() > limit {
                return Err(local_reply(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request body too large",
                ));
            }
            if !reservation.grow(data.len()) {
                return Err(overloaded());
            }
            buf.extend_from_slice(&data);
        }
        Ok(UpstreamBody::full_within(buf.freeze(), reservation))
    }

    /// The upstream request from the downstream `head` (its headers are
    /// moved out: the head is not needed past here).
    pub fn new(
        head: &mut Head,
        body: UpstreamBody,
        f: Forwarding<'_>,
        meta: &mut RequestMeta,
    ) -> Self {
        let route = &f.routed.route;
        let mut new_path = head.path.clone();
        let mut new_authority = head.authority.clone();
        if let Some(rw) = &route.rewrite {
            if let Some(p) = &rw.path {
                new_path = p.apply(&head.path, f.routed.matched);
            }
            if let Some(a) = &rw.authority {
                new_authority = a.clone();
            }
        }
        let mut headers = std::mem::take(&mut head.parts.headers);
        // `te: trailers` is hop-by-hop, but HTTP/2 upstreams need it.
        let te_trailers = headers
            .get_all(header::TE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
            });
        strip_hop_by_hop(&mut headers, false);
        headers.remove(header::HOST);
        if !headers.contains_key("x-request-id") {
            if let Some(v) = request_id() {
                headers.insert("x-request-id", v);
            }
        }
        if let Ok(v) = HeaderValue::from_str(&head.scheme) {
            headers.insert("x-forwarded-proto", v);
        }
        // Trace context for the upstream (and mirrors, retries).
        meta.request_id = headers.get("x-request-id").cloned();
        crate::trace::propagate(&mut headers, f.sampling_percent, &mut rand::thread_rng());
        f.rules.request.apply(&mut headers);
        Upstream {
            method: head.parts.method.clone(),
            path_and_query: match &head.query {
                Some(q) => format!("{new_path}?{q}"),
                None => new_path,
            },
            authority: new_authority,
            headers,
            body,
            source_ip: f.source_ip,
            version: head.parts.version,
            te_trailers,
        }
    }

    /// The request for an HTTP/1.1 upstream.
    pub fn build(&self) -> Result<Request<UpstreamBody>, http::Error> {
        let mut r = Request::builder()
            .method(self.method.clone())
            .uri(self.path_and_query.as_str())
            .body(self.body.replay())?;
        *r.headers_mut() = self.headers.clone();
        let host = HeaderValue::from_str(&self.authority).map_err(http::Error::from)?;
        r.headers_mut().insert(header::HOST, host);
        Ok(r)
    }

    /// The request for an HTTP/2 upstream: authority and scheme in the URI
    /// (`:authority`, `:scheme`), no `host`, `te: trailers` kept (gRPC).
    pub fn build_h2(&self) -> Result<Request<UpstreamBody>, http::Error> {
        let uri = http::Uri::builder()
            .scheme("http")
            .authority(self.authority.as_str())
            .path_and_query(self.path_and_query.as_str())
            .build()?;
        let mut r = Request::builder()
            .method(self.method.clone())
            .version(http::Version::HTTP_2)
            .uri(uri)
            .body(self.body.replay())?;
        *r.headers_mut() = self.headers.clone();
        if self.te_trailers {
            r.headers_mut()
                .insert(header::TE, HeaderValue::from_static("trailers"));
        }
        Ok(r)
    }

    pub fn query(&self) -> Option<&str> {
        self.path_and_query.split_once('?').map(|(_, q)| q)
    }
}

/// `503`, `x-envoy-overloaded: true`, flag `OM`: the body budget is spent.
fn overloaded() -> Reply {
    let mut r = flagged(
        local_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "request body buffers are full",
        ),
        ResponseFlag::OVERLOAD_MANAGER,
    );
    r.headers_mut()
        .insert("x-envoy-overloaded", HeaderValue::from_static("true"));
    r
}

/// Headers that belong to one connection, never forwarded.
const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::CONTENT_LENGTH,
];

/// Drops the hop-by-hop headers (and those `connection` lists); responses
/// keep `content-length`.
pub fn strip_hop_by_hop(h: &mut HeaderMap, keep_length: bool) {
    let listed: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in listed {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        if keep_length && *n == header::CONTENT_LENGTH {
            continue;
        }
        h.remove(n);
    }
    h.remove("keep-alive");
    h.remove("proxy-connection");
}

/// 32 random hex digits, formatted without an allocation.
fn request_id() -> Option<HeaderValue> {
    let v: u128 = rand::thread_rng().gen();
    let mut buf = [0u8; 32];
    for (i, b) in buf.iter_mut().enumerate() {
        let nibble = (v >> (124 - 4 * i)) as u8 & 0xf;
        *b = b"0123456789abcdef"[nibble as usize];
    }
    HeaderValue::from_bytes(&buf).ok()
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::routes::Route;

    fn head(req: http::Request<()>) -> Head {
        Head::read(req.into_parts().0).expect("head")
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "close, x-listed"),
            ("x-listed", "1"),
            ("keep-alive", "5"),
            ("content-length", "3"),
            ("x-kept", "1"),
        ] {
            h.insert(k, HeaderValue::from_static(v));
        }
        let mut resp = h.clone();
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
        strip_hop_by_hop(&mut resp, true);
        assert!(resp.contains_key("content-length"));
    }

    #[test]
    fn request_ids_are_32_hex_digits() {
        let a = request_id().expect("id");
        assert_eq!(a.len(), 32);
        assert!(a.as_bytes().iter().all(u8::is_ascii_hexdigit));
        assert_ne!(Some(a), request_id());
    }

    #[test]
    fn the_upstream_request_carries_the_forwarding_headers() {
        let mut h = head(
            http::Request::builder()
                .uri("/p?q=1")
                .header("host", "svc:8080")
                .header("te", "trailers")
                .header("connection", "keep-alive")
                .header("x-request-id", "rid")
                .body(())
                .expect("request"),
        );
        let routed = Routed {
            route: Cow::Owned(Route::default_for("svc")),
            matched: None,
        };
        let mut meta = RequestMeta::default();
        let up = Upstream::new(
            &mut h,
            UpstreamBody::full(Bytes::new()),
            Forwarding {
                routed: &routed,
                rules: &HeaderRules::default(),
                source_ip: "10.0.0.1".parse().expect("ip"),
                sampling_percent: 0.0,
            },
            &mut meta,
        );
        assert_eq!(up.path_and_query, "/p?q=1");
        assert_eq!(up.authority, "svc:8080");
        assert_eq!(up.query(), Some("q=1"));
        assert!(up.te_trailers);
        assert!(!up.headers.contains_key("te") && !up.headers.contains_key("host"));
        assert_eq!(up.headers["x-forwarded-proto"], "http");
        assert_eq!(meta.request_id, Some(HeaderValue::from_static("rid")));
        let r = up.build().expect("h1");
        assert_eq!(r.headers()["host"], "svc:8080");
        let r = up.build_h2().expect("h2");
        assert_eq!(r.uri(), "http://svc:8080/p?q=1");
        assert_eq!(r.headers()["te"], "trailers");
    }
}
