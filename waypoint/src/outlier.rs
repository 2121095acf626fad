//! Outlier detection (`outlierDetection`), with Envoy's semantics:
//!
//! * `consecutive5xxErrors` (or the deprecated `consecutiveErrors`): that
//!   many 5xx answers in a row eject the endpoint. Locally originated
//!   failures (connect failure, reset, per-try timeout) count as 5xx
//!   (Envoy's default, `splitExternalLocalOriginErrors: false`).
//! * `consecutiveGatewayErrors`: the same with 502, 503, 504 and local
//!   failures only.
//! * A host is ejected the moment a threshold is reached, for
//!   `baseEjectionTime × (number of times it has been ejected)`, capped at
//!   max(300 s, baseEjectionTime). The multiplier decreases by one for
//!   every `interval` the host then spends un-ejected.
//! * `maxEjectionPercent` caps the share of ejected hosts, but one host can
//!   always be ejected.
//! * `minHealthPercent` is the panic threshold: below that share of
//!   healthy hosts, ejections are ignored and every host takes traffic.
//!
//! Difference from Envoy: un-ejection is evaluated on each use instead of
//! at the next `interval` tick, so a host returns at exactly its ejection
//! time rather than up to one interval later.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mesh_api::networking::OutlierDetection;
use mesh_api::util::parse_duration;

use crate::resilience::Outcome;

const MAX_EJECTION_TIME: Duration = Duration::from_secs(300);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutlierConfig {
    pub consecutive_5xx: Option<u32>,
    pub consecutive_gateway: Option<u32>,
    pub interval: Duration,
    pub base_ejection_time: Duration,
    pub max_ejection_percent: u32,
    pub min_health_percent: u32,
}

impl OutlierConfig {
    /// Istio's defaults: 5 consecutive 5xx, gateway errors off, interval
    /// 10 s, base ejection 30 s, max ejection 10%, min health 0%.
    pub fn from_istio(o: &OutlierDetection) -> Result<Self, String> {
        let dur = |s: &Option<String>, d: u64| -> Result<Duration, String> {
            Ok(s.as_deref()
                .map(parse_duration)
                .transpose()?
                .unwrap_or(Duration::from_secs(d)))
        };
        let count = |v: Option<i64>| v.and_then(|n| u32::try_from(n).ok()).filter(|n| *n > 0);
        let pct = |v: Option<i64>, d: u32| v.map_or(d, |p| p.clamp(0, 100) as u32);
        Ok(OutlierConfig {
            consecutive_5xx: match o.effective_consecutive_5xx_errors() {
                None => Some(5),
                Some(n) => count(Some(n)),
            },
            consecutive_gateway: count(o.consecutive_gateway_errors),
            interval: dur(&o.interval, 10)?.max(Duration::from_millis(1)),
            base_ejection_time: dur(&o.base_ejection_time, 30)?,
            max_ejection_percent: pct(o.max_ejection_percent, 10),
            min_health_percent: pct(o.min_health_percent, 0),
        })
    }
}

#[derive(Debug)]
struct HostState {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    ejected_until: Option<Instant>,
    ejections: u32,
    /// When the multiplier was last decayed (or the host last un-ejected).
    decay_from: Instant,
}

impl HostState {
    fn new(now: Instant) -> Self {
        HostState {
            consecutive_5xx: 0,
            consecutive_gateway: 0,
            ejected_until: None,
            ejections: 0,
            decay_from: now,
        }
    }

    /// Un-ejects when due and decays the multiplier.
    fn refresh(&mut self, now: Instant, interval: Duration) {
        if let Some(until) = self.ejected_until {
            if now >= until {
                self.ejected_until = None;
                self.decay_from = until;
            } else {
                return;
            }
        }
        if self.ejections > 0 {
            let steps = (now.duration_since(self.decay_from).as_nanos()
                / interval.as_nanos().max(1)) as u32;
            if steps > 0 {
                self.ejections = self.ejections.saturating_sub(steps);
                self.decay_from += interval * steps;
            }
        }
    }

    fn ejected(&self) -> bool {
        self.ejected_until.is_some()
    }
}

/// One destination's detector.
#[derive(Debug)]
pub struct OutlierDetector {
    pub config: OutlierConfig,
    hosts: Mutex<HashMap<SocketAddr, HostState>>,
}

/// Why a host was ejected (returned by [`OutlierDetector::record`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ejection {
    pub addr: SocketAddr,
    pub duration: Duration,
}

impl OutlierDetector {
    pub fn new(config: OutlierConfig) -> Self {
        OutlierDetector {
            config,
            hosts: Mutex::new(HashMap::new()),
        }
    }

