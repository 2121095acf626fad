//! One try's connection and exchange: a lease from the destination's pool
//! (the circuit breaker: over its limits `503` with
//! `x-envoy-overloaded: true`, `UO`), the request sent, the response head
//! awaited. The response body streams on and keeps the lease until it
//! ends.
//!
//! The upstream protocol follows the downstream request (Envoy's
//! `USE_DOWNSTREAM_PROTOCOL`), or is HTTP/2 under `h2UpgradePolicy:
//! UPGRADE`; an endpoint that failed HTTP/2 before ever answering in it is
//! taken for HTTP/1.1-only.

use http::header::HeaderValue;
use http::{Response, StatusCode};
use http_body_util::BodyExt;

use super::reply::Reply;
use super::upstream::{strip_hop_by_hop, Upstream};
use crate::body::{local_reply, GuardedBody};
use crate::discovery::Endpoint;
use crate::engine::Cluster;
use crate::pool::{PoolError, PoolLimits, Proto};
use crate::resilience::Outcome;
use crate::telemetry::{flagged, ResponseFlag, UpstreamHost};

/// Sends `up` to `ep` once; how it went (for retries and outlier
/// detection) and the response.
pub async fn attempt(cluster: &Cluster, ep: &Endpoint, up: &Upstream) -> (Outcome, Reply) {
    // A pooled connection the upstream closed while idle fails before
    // the request is written; hyper hands the request back and it is
    // sent once more on another connection (not a retry: nothing was
    // sent).
    let mut resent = false;
    let mut fell_back = false;
    loop {
        let mut proto = protocol(up, &cluster.pool.limits);
        if proto == Proto::Http2 && cluster.pool.h1_only(ep.addr) {
            proto = Proto::Http1;
        }
        let mut lease = match cluster.pool.acquire_proto(ep, proto).await {
            Ok(l) => l,
            Err(PoolError::Overflow(_)) => return (Outcome::Overflow, overloaded()),
            Err(e) => {
                tracing::debug!(endpoint = %ep.addr, error = %e, "upstream connect failed");
                return (
                    Outcome::ConnectFailure,
                    flagged(
                        local_reply(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
                        ),
                        ResponseFlag::UPSTREAM_CONNECT_FAILURE,
                    ),
                );
            }
        };
        let req = match lease.proto() {
            Some(Proto::Http2) => up.build_h2(),
            _ => up.build(),
        };
        let Ok(req) = req else {
            return (
                Outcome::Response {
                    status: StatusCode::BAD_REQUEST,
                    grpc_status: None,
                },
                local_reply(StatusCode::BAD_REQUEST, "request cannot be forwarded"),
            );
        };
        let Some(sender) = lease.sender() else {
            return (
                Outcome::Reset,
                local_reply(StatusCode::SERVICE_UNAVAILABLE, "no connection"),
            );
        };
        let sent = sender.try_send_request(req).await;
        if proto == Proto::Http2 && cluster.pool.h2_result(ep.addr, sent.is_ok()) && !fell_back {
            tracing::debug!(endpoint = %ep.addr, "HTTP/2 refused; HTTP/1.1 from now on");
            fell_back = true;
            drop(lease);
            continue;
        }
        match sent {
            Ok(resp) => {
                let grpc_status = resp
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok());
                let outcome = Outcome::Response {
                    status: resp.status(),
                    grpc_status,
                };
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers, true);
                // Who answered, for the destination labels of metrics.
                parts.extensions.insert(UpstreamHost {
                    addr: ep.addr,
                    labels: ep.labels.clone(),
                });
                let body = GuardedBody::new(body, lease)
                    .map_err(|e| -> crate::body::BoxError { Box::new(e) })
                    .boxed_unsync();
                return (outcome, Response::from_parts(parts, body));
            }
            Err(mut e) => {
                if e.take_message().is_some() && !resent {
                    resent = true;
                    drop(lease);
                    continue;
                }
                let outcome = if refused_stream(e.error()) {
                    Outcome::RefusedStream
                } else {
                    Outcome::Reset
                };
                tracing::debug!(endpoint = %ep.addr, error = %e.error(), "upstream request failed");
                return (
                    outcome,
                    flagged(
                        local_reply(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "upstream connect error or disconnect/reset before headers. reset reason: connection termination",
                        ),
                        ResponseFlag::UPSTREAM_CONNECTION_TERMINATION,
                    ),
                );
            }
        }
    }
}

/// The protocol the request asks for: the downstream's, or HTTP/2 under
/// `h2UpgradePolicy: UPGRADE`.
fn protocol(up: &Upstream, limits: &PoolLimits) -> Proto {
    if up.version == http::Version::HTTP_2 || limits.h2_upgrade {
        Proto::Http2
    } else {
        Proto::Http1
    }
}

/// The circuit breaker's reply.
fn overloaded() -> Reply {
    let mut r = local_reply(
        StatusCode::SERVICE_UNAVAILABLE,
        "upstream connect error or disconnect/reset before headers. reset reason: overflow",
    );
    r.headers_mut()
        .insert("x-envoy-overloaded", HeaderValue::from_static("true"));
    flagged(r, ResponseFlag::UPSTREAM_OVERFLOW)
}

/// Is this hyper error an HTTP/2 REFUSED_STREAM?
fn refused_stream(e: &hyper::Error) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(h) = s.downcast_ref::<h2::Error>() {
            return h.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        src = s.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::{HeaderMap, Method};

    use super::*;
    use crate::replay::UpstreamBody;

    fn upstream(version: http::Version) -> Upstream {
        Upstream {
            method: Method::GET,
            path_and_query: "/".into(),
            authority: "svc".into(),
            headers: HeaderMap::new(),
            body: UpstreamBody::full(Bytes::new()),
            source_ip: "10.0.0.1".parse().expect("ip"),
            version,
            te_trailers: false,
        }
    }

    #[test]
    fn the_protocol_follows_the_request_or_the_upgrade_policy() {
        let mut limits = PoolLimits::default();
        assert_eq!(
            protocol(&upstream(http::Version::HTTP_11), &limits),
            Proto::Http1
        );
        assert_eq!(
            protocol(&upstream(http::Version::HTTP_2), &limits),
            Proto::Http2
        );
        limits.h2_upgrade = true;
        assert_eq!(
            protocol(&upstream(http::Version::HTTP_11), &limits),
            Proto::Http2
        );
    }

    #[test]
    fn overflow_is_flagged_and_announced() {
        let r = overloaded();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()["x-envoy-overloaded"], "true");
        assert_eq!(
            r.extensions().get::<ResponseFlag>(),
            Some(&ResponseFlag::UPSTREAM_OVERFLOW)
        );
    }
}
