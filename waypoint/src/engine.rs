//! The waypoint engine: what every request shares. The configuration
//! (swapped whole; requests in flight keep the one they started with),
//! discovery, the connector, the live state of each destination (its
//! connection pool, balancer and outlier detection), the metrics registry,
//! and the tunables that are not Istio config.
//!
//! [`crate::proxy`] serves connections with it and [`crate::layers`] is the
//! path one request takes through it; neither is imported here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::balancer::Balancer;
use crate::config::Config;
use crate::connector::Connector;
use crate::destination::DestinationRef;
use crate::discovery::Discovery;
use crate::limits::{BodyBudget, Limits};
use crate::outlier::OutlierDetector;
use crate::policy::{ClusterSpec, ResolveError};
use crate::pool::Pool;
use crate::telemetry::Telemetry;

/// Tunables that are not Istio config.
#[derive(Clone, Debug)]
pub struct Options {
    /// Largest request body kept for retries (a longer one streams on
    /// but is not retried), and buffered for mirrors (longer: `413`).
    pub max_request_body: usize,
    /// How long a mirrored request may take before it is abandoned.
    pub mirror_timeout: Duration,
    /// Timeouts, connection and stream caps, and the body budget.
    pub limits: Limits,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_request_body: 8 << 20,
            mirror_timeout: Duration::from_secs(30),
            limits: Limits::default(),
        }
    }
}

/// One destination (host, subset, port) with its live state.
pub struct Cluster {
    pub spec: ClusterSpec,
    pub pool: Arc<Pool>,
    pub balancer: Balancer,
    pub outlier: Option<OutlierDetector>,
}

/// The waypoint: configuration, discovery, connector and per-destination
/// state. Serving is in [`crate::proxy`].
pub struct Waypoint {
    config: RwLock<Arc<Config>>,
    pub(crate) discovery: Arc<dyn Discovery>,
    connector: Arc<dyn Connector>,
    clusters: Mutex<HashMap<DestinationRef, Arc<Cluster>>>,
    pub options: Options,
    /// Metrics registry and access log switch.
    pub(crate) telemetry: Telemetry,
    /// Request body bytes buffered across all requests.
    pub(crate) body_budget: Arc<BodyBudget>,
}

impl Waypoint {
    pub fn new(
        config: Config,
        discovery: Arc<dyn Discovery>,
        connector: Arc<dyn Connector>,
    ) -> Arc<Self> {
        Self::with_options(config, discovery, connector, Options::default())
    }

    pub fn with_options(
        config: Config,
        discovery: Arc<dyn Discovery>,
        connector: Arc<dyn Connector>,
        options: Options,
    ) -> Arc<Self> {
        let telemetry = Telemetry::new();
        let body_budget = BodyBudget::new(options.limits.buffered_body_budget, telemetry.limits());
        Arc::new(Waypoint {
            config: RwLock::new(Arc::new(config)),
            discovery,
            connector,
            clusters: Mutex::new(HashMap::new()),
            options,
            telemetry,
            body_budget,
        })
    }

    /// Request body bytes buffered now, across all requests.
    pub fn buffered_body_bytes(&self) -> usize {
        self.body_budget.used()
    }

    /// The metrics registry and access log switch.
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// The metrics in OpenMetrics text (what the admin `/metrics` serves).
    pub fn metrics_text(&self) -> String {
        self.telemetry.metrics_text()
    }

    /// How upstream endpoints are reached (TCP passthrough of tunnels that
    /// carry no HTTP uses it too).
    pub fn connector(&self) -> Arc<dyn Connector> {
        self.connector.clone()
    }

    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Swaps the configuration; requests in flight finish under the old
    /// one. A destination whose policy did not change keeps its pool and
    /// outlier state.
    pub fn set_config(&self, c: Config) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(c);
    }

    /// The live state of a destination under the current config.
    pub fn cluster(&self, d: &DestinationRef) -> Result<Arc<Cluster>, ResolveError> {
        let spec = self.config().policies.resolve(d)?;
        let mut map = self.clusters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = map.get(d) {
            if c.spec == spec {
                return Ok(c.clone());
            }
        }
        let c = Arc::new(Cluster {
            pool: Pool::new(spec.policy.pool.clone(), self.connector.clone()),
            balancer: Balancer::new(spec.policy.lb.clone()),
            outlier: spec.policy.outlier.clone().map(OutlierDetector::new),
            spec,
        });
        map.insert(d.clone(), c.clone());
        Ok(c)
    }
}
