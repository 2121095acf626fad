//! Endpoint choice for one try: the destination's endpoints (those its
//! subset selects), minus those outlier detection ejected, preferring the
//! ones this request has not tried yet (Istio's `previous_hosts` retry
//! predicate), then the load balancer's pick. None left: `503`, `UH`, and
//! no retry (there is nothing else to try).

use std::net::SocketAddr;

use super::reply::{no_healthy_upstream, Reply};
use super::upstream::Upstream;
use crate::balancer::{Candidate, HashInput};
use crate::destination::DestinationRef;
use crate::discovery::{Discovery, Endpoint};
use crate::engine::Cluster;

/// The endpoint a try goes to.
#[derive(Debug)]
pub struct Picked {
    pub endpoint: Endpoint,
    /// How many endpoints the destination has (outlier detection caps
    /// ejections at a share of them).
    pub endpoints: usize,
}

/// Picks the endpoint of `dest` for the next try of `up`.
pub fn pick(
    discovery: &dyn Discovery,
    cluster: &Cluster,
    dest: &DestinationRef,
    up: &Upstream,
    tried: &[SocketAddr],
) -> Result<Picked, Reply> {
    let mut endpoints: Vec<Endpoint> = discovery
        .endpoints(&dest.host, dest.port)
        .into_iter()
        .filter(|e| e.matches(&cluster.spec.selector))
        .collect();
    let addrs: Vec<SocketAddr> = endpoints.iter().map(|e| e.addr).collect();
    let usable = match &cluster.outlier {
        Some(o) => o.filter(&addrs),
        None => addrs,
    };
    let fresh: Vec<SocketAddr> = usable
        .iter()
        .copied()
        .filter(|a| !tried.contains(a))
        .collect();
    let pool_of = if fresh.is_empty() { &usable } else { &fresh };
    let candidates: Vec<Candidate> = pool_of
        .iter()
        .map(|a| Candidate {
            addr: *a,
            active: cluster.pool.active_to(*a),
        })
        .collect();
    let input = HashInput {
        headers: &up.headers,
        query: up.query(),
        source_ip: up.source_ip,
    };
    let addr = cluster
        .balancer
        .pick(&candidates, &input)
        .and_then(|i| candidates.get(i))
        .map(|c| c.addr)
        .ok_or_else(no_healthy_upstream)?;
    let at = endpoints
        .iter()
        .position(|e| e.addr == addr)
        .ok_or_else(no_healthy_upstream)?;
    let count = endpoints.len();
    Ok(Picked {
        endpoint: endpoints.swap_remove(at),
        endpoints: count,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use http::{HeaderMap, Method, StatusCode};

    use super::*;
    use crate::balancer::{Balancer, LbPolicy};
    use crate::connector::TcpConnector;
    use crate::discovery::StaticDiscovery;
    use crate::policy::ClusterSpec;
    use crate::pool::Pool;
    use crate::replay::UpstreamBody;

    fn cluster(selector: &[(&str, &str)]) -> Cluster {
        let spec = ClusterSpec {
            selector: selector
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..ClusterSpec::default()
        };
        Cluster {
            pool: Pool::new(spec.policy.pool.clone(), Arc::new(TcpConnector)),
            balancer: Balancer::new(LbPolicy::RoundRobin),
            outlier: None,
            spec,
        }
    }

    fn upstream() -> Upstream {
        Upstream {
            method: Method::GET,
            path_and_query: "/".into(),
            authority: "svc".into(),
            headers: HeaderMap::new(),
            body: UpstreamBody::full(Bytes::new()),
            source_ip: "10.0.0.1".parse().expect("ip"),
            version: http::Version::HTTP_11,
            te_trailers: false,
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    #[test]
    fn the_subset_selects_and_untried_endpoints_win() {
        let disc = StaticDiscovery::new().with(
            "svc",
            vec![
                Endpoint::new(addr("10.0.0.1:80"), &[("version", "v1")]),
                Endpoint::new(addr("10.0.0.2:80"), &[("version", "v2")]),
                Endpoint::new(addr("10.0.0.3:80"), &[("version", "v2")]),
            ],
        );
        let c = cluster(&[("version", "v2")]);
        let dest = DestinationRef::host("svc");
        let first = pick(&disc, &c, &dest, &upstream(), &[]).expect("an endpoint");
        assert_eq!(first.endpoints, 2);
        assert_eq!(first.endpoint.labels["version"], "v2");
        let tried = [first.endpoint.addr];
        for _ in 0..4 {
            let next = pick(&disc, &c, &dest, &upstream(), &tried).expect("an endpoint");
            assert_ne!(next.endpoint.addr, first.endpoint.addr);
        }
        // Every endpoint tried: they are all candidates again.
        let all = [addr("10.0.0.2:80"), addr("10.0.0.3:80")];
        assert!(pick(&disc, &c, &dest, &upstream(), &all).is_ok());
    }

    #[test]
    fn no_endpoint_is_a_503() {
        let c = cluster(&[]);
        let Err(r) = pick(
            &StaticDiscovery::new(),
            &c,
            &DestinationRef::host("svc"),
            &upstream(),
            &[],
        ) else {
            panic!("nothing to pick")
        };
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
