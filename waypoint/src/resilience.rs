//! Timeouts and retries with Envoy's semantics, as Istio configures them.
//!
//! * `timeout` bounds the whole request, retries included (Istio's default:
//!   none). When it fires the caller gets `504 upstream request timeout`.
//! * `retries.attempts` is the number of *retries* (Envoy's `num_retries`),
//!   so a request is tried at most `attempts + 1` times; `attempts: 0`
//!   disables retries. Without `retries` Istio's default applies: 2 retries
//!   on `connect-failure,refused-stream,unavailable,cancelled,
//!   retriable-status-codes` with 503 as the retriable status.
//! * `perTryTimeout` bounds one try; a try that times out counts as a 504
//!   (so `5xx` and `gateway-error` retry it).
//! * Back-off between tries is Envoy's fully jittered exponential one:
//!   the n-th retry waits a random time in `[0, (2^n - 1) * base)`, capped
//!   at `10 * base`; `base` is `retries.backoff` or 25 ms.
//! * A response marked `x-envoy-overloaded` (circuit breaker overflow) is
//!   never retried.

use std::time::Duration;

use http::StatusCode;
use mesh_api::networking::HttpRetry;
use mesh_api::util::parse_duration;
use rand::Rng;

/// How one try ended, as far as retries and outlier detection care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered with this status (and gRPC status, if any).
    Response {
        status: StatusCode,
        grpc_status: Option<u32>,
    },
    /// The connection could not be established (or connectTimeout).
    ConnectFailure,
    /// The upstream reset / closed before a complete response head.
    Reset,
    /// HTTP/2 REFUSED_STREAM from the upstream.
    RefusedStream,
    /// `perTryTimeout` fired.
    PerTryTimeout,
    /// The circuit breaker refused the request (local; never retried).
    Overflow,
}

impl Outcome {
    /// The status Envoy would answer with for this outcome.
    pub fn status(&self) -> StatusCode {
        match self {
            Outcome::Response { status, .. } => *status,
            Outcome::PerTryTimeout => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Failed before reaching the application (locally originated).
    pub fn is_local_failure(&self) -> bool {
        matches!(
            self,
            Outcome::ConnectFailure
                | Outcome::Reset
                | Outcome::RefusedStream
                | Outcome::PerTryTimeout
        )
    }
}

/// The parsed `retryOn` list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetryOn {
    pub five_xx: bool,
    pub gateway_error: bool,
    pub reset: bool,
    pub connect_failure: bool,
    pub refused_stream: bool,
    pub retriable_4xx: bool,
    /// `retriable-status-codes` (implied by listing a numeric code).
    pub retriable_status_codes: bool,
    pub status_codes: Vec<u16>,
    /// gRPC statuses: cancelled 1, deadline-exceeded 4, resource-exhausted
    /// 8, internal 13, unavailable 14.
    pub grpc: Vec<u32>,
}

impl RetryOn {
    /// Parses `retryOn` (comma separated). Unknown conditions are ignored
    /// (mesh-api's validation already reported them).
    pub fn parse(s: &str) -> Self {
        let mut r = RetryOn::default();
        for c in s.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            match c {
                "5xx" => r.five_xx = true,
                "gateway-error" => r.gateway_error = true,
                "reset" | "reset-before-request" => r.reset = true,
                "connect-failure" => r.connect_failure = true,
                "refused-stream" => r.refused_stream = true,
                "retriable-4xx" => r.retriable_4xx = true,
                "retriable-status-codes" => r.retriable_status_codes = true,
                "cancelled" => r.grpc.push(1),
                "deadline-exceeded" => r.grpc.push(4),
                "resource-exhausted" => r.grpc.push(8),
                "internal" => r.grpc.push(13),
                "unavailable" => r.grpc.push(14),
                other => {
                    if let Ok(code) = other.parse::<u16>() {
                        if (100..=599).contains(&code) {
                            r.retriable_status_codes = true;
                            r.status_codes.push(code);
                        }
                    }
                }
            }
        }
        r
    }

    /// Whether a try that ended with `o` may be retried.
    pub fn retriable(&self, o: &Outcome) -> bool {
        match *o {
            Outcome::Overflow => false,
            Outcome::ConnectFailure => {
                self.connect_failure || self.five_xx || self.gateway_error || self.reset
            }
            Outcome::Reset => self.reset || self.five_xx || self.gateway_error,
            Outcome::RefusedStream => {
                self.refused_stream || self.reset || self.five_xx || self.gateway_error
            }
            Outcome::PerTryTimeout => self.five_xx || self.gateway_error,
            Outcome::Response {
                status,
                grpc_status,
            } => {
                let code = status.as_u16();
                (self.five_xx && status.is_server_error())
                    || (self.gateway_error && matches!(code, 502..=504))
                    || (self.retriable_4xx && code == 409)
                    || (self.retriable_status_codes && self.status_codes.contains(&code))
                    || grpc_status.is_some_and(|g| self.grpc.contains(&g))
            }
        }
    }
}

/// A compiled retry policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first try.
    pub attempts: u32,
    pub per_try_timeout: Option<Duration>,
    pub on: RetryOn,
    pub backoff_base: Duration,
}

pub const DEFAULT_BACKOFF: Duration = Duration::from_millis(25);

