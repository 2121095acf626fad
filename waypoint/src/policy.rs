//! DestinationRules: subsets (endpoint label selectors) and traffic
//! policies per destination.
//!
//! A subset's `trafficPolicy` overrides the host's field by field at the
//! top level (`loadBalancer`, `connectionPool`, `outlierDetection` each
//! replaced whole when the subset sets it), as Istio merges them; a
//! `portLevelSettings` entry for the destination port overrides the same
//! way, subset over host.

use std::collections::HashMap;

use mesh_api::networking::{DestinationRuleSpec, PortTrafficPolicy, TrafficPolicy};

use crate::balancer::LbPolicy;
use crate::destination::DestinationRef;
use crate::discovery::Labels;
use crate::issue::Issue;
use crate::outlier::OutlierConfig;
use crate::pool::PoolLimits;

/// The effective policy of one destination (host, subset, port).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterPolicy {
    pub lb: LbPolicy,
    pub pool: PoolLimits,
    pub outlier: Option<OutlierConfig>,
}

/// A destination resolved: which endpoints and under which policy.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterSpec {
    pub selector: Labels,
    pub policy: ClusterPolicy,
}

#[derive(Clone, Debug, Default)]
struct Rule {
    host: String,
    traffic_policy: Option<TrafficPolicy>,
    subsets: HashMap<String, (Labels, Option<TrafficPolicy>)>,
}

/// Every DestinationRule, by host.
#[derive(Clone, Debug, Default)]
pub struct Policies {
    rules: Vec<Rule>,
}

/// The four overridable parts, as references into the rule.
#[derive(Default, Clone, Copy)]
struct Parts<'a> {
    lb: Option<&'a mesh_api::networking::LoadBalancerSettings>,
    pool: Option<&'a mesh_api::networking::ConnectionPoolSettings>,
    outlier: Option<&'a mesh_api::networking::OutlierDetection>,
}

impl<'a> Parts<'a> {
    fn overlay_policy(mut self, tp: Option<&'a TrafficPolicy>, port: Option<u16>) -> Self {
        let Some(tp) = tp else {
            return self;
        };
        self.lb = tp.load_balancer.as_ref().or(self.lb);
        self.pool = tp.connection_pool.as_ref().or(self.pool);
        self.outlier = tp.outlier_detection.as_ref().or(self.outlier);
        if let Some(p) = port {
            if let Some(pl) = tp
                .port_level_settings
                .iter()
                .find(|pl: &&PortTrafficPolicy| {
                    pl.port.as_ref().and_then(|x| x.number) == Some(i64::from(p))
                })
            {
                self.lb = pl.load_balancer.as_ref().or(self.lb);
                self.pool = pl.connection_pool.as_ref().or(self.pool);
                self.outlier = pl.outlier_detection.as_ref().or(self.outlier);
            }
        }
        self
    }

    fn compile(self) -> Result<ClusterPolicy, String> {
        Ok(ClusterPolicy {
            lb: self
                .lb
                .map(LbPolicy::from_istio)
                .transpose()?
                .unwrap_or_default(),
            pool: self
                .pool
                .map(PoolLimits::from_istio)
                .transpose()?
                .unwrap_or_default(),
            outlier: self.outlier.map(OutlierConfig::from_istio).transpose()?,
        })
    }
}

/// Why a destination cannot be resolved.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResolveError {
    #[error("no subset {subset:?} is defined for host {host:?}")]
    UnknownSubset { host: String, subset: String },
    #[error("traffic policy of {0:?}: {1}")]
    BadPolicy(String, String),
}

impl Policies {
    /// Adds one DestinationRule (checks its policies compile).
    pub fn add(&mut self, res: &str, dr: &DestinationRuleSpec, issues: &mut Vec<Issue>) {
        let Some(host) = dr.host.clone() else {
            issues.push(Issue::new(res, "spec.host", "required"));
            return;
        };
        let mut rule = Rule {
            host,
            traffic_policy: dr.traffic_policy.clone(),
            subsets: HashMap::new(),
        };
        if let Err(e) = Parts::default()
            .overlay_policy(dr.traffic_policy.as_ref(), None)
            .compile()
        {
            issues.push(Issue::new(res, "spec.trafficPolicy", e));
            rule.traffic_policy = None;
        }
        for (i, s) in dr.subsets.iter().enumerate() {
            let Some(name) = s.name.clone() else { continue };
            let mut tp = s.traffic_policy.clone();
            if let Err(e) = Parts::default().overlay_policy(tp.as_ref(), None).compile() {
                issues.push(Issue::new(
                    res,
                    &format!("spec.subsets[{i}].trafficPolicy"),
                    e,
                ));
                tp = None;
            }
            rule.subsets.insert(name, (s.labels.clone(), tp));
        }
        self.rules.push(rule);
    }

