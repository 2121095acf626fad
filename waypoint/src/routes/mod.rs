//! Route tables: VirtualService `http` routes and Gateway API HTTPRoute
//! rules compiled for the hosts they apply to.
//!
//! * A VirtualService's routes are evaluated in order, first match wins;
//!   the `match` entries of a route are ORed, the conditions inside one
//!   entry ANDed. A route without `match` matches everything.
//! * HTTPRoute rules are flattened to one route per match and ordered by
//!   Gateway API precedence (exact path, then longest prefix, then method,
//!   then most header matches, then most query matches), stable otherwise.
//! * String matches are Istio's: `exact`, `prefix`, `regex` (RE2 syntax,
//!   matching the whole value), and `{}` on a header (present).
//! * VirtualServices bound only to gateways (`gateways` without `mesh`)
//!   are not waypoint routes and are skipped. A table can instead be
//!   built for one Istio Gateway ([`Binding::Gateway`], the gateway role):
//!   then only the VirtualServices naming that Gateway apply.

//!
//! [`matching`] reads requests, [`route`] is one compiled VirtualService
//! route, [`gateway_api`] compiles HTTPRoute rules, [`binding`] says whose
//! routes a table holds, and this module files routes by host.

pub mod binding;
pub mod gateway_api;
pub mod matching;
pub mod route;

use mesh_api::gateway_api::HttpRouteSpec;
use mesh_api::networking::VirtualServiceSpec;

pub use self::binding::Binding;
use self::gateway_api::compile_http_route;
pub use self::matching::{query_param, split_host_port, RequestInfo, RequestMatch, StrMatch};
pub use self::route::{Action, PathRewrite, Redirect, Rewrite, Route, WeightedDestination};
use crate::issue::Issue;

/// The routes of one host pattern.
#[derive(Clone, Debug, PartialEq)]
pub struct HostRoutes {
    /// As written: `reviews`, `reviews.ns.svc.cluster.local`, `*.example.com`.
    pub host: String,
    pub routes: Vec<Route>,
}

/// Every host's routes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RouteTable {
    pub hosts: Vec<HostRoutes>,
}

/// The route chosen for a request and the match entry that chose it.
#[derive(Clone, Copy, Debug)]
pub struct Selected<'a> {
    pub route: &'a Route,
    pub matched: Option<&'a RequestMatch>,
}

/// How well `pattern` names `host`: exact 1000, the same short name 900
/// (`reviews` ~ `reviews.ns.svc.cluster.local`), a wildcard suffix its
/// length, `*` 0.
fn host_score(pattern: &str, host: &str) -> Option<usize> {
    let p = pattern.to_ascii_lowercase();
    if p == host {
        return Some(1000);
    }
    let short = |s: &str| s.split('.').next().unwrap_or("").to_string();
    if (!p.contains('.') && short(host) == p) || (!host.contains('.') && short(&p) == host) {
        return Some(900);
    }
    if p == "*" {
        return Some(0);
    }
    if let Some(suffix) = p.strip_prefix('*') {
        if host.ends_with(suffix) {
            return Some(suffix.len());
        }
    }
    None
}

impl RouteTable {
    /// Adds the `http` routes of a VirtualService. Routes that cannot be
    /// compiled are reported and left out.
    pub fn add_virtual_service(
        &mut self,
        res: &str,
        vs: &VirtualServiceSpec,
        issues: &mut Vec<Issue>,
    ) {
        self.add_bound_virtual_service(
            res,
            "",
            vs,
            &Binding::Mesh,
            |h| vec![h.to_string()],
            issues,
        );
    }

    /// Adds the `http` routes of a VirtualService of namespace
    /// `vs_namespace` if its `gateways` name `binding` (matches naming
    /// other gateways are left out). `file_under` maps each VS host to the
    /// hosts its routes are filed under (a gateway: the intersection with
    /// its servers' hosts; none: not served).
    pub fn add_bound_virtual_service(
        &mut self,
        res: &str,
        vs_namespace: &str,
        vs: &VirtualServiceSpec,
        binding: &Binding,
        file_under: impl Fn(&str) -> Vec<String>,
        issues: &mut Vec<Issue>,
    ) {
        if !binding.named_by(&vs.gateways, vs_namespace) {
            return;
        }
        let mut routes = Vec::new();
        for (i, r) in vs.http.iter().enumerate() {
            match Route::from_istio(r, binding, vs_namespace) {
                Ok(Some(route)) => routes.push(route),
                Ok(None) => {}
                Err(e) => issues.push(Issue::new(res, &format!("spec.http[{i}]"), e)),
            }
        }
        let mut hosts: Vec<String> = Vec::new();
        for h in vs.hosts.iter().flat_map(|h| file_under(h)) {
            if !hosts.contains(&h) {
                hosts.push(h);
            }
        }
        for h in hosts {
            self.push(&h, routes.clone());
        }
    }

    /// Adds the rules of an HTTPRoute attached to Services.
    pub fn add_http_route(&mut self, res: &str, spec: &HttpRouteSpec, issues: &mut Vec<Issue>) {
        let (hosts, routes) = compile_http_route(spec, issues, res);
        for h in hosts {
            self.push(&h, routes.clone());
        }
    }

    fn push(&mut self, host: &str, routes: Vec<Route>) {
        match self.hosts.iter_mut().find(|h| h.host == host) {
            Some(h) => h.routes.extend(routes),
            None => self.hosts.push(HostRoutes {
                host: host.to_string(),
                routes,
            }),
        }
    }

    /// The routes for an authority (`host[:port]`), best host match.
    pub fn host_routes(&self, authority: &str) -> Option<&HostRoutes> {
        let host = split_host_port(authority).0.to_ascii_lowercase();
        self.hosts
            .iter()
            .filter_map(|h| host_score(&h.host, &host).map(|s| (s, h)))
            .max_by_key(|(s, _)| *s)
            .map(|(_, h)| h)
    }

    /// First matching route of the request's host. `None`: the host has
    /// routes and none matches (Envoy answers 404); a host without routes
    /// gets [`Route::default_for`] from the caller.
    pub fn select<'a>(&'a self, r: &RequestInfo<'_>) -> Option<Selected<'a>> {
        let hr = self.host_routes(r.authority)?;
        hr.routes
            .iter()
            .find_map(|route| route.matching(r).map(|matched| Selected { route, matched }))
    }
}

#[cfg(test)]
mod tests;
