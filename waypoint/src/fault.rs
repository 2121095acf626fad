//! Fault injection (`fault.delay`, `fault.abort`), as Envoy's fault filter
//! applies it: the delay first, then the abort, each drawn independently
//! with its percentage. A missing percentage means 100% (Istio).

use std::time::Duration;

use http::StatusCode;
use mesh_api::networking::{FaultAbort, FaultDelay, HttpFaultInjection, Percent};
use mesh_api::util::parse_duration;
use rand::Rng;

/// What to abort with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbortWith {
    Http(StatusCode),
    /// A gRPC status, sent as a trailers-only response (HTTP 200 with
    /// `grpc-status`).
    Grpc(u32),
}

#[derive(Clone, Debug, PartialEq)]
pub struct FaultPolicy {
    /// Fixed delay and the percentage of requests it applies to.
    pub delay: Option<(Duration, f64)>,
    pub abort: Option<(AbortWith, f64)>,
}

/// What to do with one request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultDecision {
    pub delay: Option<Duration>,
    pub abort: Option<AbortWith>,
}

fn percent(p: Option<&Percent>, legacy: Option<i64>) -> f64 {
    match (p, legacy) {
        (Some(p), _) => p.value,
        (None, Some(l)) => l as f64,
        (None, None) => 100.0,
    }
    .clamp(0.0, 100.0)
}

const GRPC_CODES: &[(&str, u32)] = &[
    ("OK", 0),
    ("CANCELLED", 1),
    ("UNKNOWN", 2),
    ("INVALID_ARGUMENT", 3),
    ("DEADLINE_EXCEEDED", 4),
    ("NOT_FOUND", 5),
    ("ALREADY_EXISTS", 6),
    ("PERMISSION_DENIED", 7),
    ("RESOURCE_EXHAUSTED", 8),
    ("FAILED_PRECONDITION", 9),
    ("ABORTED", 10),
    ("OUT_OF_RANGE", 11),
    ("UNIMPLEMENTED", 12),
    ("INTERNAL", 13),
    ("UNAVAILABLE", 14),
    ("DATA_LOSS", 15),
    ("UNAUTHENTICATED", 16),
];

impl FaultPolicy {
    /// Compiles `fault`. `exponentialDelay` and `http2Error` are not
    /// implemented (mesh-api reports them); they are skipped here.
    pub fn from_istio(f: &HttpFaultInjection) -> Result<Option<Self>, String> {
        let delay = match &f.delay {
            Some(FaultDelay {
                fixed_delay: Some(d),
                percentage,
                percent: legacy,
                ..
            }) => Some((parse_duration(d)?, percent(percentage.as_ref(), *legacy))),
            _ => None,
        };
        let abort = match &f.abort {
            Some(FaultAbort {
                http_status: Some(s),
                percentage,
                ..
            }) => {
                let code = u16::try_from(*s)
                    .ok()
                    .and_then(|c| StatusCode::from_u16(c).ok())
                    .ok_or_else(|| format!("{s} is not an HTTP status"))?;
                Some((AbortWith::Http(code), percent(percentage.as_ref(), None)))
            }
            Some(FaultAbort {
                grpc_status: Some(g),
                percentage,
                ..
            }) => {
                let code = GRPC_CODES
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(g))
                    .map(|(_, c)| *c)
                    .or_else(|| g.parse().ok())
                    .ok_or_else(|| format!("{g:?} is not a gRPC status"))?;
                Some((AbortWith::Grpc(code), percent(percentage.as_ref(), None)))
            }
            _ => None,
        };
        if delay.is_none() && abort.is_none() {
            return Ok(None);
        }
        Ok(Some(FaultPolicy { delay, abort }))
    }

    /// Draws the faults for one request.
    pub fn decide(&self, rng: &mut impl Rng) -> FaultDecision {
        let hit = |rng: &mut dyn rand::RngCore, pct: f64| {
            pct >= 100.0 || (pct > 0.0 && rng.gen::<f64>() * 100.0 < pct)
        };
        FaultDecision {
            delay: self.delay.and_then(|(d, p)| hit(rng, p).then_some(d)),
            abort: self.abort.and_then(|(a, p)| hit(rng, p).then_some(a)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles_and_draws() {
        let f = HttpFaultInjection {
            delay: Some(FaultDelay {
                fixed_delay: Some("5s".into()),
                percentage: Some(Percent { value: 100.0 }),
                ..Default::default()
            }),
            abort: Some(FaultAbort {
                http_status: Some(500),
                percentage: Some(Percent { value: 0.0 }),
                ..Default::default()
            }),
        };
        let p = FaultPolicy::from_istio(&f).expect("ok").expect("some");
        let mut rng = rand::thread_rng();
        for _ in 0..100 {
            let d = p.decide(&mut rng);
            assert_eq!(d.delay, Some(Duration::from_secs(5)));
            assert_eq!(d.abort, None);
        }
        let g = FaultPolicy::from_istio(&HttpFaultInjection {
            abort: Some(FaultAbort {
                grpc_status: Some("UNAVAILABLE".into()),
                ..Default::default()
            }),
            delay: None,
        })
        .expect("ok")
        .expect("some");
        assert_eq!(g.abort, Some((AbortWith::Grpc(14), 100.0)));
    }
}