    /// Records how a try to `addr` ended; `hosts` is the number of
    /// endpoints of the destination (for `maxEjectionPercent`).
    pub fn record(&self, addr: SocketAddr, o: &Outcome, hosts: usize) -> Option<Ejection> {
        if matches!(o, Outcome::Overflow) {
            return None;
        }
        let now = Instant::now();
        let cfg = &self.config;
        let mut map = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        for h in map.values_mut() {
            h.refresh(now, cfg.interval);
        }
        let ejected_now = map.values().filter(|h| h.ejected()).count();
        let h = map.entry(addr).or_insert_with(|| HostState::new(now));
        if h.ejected() {
            return None;
        }
        let status = o.status().as_u16();
        let is_5xx = o.is_local_failure() || status >= 500;
        let is_gw = o.is_local_failure() || matches!(status, 502..=504);
        if is_5xx {
            h.consecutive_5xx += 1;
        } else {
            h.consecutive_5xx = 0;
        }
        if is_gw {
            h.consecutive_gateway += 1;
        } else {
            h.consecutive_gateway = 0;
        }
        let tripped = cfg.consecutive_5xx.is_some_and(|n| h.consecutive_5xx >= n)
            || cfg
                .consecutive_gateway
                .is_some_and(|n| h.consecutive_gateway >= n);
        if !tripped {
            return None;
        }
        h.consecutive_5xx = 0;
        h.consecutive_gateway = 0;
        let hosts = hosts.max(1);
        let would_be = 100 * (ejected_now + 1) / hosts;
        if ejected_now > 0 && would_be > cfg.max_ejection_percent as usize {
            return None;
        }
        h.ejections += 1;
        let cap = MAX_EJECTION_TIME.max(cfg.base_ejection_time);
        let duration = (cfg.base_ejection_time * h.ejections).min(cap);
        h.ejected_until = Some(now + duration);
        tracing::info!(%addr, ?duration, "outlier detection ejected an endpoint");
        Some(Ejection { addr, duration })
    }

    pub fn is_ejected(&self, addr: SocketAddr) -> bool {
        let now = Instant::now();
        let mut map = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        match map.get_mut(&addr) {
            Some(h) => {
                h.refresh(now, self.config.interval);
                h.ejected()
            }
            None => false,
        }
    }

    /// The addresses that take traffic among `all`: the un-ejected ones,
    /// or all of them when the healthy share is under `minHealthPercent`.
    pub fn filter(&self, all: &[SocketAddr]) -> Vec<SocketAddr> {
        let healthy: Vec<SocketAddr> = all
            .iter()
            .copied()
            .filter(|a| !self.is_ejected(*a))
            .collect();
        if !all.is_empty()
            && (healthy.len() * 100) < (self.config.min_health_percent as usize * all.len())
        {
            return all.to_vec();
        }
        healthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn cfg() -> OutlierConfig {
        OutlierConfig {
            consecutive_5xx: Some(3),
            consecutive_gateway: None,
            interval: Duration::from_millis(100),
            base_ejection_time: Duration::from_millis(200),
            max_ejection_percent: 100,
            min_health_percent: 0,
        }
    }

    fn s(code: u16) -> Outcome {
        Outcome::Response {
            status: StatusCode::from_u16(code).expect("status"),
            grpc_status: None,
        }
    }

    const A: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1);
    const B: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 2);

    #[test]
    fn consecutive_and_multiplier() {
        let d = OutlierDetector::new(cfg());
        assert!(d.record(A, &s(500), 2).is_none());
        assert!(d.record(A, &s(200), 2).is_none()); // resets the streak
        assert!(d.record(A, &s(500), 2).is_none());
        assert!(d.record(A, &Outcome::ConnectFailure, 2).is_none());
        let e = d.record(A, &s(503), 2).expect("ejected");
        assert_eq!(e.duration, Duration::from_millis(200));
        assert!(d.is_ejected(A));
        assert_eq!(d.filter(&[A, B]), vec![B]);
        std::thread::sleep(Duration::from_millis(220));
        assert!(!d.is_ejected(A));
        // Ejected again at once: twice the base time.
        for _ in 0..2 {
            assert!(d.record(A, &s(500), 2).is_none());
        }
        let e = d.record(A, &s(500), 2).expect("ejected again");
        assert_eq!(e.duration, Duration::from_millis(400));
    }

    #[test]
    fn max_ejection_percent_and_panic() {
        let mut c = cfg();
        c.max_ejection_percent = 50;
        let d = OutlierDetector::new(c);
        for _ in 0..3 {
            d.record(A, &s(500), 2);
        }
        assert!(d.is_ejected(A));
        for _ in 0..3 {
            assert!(d.record(B, &s(500), 2).is_none());
        }
        assert!(!d.is_ejected(B), "max 50% of 2 hosts: only one may be out");

        let mut c = cfg();
        c.min_health_percent = 60;
        let d = OutlierDetector::new(c);
        for _ in 0..3 {
            d.record(A, &s(500), 2);
        }
        // 1 of 2 healthy = 50% < 60%: panic, both take traffic.
        assert_eq!(d.filter(&[A, B]), vec![A, B]);
    }

    #[test]
    fn gateway_errors_only() {
        let c = OutlierConfig {
            consecutive_5xx: None,
            consecutive_gateway: Some(2),
            ..cfg()
        };
        let d = OutlierDetector::new(c);
        assert!(d.record(A, &s(500), 2).is_none());
        assert!(d.record(A, &s(500), 2).is_none());
        assert!(d.record(A, &s(502), 2).is_none());
        assert!(d.record(A, &s(504), 2).is_some());
    }

    #[test]
    fn from_istio_defaults() {
        let o = OutlierDetection {
            consecutive_errors: Some(7),
            ..Default::default()
        };
        let c = OutlierConfig::from_istio(&o).expect("ok");
        assert_eq!(c.consecutive_5xx, Some(7));
        assert_eq!(c.base_ejection_time, Duration::from_secs(30));
        assert_eq!(c.max_ejection_percent, 10);
    }
}
