//! Timeouts and retries. The route timeout bounds the whole exchange, its
//! retries included, to the response head (`504`, `UT`); the body then
//! streams unbounded. Each try picks an endpoint ([`balance`]), sends
//! ([`connect`]) under `perTryTimeout`, and reports to outlier detection;
//! a retriable outcome is tried again after a backoff while attempts
//! remain and the body can be sent again (one too long to keep, or still
//! being sent by the last try, cannot: no retry, as Envoy).
//!
//! [`balance`]: super::balance
//! [`connect`]: super::connect

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use super::balance;
use super::connect;
use super::reply::{no_healthy_upstream, upstream_timeout, Reply};
use super::upstream::Upstream;
use crate::destination::DestinationRef;
use crate::engine::{Cluster, Waypoint};
use crate::resilience::{Outcome, RetryPolicy};

/// `fwd` under the route timeout, if any.
pub async fn within(timeout: Option<Duration>, fwd: impl Future<Output = Reply>) -> Reply {
    match timeout {
        Some(t) => match tokio::time::timeout(t, fwd).await {
            Ok(r) => r,
            Err(_) => upstream_timeout(),
        },
        None => fwd.await,
    }
}

/// Sends `up` to `dest`, retrying under `retry`.
pub async fn forward(
    wp: &Waypoint,
    dest: &DestinationRef,
    retry: &RetryPolicy,
    up: &Upstream,
) -> Reply {
    let cluster = match wp.cluster(dest) {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %e, "destination not resolved");
            return no_healthy_upstream();
        }
    };
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut retries = 0;
    loop {
        let (addr, outcome, response) =
            match try_once(wp, &cluster, dest, up, &tried, retry.per_try_timeout).await {
                Ok(done) => done,
                Err(nothing_to_try) => return nothing_to_try,
            };
        tried.push(addr);
        if retries < retry.attempts && retry.on.retriable(&outcome) && up.body.can_replay() {
            retries += 1;
            drop(response);
            tokio::time::sleep(retry.backoff(retries)).await;
            continue;
        }
        return response;
    }
}

/// One try: the endpoint it went to, how it ended and the response. `Err`:
/// no endpoint to try, the answer without retries.
async fn try_once(
    wp: &Waypoint,
    cluster: &Cluster,
    dest: &DestinationRef,
    up: &Upstream,
    tried: &[SocketAddr],
    per_try: Option<Duration>,
) -> Result<(SocketAddr, Outcome, Reply), Reply> {
    let picked = balance::pick(&*wp.discovery, cluster, dest, up, tried)?;
    let ep = &picked.endpoint;
    let attempt = connect::attempt(cluster, ep, up);
    let (outcome, response) = match per_try {
        Some(t) => match tokio::time::timeout(t, attempt).await {
            Ok(r) => r,
            Err(_) => (Outcome::PerTryTimeout, upstream_timeout()),
        },
        None => attempt.await,
    };
    if let Some(o) = &cluster.outlier {
        o.record(ep.addr, &outcome, picked.endpoints);
    }
    Ok((ep.addr, outcome, response))
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

    #[tokio::test]
    async fn the_route_timeout_answers_504() {
        let slow = async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            local_reply(StatusCode::OK, "late")
        };
        let r = within(Some(Duration::from_millis(10)), slow).await;
        assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
        let r = within(None, async { local_reply(StatusCode::OK, "") }).await;
        assert_eq!(r.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn a_destination_without_endpoints_is_a_503_without_retries() {
        let wp = Waypoint::new(
            Config::default(),
            Arc::new(StaticDiscovery::new()),
            Arc::new(TcpConnector),
        );
        let up = Upstream {
            method: http::Method::GET,
            path_and_query: "/".into(),
            authority: "svc".into(),
            headers: Default::default(),
            body: crate::replay::UpstreamBody::full(bytes::Bytes::new()),
            source_ip: "10.0.0.1".parse().expect("ip"),
            version: http::Version::HTTP_11,
            te_trailers: false,
        };
        let started = std::time::Instant::now();
        let r = forward(
            &wp,
            &DestinationRef::host("svc"),
            &RetryPolicy::default(),
            &up,
        )
        .await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        // No backoff was slept: nothing was tried.
        assert!(started.elapsed() < Duration::from_millis(25));
    }
}
