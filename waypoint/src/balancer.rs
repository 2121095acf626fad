//! Endpoint choice within a destination: `loadBalancer.simple`
//! (ROUND_ROBIN, LEAST_REQUEST — Istio's default —, RANDOM) and
//! `consistentHash` on a header, a cookie, the source IP or a query
//! parameter.
//!
//! LEAST_REQUEST is Envoy's "power of two choices": two endpoints drawn at
//! random, the one with fewer active requests wins. Consistent hashing is
//! rendezvous (highest random weight) hashing: each endpoint scores
//! `hash(key, endpoint)` and the highest wins, so a key keeps its endpoint
//! while that endpoint stays, and only the keys of a removed endpoint move
//! (the property Envoy's ring hash and Maglev give). A request without the
//! key (no such header, cookie or parameter) is balanced at random, as
//! Envoy does.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};

use http::header::{HeaderMap, HeaderName, COOKIE};
use mesh_api::networking::{LoadBalancerSettings, SimpleLb};
use rand::Rng;
use serde_yaml::Value;

use crate::routes::query_param;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashOn {
    Header(HeaderName),
    Cookie(String),
    SourceIp,
    QueryParameter(String),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum LbPolicy {
    RoundRobin,
    #[default]
    LeastRequest,
    Random,
    ConsistentHash(HashOn),
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct CookieSpec {
    name: String,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConsistentHashSpec {
    http_header_name: Option<String>,
    http_cookie: Option<CookieSpec>,
    use_source_ip: Option<bool>,
    http_query_parameter_name: Option<String>,
}

impl LbPolicy {
    /// From `loadBalancer`. `PASSTHROUGH` and `LEAST_CONN` (deprecated
    /// alias) map to LEAST_REQUEST; `UNSPECIFIED` to the default.
    pub fn from_istio(lb: &LoadBalancerSettings) -> Result<Self, String> {
        if let Some(ch) = &lb.consistent_hash {
            let spec: ConsistentHashSpec = serde_yaml::from_value(strip_tuning(ch))
                .map_err(|e| format!("consistentHash: {e}"))?;
            let on = if let Some(h) = spec.http_header_name {
                HashOn::Header(HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                    format!("consistentHash.httpHeaderName {h:?} is not a header name")
                })?)
            } else if let Some(c) = spec.http_cookie {
                HashOn::Cookie(c.name)
            } else if spec.use_source_ip == Some(true) {
                HashOn::SourceIp
            } else if let Some(q) = spec.http_query_parameter_name {
                HashOn::QueryParameter(q)
            } else {
                return Err("consistentHash names no key".into());
            };
            return Ok(LbPolicy::ConsistentHash(on));
        }
        Ok(match lb.simple {
            Some(SimpleLb::RoundRobin) => LbPolicy::RoundRobin,
            Some(SimpleLb::Random) => LbPolicy::Random,
            _ => LbPolicy::LeastRequest,
        })
    }
}

/// Drops the ring tuning fields (`ringHash`, `maglev`, `minimumRingSize`)
/// that do not change which key is hashed.
fn strip_tuning(v: &Value) -> Value {
    let mut v = v.clone();
    if let Value::Mapping(m) = &mut v {
        for k in ["ringHash", "maglev", "minimumRingSize"] {
            m.remove(k);
        }
    }
    v
}

/// What a hash key may be taken from.
#[derive(Clone, Copy, Debug)]
pub struct HashInput<'a> {
    pub headers: &'a HeaderMap,
    pub query: Option<&'a str>,
    pub source_ip: IpAddr,
}

/// An endpoint as the balancer sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub addr: SocketAddr,
    /// Requests in flight to it.
    pub active: usize,
}

fn cookie<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

fn hash_of(parts: impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    parts.hash(&mut h);
    h.finish()
}

/// One destination's balancer (keeps the round-robin position).
#[derive(Debug, Default)]
pub struct Balancer {
    pub policy: LbPolicy,
    next: AtomicUsize,
}

impl Balancer {
    pub fn new(policy: LbPolicy) -> Self {
        Balancer {
            policy,
            next: AtomicUsize::new(0),
        }
    }

    /// The hash key of a request, when the policy hashes and the key is there.
    pub fn hash_key(&self, input: &HashInput<'_>) -> Option<u64> {
        let LbPolicy::ConsistentHash(on) = &self.policy else {
            return None;
        };
        match on {
            HashOn::Header(n) => input.headers.get(n).map(|v| hash_of(v.as_bytes())),
            HashOn::Cookie(c) => cookie(input.headers, c).map(hash_of),
            HashOn::SourceIp => Some(hash_of(input.source_ip)),
            HashOn::QueryParameter(q) => query_param(input.query, q).map(hash_of),
        }
    }

