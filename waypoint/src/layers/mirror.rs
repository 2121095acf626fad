//! Mirrors: each sampled mirror of the route gets a copy of the upstream
//! request (authority `-shadow`), sent fire-and-forget without retries and
//! abandoned after [`Options::mirror_timeout`]; the caller only ever sees
//! the primary's answer.
//!
//! [`Options::mirror_timeout`]: crate::engine::Options::mirror_timeout

use std::sync::Arc;

use http_body_util::BodyExt;

use super::retry;
use super::upstream::Upstream;
use crate::destination::DestinationRef;
use crate::engine::Waypoint;
use crate::mirror::{shadow_authority, MirrorPolicy};
use crate::resilience::RetryPolicy;

/// Spawns the copies of `up` the route's `mirrors` draw.
pub fn spawn(wp: &Arc<Waypoint>, mirrors: &[MirrorPolicy], up: &Upstream) {
    for m in mirrors {
        if m.sample(&mut rand::thread_rng()) {
            let mut copy = up.clone();
            copy.authority = shadow_authority(&up.authority);
            spawn_one(wp, m.destination.clone(), copy);
        }
    }
}

fn spawn_one(wp: &Arc<Waypoint>, dest: DestinationRef, up: Upstream) {
    let wp = wp.clone();
    let limit = wp.options.mirror_timeout;
    tokio::spawn(async move {
        let work = async {
            let r = retry::forward(&wp, &dest, &RetryPolicy::none(), &up).await;
            // Read the body so the connection can be reused.
            let _ = r.into_body().collect().await;
        };
        if tokio::time::timeout(limit, work).await.is_err() {
            tracing::debug!(host = %dest.host, "mirrored request abandoned");
        }
    });
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::config::Config;
    use crate::connector::TcpConnector;
    use crate::discovery::{Endpoint, StaticDiscovery};
    use crate::replay::UpstreamBody;

    #[tokio::test]
    async fn a_sampled_mirror_gets_a_shadow_copy() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let disc = StaticDiscovery::new().with("shadowed", vec![Endpoint::new(addr, &[])]);
        let wp = Waypoint::new(Config::default(), Arc::new(disc), Arc::new(TcpConnector));
        let up = Upstream {
            method: http::Method::GET,
            path_and_query: "/m".into(),
            authority: "svc:80".into(),
            headers: Default::default(),
            body: UpstreamBody::full(Bytes::new()),
            source_ip: "127.0.0.1".parse().expect("ip"),
            version: http::Version::HTTP_11,
            te_trailers: false,
        };
        let never = MirrorPolicy {
            destination: DestinationRef::host("shadowed"),
            percent: 0.0,
        };
        let always = MirrorPolicy {
            percent: 100.0,
            ..never.clone()
        };
        spawn(&wp, &[never, always], &up);
        let (mut s, _) = tokio::time::timeout(std::time::Duration::from_secs(5), listener.accept())
            .await
            .expect("the copy arrives")
            .expect("accept");
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.expect("read");
            assert!(n > 0, "connection closed before the head");
            head.extend_from_slice(&buf[..n]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        assert!(head.starts_with("get /m http/1.1"), "{head}");
        assert!(head.contains("host: svc-shadow:80"), "{head}");
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await
            .expect("answer");
    }
}
