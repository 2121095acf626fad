//! Telemetry, around the whole chain: what the request is (method, path,
//! authority, gRPC or not) is noted before the first stage, the stages
//! fill in the rest (route, destination service, fault delay, request id
//! and bytes), and once the response head is known the request is counted
//! in Istio's metrics and written to the access log, local replies and
//! forwarded responses alike (a gRPC caller's local reply first becomes a
//! gRPC status, as the caller gets it).

use std::time::Instant;

use http::Request;

use super::grpc;
use super::reply::Reply;
use crate::engine::Waypoint;
use crate::peer::Peer;
use crate::telemetry::RequestMeta;

/// One request's telemetry from its first stage on.
pub struct Observed {
    started: Instant,
    pub meta: RequestMeta,
}

impl Observed {
    pub fn start<B>(req: &Request<B>) -> Self {
        Observed {
            started: Instant::now(),
            meta: RequestMeta::from_request(req),
        }
    }

    /// Records the request answered with `resp` and returns the response
    /// (its body counted as it streams when its length is not known yet).
    pub fn finish(self, wp: &Waypoint, peer: &Peer, resp: Reply) -> Reply {
        let resp = if self.meta.grpc {
            grpc::local_reply_as_status(resp)
        } else {
            resp
        };
        wp.telemetry.record(
            &self.meta,
            &peer.source,
            peer.addr,
            &*wp.discovery,
            resp,
            self.started,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use http::StatusCode;

    use super::*;
    use crate::body::local_reply;
    use crate::config::Config;
    use crate::connector::TcpConnector;
    use crate::discovery::StaticDiscovery;
    use crate::telemetry::SourceInfo;

    #[test]
    fn a_grpc_local_reply_is_counted_as_the_caller_got_it() {
        let wp = Waypoint::new(
            Config::default(),
            Arc::new(StaticDiscovery::new()),
            Arc::new(TcpConnector),
        );
        let req = Request::builder()
            .uri("/pkg.Svc/Call")
            .header("host", "svc")
            .header("content-type", "application/grpc")
            .body(())
            .expect("request");
        let o = Observed::start(&req);
        assert!(o.meta.grpc);
        assert_eq!(o.meta.authority, "svc");
        let peer = Peer {
            addr: "10.0.0.1:4000".parse().expect("addr"),
            labels: Default::default(),
            identity: None,
            source: SourceInfo::default(),
        };
        let r = o.finish(&wp, &peer, local_reply(StatusCode::NOT_FOUND, "x"));
        assert_eq!(r.status(), StatusCode::OK);
        let text = wp.metrics_text();
        assert!(
            text.lines().any(|l| l.starts_with("istio_requests_total{")
                && l.contains(r#"response_code="200""#)
                && l.contains(r#"grpc_response_status="12""#)
                && l.contains(r#"request_protocol="grpc""#)),
            "{text}"
        );
    }
}
