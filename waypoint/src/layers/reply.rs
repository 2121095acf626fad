//! What a stage answers with. Every stage returns `Result<_, Reply>`: the
//! `Err` is a local reply (or a redirect or direct response) that ends the
//! chain. The replies two stages share are here, with Envoy's texts and
//! response flags.

use http::{Response, StatusCode};

use crate::body::{local_reply, ProxyBody};
use crate::telemetry::{flagged, ResponseFlag};

/// A response the chain returns: forwarded from upstream, or made here.
pub type Reply = Response<ProxyBody>;

/// `503 no healthy upstream` (`UH`): no route destination, an unknown
/// subset, or no endpoint left to pick.
pub fn no_healthy_upstream() -> Reply {
    flagged(
        local_reply(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream"),
        ResponseFlag::NO_HEALTHY_UPSTREAM,
    )
}

/// `504 upstream request timeout` (`UT`): the route timeout or
/// `perTryTimeout` passed before the response head.
pub fn upstream_timeout() -> Reply {
    flagged(
        local_reply(StatusCode::GATEWAY_TIMEOUT, "upstream request timeout"),
        ResponseFlag::UPSTREAM_TIMEOUT,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_replies_carry_their_flags() {
        let r = no_healthy_upstream();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            r.extensions().get::<ResponseFlag>(),
            Some(&ResponseFlag::NO_HEALTHY_UPSTREAM)
        );
        let r = upstream_timeout();
        assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(
            r.extensions().get::<ResponseFlag>(),
            Some(&ResponseFlag::UPSTREAM_TIMEOUT)
        );
    }
}
