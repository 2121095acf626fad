//! Routing: the route of the request's host that matches first (a host
//! without routes goes to itself; a host whose routes all miss gets `404`,
//! `NR`), then, after rate limit and fault, the route's action: a redirect
//! or direct response answers here, forwarding draws the weighted
//! destination.

use std::borrow::Cow;

use http::header::{self, HeaderValue};
use http::StatusCode;

use super::reply::{no_healthy_upstream, Reply};
use crate::body::{full, local_reply};
use crate::config::Config;
use crate::routes::{Action, RequestInfo, RequestMatch, Route, WeightedDestination};
use crate::telemetry::{flagged, ResponseFlag};

/// The route chosen for a request.
pub struct Routed<'c> {
    /// Borrowed from the config, or the default route of a host without
    /// routes.
    pub route: Cow<'c, Route>,
    /// The `match` entry that chose it (`None`: a route without matches).
    pub matched: Option<&'c RequestMatch>,
}

/// The first matching route for the request to `host`.
pub fn select<'c>(
    cfg: &'c Config,
    info: &RequestInfo<'_>,
    host: &str,
) -> Result<Routed<'c>, Reply> {
    let Some(hr) = cfg.routes.host_routes(info.authority) else {
        return Ok(Routed {
            route: Cow::Owned(Route::default_for(host)),
            matched: None,
        });
    };
    match hr
        .routes
        .iter()
        .find_map(|r| r.matching(info).map(|m| (r, m)))
    {
        Some((route, matched)) => Ok(Routed {
            route: Cow::Borrowed(route),
            matched,
        }),
        None => Err(flagged(
            local_reply(StatusCode::NOT_FOUND, "route not found"),
            ResponseFlag::NO_ROUTE,
        )),
    }
}

/// The route's action: `Err` for a redirect or a direct response (with
/// the route's response header operations), else the destination drawn by
/// weight (`503`, `UH`, when every weight is 0).
pub fn destination<'r>(
    route: &'r Route,
    info: &RequestInfo<'_>,
    matched: Option<&RequestMatch>,
) -> Result<&'r WeightedDestination, Reply> {
    match &route.action {
        Action::Redirect(rd) => {
            let mut r = local_reply(rd.code, "");
            match HeaderValue::from_str(&rd.location(info, matched)) {
                Ok(v) => {
                    r.headers_mut().insert(header::LOCATION, v);
                }
                Err(_) => {
                    return Err(local_reply(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "bad redirect",
                    ))
                }
            }
            route.headers.response.apply(r.headers_mut());
            Err(r)
        }
        Action::Direct { status, body } => {
            let mut r = local_reply(*status, "");
            *r.body_mut() = full(body.clone());
            route.headers.response.apply(r.headers_mut());
            Err(r)
        }
        Action::Forward(_) => route
            .pick_destination(&mut rand::thread_rng())
            .ok_or_else(no_healthy_upstream),
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;
    use crate::layers::head::Head;
    use crate::peer::Peer;
    use crate::telemetry::SourceInfo;

    const VS: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r, namespace: ns}
spec:
  hosts: [svc]
  http:
  - name: old
    match: [{uri: {prefix: /old}}]
    redirect: {uri: /new}
    headers: {response: {set: {x-r: "1"}}}
  - match: [{uri: {exact: /teapot}}]
    directResponse: {status: 418, body: {string: short and stout}}
  - match: [{uri: {prefix: /none}}]
    route: [{destination: {host: svc}, weight: 0}]
  - match: [{uri: {prefix: /api}}]
    route: [{destination: {host: backend}}]
"#;

    fn head(authority: &str, path: &str) -> Head {
        let parts = http::Request::builder()
            .uri(path)
            .header(header::HOST, authority)
            .body(())
            .expect("request")
            .into_parts()
            .0;
        Head::read(parts).expect("head")
    }

    fn peer() -> Peer {
        Peer {
            addr: "10.0.0.1:4000".parse().expect("addr"),
            labels: Default::default(),
            identity: None,
            source: SourceInfo::default(),
        }
    }

    #[test]
    fn a_host_without_routes_goes_to_itself() {
        let cfg = Config::default();
        let (h, p) = (head("other:80", "/"), peer());
        let routed = select(&cfg, &h.info(&p), "other").expect("default route");
        assert_eq!(routed.route.name.as_deref(), Some("default"));
        let d = destination(&routed.route, &h.info(&p), routed.matched).expect("forward");
        assert_eq!(d.destination.host, "other");
    }

    #[test]
    fn a_miss_is_a_404_and_a_match_forwards() {
        let (cfg, issues) = Config::from_yaml(VS, "t.yaml");
        assert!(issues.is_empty(), "{issues:?}");
        let p = peer();
        let h = head("svc", "/elsewhere");
        let Err(r) = select(&cfg, &h.info(&p), "svc") else {
            panic!("no route matches /elsewhere")
        };
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            r.extensions().get::<ResponseFlag>(),
            Some(&ResponseFlag::NO_ROUTE)
        );
        let h = head("svc", "/api/x");
        let routed = select(&cfg, &h.info(&p), "svc").expect("route");
        let d = destination(&routed.route, &h.info(&p), routed.matched).expect("forward");
        assert_eq!(d.destination.host, "backend");
    }

    #[tokio::test]
    async fn redirects_and_direct_responses_answer_here() {
        let (cfg, _) = Config::from_yaml(VS, "t.yaml");
        let p = peer();
        let h = head("svc", "/old/x");
        let routed = select(&cfg, &h.info(&p), "svc").expect("route");
        assert_eq!(routed.route.name.as_deref(), Some("old"));
        let Err(r) = destination(&routed.route, &h.info(&p), routed.matched) else {
            panic!("a redirect")
        };
        assert_eq!(r.status(), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(r.headers()[header::LOCATION], "http://svc/new");
        assert_eq!(r.headers()["x-r"], "1");

        let h = head("svc", "/teapot");
        let routed = select(&cfg, &h.info(&p), "svc").expect("route");
        let Err(r) = destination(&routed.route, &h.info(&p), routed.matched) else {
            panic!("a direct response")
        };
        assert_eq!(r.status().as_u16(), 418);
        let body = r.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"short and stout");

        let h = head("svc", "/none");
        let routed = select(&cfg, &h.info(&p), "svc").expect("route");
        let Err(r) = destination(&routed.route, &h.info(&p), routed.matched) else {
            panic!("no weight")
        };
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