    fn rule_for(&self, host: &str) -> Option<&Rule> {
        let h = host.to_ascii_lowercase();
        let short = |s: &str| s.split('.').next().unwrap_or("").to_string();
        self.rules
            .iter()
            .find(|r| r.host.eq_ignore_ascii_case(&h))
            .or_else(|| {
                self.rules.iter().find(|r| {
                    let rh = r.host.to_ascii_lowercase();
                    (!rh.contains('.') && short(&h) == rh) || (!h.contains('.') && short(&rh) == h)
                })
            })
    }

    /// The endpoint selector and effective policy of a destination.
    pub fn resolve(&self, d: &DestinationRef) -> Result<ClusterSpec, ResolveError> {
        let Some(rule) = self.rule_for(&d.host) else {
            if let Some(s) = &d.subset {
                return Err(ResolveError::UnknownSubset {
                    host: d.host.clone(),
                    subset: s.clone(),
                });
            }
            return Ok(ClusterSpec::default());
        };
        let mut parts = Parts::default().overlay_policy(rule.traffic_policy.as_ref(), d.port);
        let mut selector = Labels::new();
        if let Some(s) = &d.subset {
            let (labels, tp) = rule
                .subsets
                .get(s)
                .ok_or_else(|| ResolveError::UnknownSubset {
                    host: d.host.clone(),
                    subset: s.clone(),
                })?;
            selector = labels.clone();
            parts = parts.overlay_policy(tp.as_ref(), d.port);
        }
        let policy = parts
            .compile()
            .map_err(|e| ResolveError::BadPolicy(d.host.clone(), e))?;
        Ok(ClusterSpec { selector, policy })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const DR: &str = "
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    connectionPool:
      tcp: {maxConnections: 10, connectTimeout: 2s}
    outlierDetection: {consecutive5xxErrors: 4}
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      loadBalancer: {simple: RANDOM}
      connectionPool:
        http: {http1MaxPendingRequests: 1}
";

    #[test]
    fn subset_overrides_host_policy() {
        let (c, issues) = crate::Config::from_yaml(DR, "dr.yaml");
        assert!(issues.is_empty(), "{issues:?}");
        let v1 = c
            .policies
            .resolve(&DestinationRef {
                host: "reviews".into(),
                subset: Some("v1".into()),
                port: None,
            })
            .expect("v1");
        assert_eq!(v1.selector.get("version").map(String::as_str), Some("v1"));
        assert_eq!(v1.policy.lb, LbPolicy::RoundRobin);
        assert_eq!(v1.policy.pool.max_connections, 10);
        assert_eq!(v1.policy.pool.connect_timeout, Duration::from_secs(2));
        assert_eq!(
            v1.policy.outlier.as_ref().and_then(|o| o.consecutive_5xx),
            Some(4)
        );

        let v2 = c
            .policies
            .resolve(&DestinationRef {
                host: "reviews.default.svc.cluster.local".into(),
                subset: Some("v2".into()),
                port: None,
            })
            .expect("v2");
        assert_eq!(v2.policy.lb, LbPolicy::Random);
        // connectionPool replaced whole by the subset's.
        assert_eq!(v2.policy.pool.max_pending, 1);
        assert_eq!(
            v2.policy.pool.max_connections,
            PoolLimits::default().max_connections
        );
        // outlierDetection inherited.
        assert!(v2.policy.outlier.is_some());

        let missing = c.policies.resolve(&DestinationRef {
            host: "reviews".into(),
            subset: Some("v9".into()),
            port: None,
        });
        assert!(matches!(missing, Err(ResolveError::UnknownSubset { .. })));
        let other = c
            .policies
            .resolve(&DestinationRef::host("ratings"))
            .expect("no rule");
        assert_eq!(other, ClusterSpec::default());
    }
}
