//! The waypoint's whole configuration, compiled from mesh-api resources.

use mesh_api::{ParsedDocument, Resource};

use crate::authn::Authenticator;
use crate::authz::Authorizer;
use crate::issue::{res_name, Issue};
use crate::policy::Policies;
use crate::ratelimit::RateLimits;
use crate::routes::RouteTable;
use crate::telemetry::TelemetryPolicy;

/// Routes and destination policies.
#[derive(Clone, Debug, Default)]
pub struct Config {
    pub routes: RouteTable,
    pub policies: Policies,
    /// RequestAuthentications (JWT).
    pub authn: Authenticator,
    /// L7 AuthorizationPolicies.
    pub authz: Authorizer,
    /// Local rate limits (EnvoyFilter).
    pub ratelimits: RateLimits,
    /// Sampling and access log settings (Telemetry).
    pub telemetry: TelemetryPolicy,
}

impl Config {
    /// Compiles VirtualServices, DestinationRules, HTTPRoutes, EnvoyFilters
    /// (local rate limits) and Telemetry (other
    /// kinds are not the waypoint's and are ignored), in order.
    pub fn from_resources<'a>(
        resources: impl IntoIterator<Item = &'a Resource>,
    ) -> (Self, Vec<Issue>) {
        let mut c = Config::default();
        let mut issues = Vec::new();
        for r in resources {
            let name = res_name(r);
            match r {
                Resource::VirtualService(o) => {
                    c.routes.add_virtual_service(&name, &o.spec, &mut issues)
                }
                Resource::HttpRoute(o) => c.routes.add_http_route(&name, &o.spec, &mut issues),
                Resource::DestinationRule(o) => c.policies.add(&name, &o.spec, &mut issues),
                Resource::RequestAuthentication(o) => {
                    c.authn.add(&name, r.namespace(), &o.spec, &mut issues)
                }
                Resource::AuthorizationPolicy(o) => {
                    c.authz.add(&name, r.namespace(), &o.spec, &mut issues)
                }
                Resource::EnvoyFilter(o) => {
                    c.ratelimits
                        .add_envoy_filter(&name, r.namespace(), &o.spec, &mut issues)
                }
                Resource::Telemetry(o) => {
                    c.telemetry.add(&name, r.namespace(), &o.spec, &mut issues)
                }
                _ => {}
            }
        }
        (c, issues)
    }

    /// Like [`Config::from_resources`] over parsed documents; documents
    /// with errors are refused whole (reported with their diagnostics).
    pub fn from_documents(docs: &[ParsedDocument]) -> (Self, Vec<Issue>) {
        let mut refused = Vec::new();
        let good = docs.iter().filter_map(|d| {
            let r = d.resource.as_ref()?;
            if d.is_valid() {
                Some(r)
            } else {
                for diag in d.diagnostics.iter().filter(|x| x.is_error()) {
                    refused.push(Issue::new(&res_name(r), "", diag.to_string()));
                }
                None
            }
        });
        let (c, mut issues) = Self::from_resources(good.collect::<Vec<_>>());
        refused.append(&mut issues);
        (c, refused)
    }

    /// Parses YAML text (multi-document) and compiles it.
    pub fn from_yaml(text: &str, source: &str) -> (Self, Vec<Issue>) {
        Self::from_documents(&mesh_api::parse_documents(text, source))
    }
}
