//! Envoy's response flags and the other facts the request path attaches
//! to a response for telemetry: who answered.

use std::borrow::Cow;
use std::net::SocketAddr;

use http::Response;

use crate::body::ProxyBody;
use crate::discovery::Labels;

/// Envoy's response flags, as a response extension set where a local
/// reply is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseFlag(pub &'static str);

impl ResponseFlag {
    /// Circuit breaker overflow.
    pub const UPSTREAM_OVERFLOW: Self = ResponseFlag("UO");
    pub const NO_HEALTHY_UPSTREAM: Self = ResponseFlag("UH");
    pub const UPSTREAM_CONNECT_FAILURE: Self = ResponseFlag("UF");
    pub const UPSTREAM_CONNECTION_TERMINATION: Self = ResponseFlag("UC");
    pub const UPSTREAM_TIMEOUT: Self = ResponseFlag("UT");
    pub const FAULT_ABORT: Self = ResponseFlag("FI");
    pub const FAULT_DELAY: Self = ResponseFlag("DI");
    pub const NO_ROUTE: Self = ResponseFlag("NR");
    pub const RATE_LIMITED: Self = ResponseFlag("RL");
    /// Refused for want of a shared resource (the body budget).
    pub const OVERLOAD_MANAGER: Self = ResponseFlag("OM");
}

/// Marks a (local) response with a flag.
pub fn flagged(mut r: Response<ProxyBody>, f: ResponseFlag) -> Response<ProxyBody> {
    r.extensions_mut().insert(f);
    r
}

/// The endpoint that answered, as a response extension.
#[derive(Clone, Debug)]
pub struct UpstreamHost {
    pub addr: SocketAddr,
    pub labels: Labels,
}

/// Envoy's response flags of a request: a local reply's flag, `DI` for an
/// injected delay, `-` for none.
pub fn response_flags(flag: Option<&'static str>, delayed: bool) -> Cow<'static, str> {
    match (flag, delayed) {
        (None, false) => Cow::Borrowed("-"),
        (Some(f), false) => Cow::Borrowed(f),
        (None, true) => Cow::Borrowed("DI"),
        (Some(f), true) => Cow::Owned(format!("DI,{f}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_of_a_request() {
        assert_eq!(response_flags(None, false), "-");
        assert_eq!(response_flags(Some("UH"), false), "UH");
        assert_eq!(response_flags(None, true), "DI");
        assert_eq!(response_flags(Some("FI"), true), "DI,FI");
    }
}