impl Default for RetryPolicy {
    /// Istio's default for HTTP routes without `retries`.
    fn default() -> Self {
        RetryPolicy {
            attempts: 2,
            per_try_timeout: None,
            on: RetryOn::parse(
                "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes,503",
            ),
            backoff_base: DEFAULT_BACKOFF,
        }
    }
}

impl RetryPolicy {
    pub fn none() -> Self {
        RetryPolicy {
            attempts: 0,
            per_try_timeout: None,
            on: RetryOn::default(),
            backoff_base: DEFAULT_BACKOFF,
        }
    }

    /// From Istio's `HttpRetry`; `None` (no `retries` field) gives Istio's
    /// default policy. Durations were validated by mesh-api; a bad one here
    /// is an error.
    pub fn from_istio(r: Option<&HttpRetry>) -> Result<Self, String> {
        let Some(r) = r else {
            return Ok(RetryPolicy::default());
        };
        let attempts = u32::try_from(r.attempts.unwrap_or(0).max(0)).unwrap_or(u32::MAX);
        let per_try_timeout = r
            .per_try_timeout
            .as_deref()
            .map(parse_duration)
            .transpose()?
            .filter(|d| !d.is_zero());
        let backoff_base = r
            .backoff
            .as_deref()
            .map(parse_duration)
            .transpose()?
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_BACKOFF);
        // Istio: retryOn defaults to the default policy's conditions.
        let on = match r.retry_on.as_deref() {
            Some(s) if !s.trim().is_empty() => RetryOn::parse(s),
            _ => RetryPolicy::default().on,
        };
        Ok(RetryPolicy {
            attempts,
            per_try_timeout,
            on,
            backoff_base,
        })
    }

    /// The wait before retry number `n` (1-based).
    pub fn backoff(&self, n: u32) -> Duration {
        let cap = self.backoff_base * 10;
        let upper = self
            .backoff_base
            .saturating_mul((1u32 << n.min(16)).saturating_sub(1))
            .min(cap);
        if upper.is_zero() {
            return Duration::ZERO;
        }
        rand::thread_rng().gen_range(Duration::ZERO..upper)
    }
}

/// Parses a route `timeout`; `0s` means none (Istio).
pub fn route_timeout(s: Option<&str>) -> Result<Option<Duration>, String> {
    Ok(s.map(parse_duration).transpose()?.filter(|d| !d.is_zero()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(code: u16) -> Outcome {
        Outcome::Response {
            status: StatusCode::from_u16(code).expect("status"),
            grpc_status: None,
        }
    }

    #[test]
    fn retry_on_conditions() {
        let r = RetryOn::parse("5xx");
        assert!(r.retriable(&resp(500)) && r.retriable(&resp(503)));
        assert!(!r.retriable(&resp(404)));
        assert!(r.retriable(&Outcome::Reset) && r.retriable(&Outcome::PerTryTimeout));

        let g = RetryOn::parse("gateway-error");
        assert!(!g.retriable(&resp(500)));
        assert!(g.retriable(&resp(502)) && g.retriable(&resp(504)));

        let c = RetryOn::parse("connect-failure");
        assert!(c.retriable(&Outcome::ConnectFailure));
        assert!(!c.retriable(&Outcome::Reset) && !c.retriable(&resp(503)));

        let rs = RetryOn::parse("refused-stream");
        assert!(rs.retriable(&Outcome::RefusedStream) && !rs.retriable(&Outcome::Reset));

        let r4 = RetryOn::parse("retriable-4xx");
        assert!(r4.retriable(&resp(409)) && !r4.retriable(&resp(404)));

        let n = RetryOn::parse("reset, 429 ,418");
        assert!(n.retriable(&resp(429)) && n.retriable(&resp(418)) && !n.retriable(&resp(500)));
        assert!(n.retriable(&Outcome::Reset));

        let grpc = RetryOn::parse("unavailable");
        assert!(grpc.retriable(&Outcome::Response {
            status: StatusCode::OK,
            grpc_status: Some(14)
        }));

        let all = RetryOn::parse("5xx,gateway-error,reset,connect-failure,retriable-4xx");
        assert!(!all.retriable(&Outcome::Overflow));
    }

    #[test]
    fn istio_default_and_explicit() {
        let d = RetryPolicy::from_istio(None).expect("default");
        assert_eq!(d.attempts, 2);
        assert!(d.on.retriable(&Outcome::ConnectFailure));
        assert!(d.on.retriable(&resp(503)));
        assert!(!d.on.retriable(&resp(500)));
        let r = RetryPolicy::from_istio(Some(&HttpRetry {
            attempts: Some(3),
            per_try_timeout: Some("2s".into()),
            retry_on: Some("gateway-error".into()),
            ..Default::default()
        }))
        .expect("explicit");
        assert_eq!(r.attempts, 3);
        assert_eq!(r.per_try_timeout, Some(Duration::from_secs(2)));
        assert!(r.on.gateway_error && !r.on.five_xx);
    }

    #[test]
    fn backoff_is_bounded() {
        let p = RetryPolicy::default();
        for n in 1..20 {
            let b = p.backoff(n);
            assert!(b < Duration::from_millis(250), "{b:?}");
            if n == 1 {
                assert!(b < Duration::from_millis(25));
            }
        }
        assert_eq!(route_timeout(Some("0s")).expect("ok"), None);
        assert_eq!(
            route_timeout(Some("0.5s")).expect("ok"),
            Some(Duration::from_millis(500))
        );
    }
}