    /// Index into `c` of the chosen endpoint (`None` when `c` is empty).
    pub fn pick(&self, c: &[Candidate], input: &HashInput<'_>) -> Option<usize> {
        if c.is_empty() {
            return None;
        }
        if c.len() == 1 {
            return Some(0);
        }
        let mut rng = rand::thread_rng();
        match &self.policy {
            LbPolicy::RoundRobin => Some(self.next.fetch_add(1, Ordering::Relaxed) % c.len()),
            LbPolicy::Random => Some(rng.gen_range(0..c.len())),
            LbPolicy::LeastRequest => {
                let a = rng.gen_range(0..c.len());
                let mut b = rng.gen_range(0..c.len() - 1);
                if b >= a {
                    b += 1;
                }
                Some(if c[b].active < c[a].active { b } else { a })
            }
            LbPolicy::ConsistentHash(_) => match self.hash_key(input) {
                Some(key) => c
                    .iter()
                    .enumerate()
                    .max_by_key(|(_, e)| hash_of((key, e.addr)))
                    .map(|(i, _)| i),
                None => Some(rng.gen_range(0..c.len())),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn cands(n: u16) -> Vec<Candidate> {
        (0..n)
            .map(|i| Candidate {
                addr: SocketAddr::from(([127, 0, 0, 1], 10_000 + i)),
                active: 0,
            })
            .collect()
    }

    fn input(h: &HeaderMap) -> HashInput<'_> {
        HashInput {
            headers: h,
            query: Some("user=7&x"),
            source_ip: IpAddr::from([10, 0, 0, 1]),
        }
    }

    #[test]
    fn round_robin_cycles() {
        let b = Balancer::new(LbPolicy::RoundRobin);
        let c = cands(3);
        let h = HeaderMap::new();
        let picks: Vec<_> = (0..6).filter_map(|_| b.pick(&c, &input(&h))).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn least_request_avoids_busy() {
        let b = Balancer::new(LbPolicy::LeastRequest);
        let mut c = cands(2);
        c[0].active = 50;
        let h = HeaderMap::new();
        assert!((0..100).all(|_| b.pick(&c, &input(&h)) == Some(1)));
    }

    #[test]
    fn consistent_hash_is_sticky_and_minimal() {
        let b = Balancer::new(LbPolicy::ConsistentHash(HashOn::Header(
            HeaderName::from_static("x-user"),
        )));
        let c = cands(5);
        let mut moved = 0;
        for u in 0..200 {
            let mut h = HeaderMap::new();
            h.insert(
                "x-user",
                HeaderValue::from_str(&format!("u{u}")).expect("value"),
            );
            let first = b.pick(&c, &input(&h)).expect("pick");
            assert!((0..5).all(|_| b.pick(&c, &input(&h)) == Some(first)));
            // Remove an endpoint other than the chosen one: the key stays.
            let removed = (first + 1) % 5;
            let rest: Vec<_> = c
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != removed)
                .map(|(_, e)| *e)
                .collect();
            let again = b.pick(&rest, &input(&h)).expect("pick");
            if rest[again].addr != c[first].addr {
                moved += 1;
            }
        }
        assert_eq!(moved, 0);
        let cookie_b = Balancer::new(LbPolicy::ConsistentHash(HashOn::Cookie("session".into())));
        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_static("a=1; session=abc"));
        assert!(cookie_b.hash_key(&input(&h)).is_some());
        let ip_b = Balancer::new(LbPolicy::ConsistentHash(HashOn::SourceIp));
        assert!(ip_b.hash_key(&input(&HeaderMap::new())).is_some());
        let q_b = Balancer::new(LbPolicy::ConsistentHash(HashOn::QueryParameter(
            "user".into(),
        )));
        assert_eq!(q_b.hash_key(&input(&HeaderMap::new())), Some(hash_of("7")));
    }

    #[test]
    fn from_istio() {
        let lb: LoadBalancerSettings = serde_yaml::from_str(
            "consistentHash: {httpCookie: {name: user, ttl: 0s}, minimumRingSize: 1024}",
        )
        .expect("yaml");
        assert_eq!(
            LbPolicy::from_istio(&lb).expect("ok"),
            LbPolicy::ConsistentHash(HashOn::Cookie("user".into()))
        );
        let lb: LoadBalancerSettings = serde_yaml::from_str("simple: ROUND_ROBIN").expect("yaml");
        assert_eq!(LbPolicy::from_istio(&lb).expect("ok"), LbPolicy::RoundRobin);
    }
}
