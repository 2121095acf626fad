//! The request path: one function per stage, each in its own module, run
//! in this order by [`handle`]:
//!
//! 1. RequestAuthentication, `401` ([`authn`])
//! 2. AuthorizationPolicy, `403` ([`authz`])
//! 3. the matching route, `404` ([`route`])
//! 4. Envoy's local rate limit, `429` ([`ratelimit`])
//! 5. fault injection: delay, then abort ([`fault`])
//! 6. the route's action, redirect, direct response or the weighted
//!    destination ([`route`]); then the upstream request is built (body,
//!    rewrite, headers: [`upstream`]) and its copies sent ([`mirror`])
//! 7. the route timeout around tries under `perTryTimeout` ([`retry`])
//! 8. the endpoint of each try ([`balance`])
//! 9. the pooled connection, the request sent, the response head
//!    ([`connect`])
//!
//! and [`telemetry`] around them all (metrics and the access log once the
//! response head is known). Rate limit runs after routing, not before: a
//! request that no route matches gets `404` without taking a token, and a
//! limited request's log line names its route.
//!
//! A stage is a plain function from what the earlier stages found to
//! `Result<Next, Reply>`; `Err` is a local reply and ends the chain, so
//! the chain reads top to bottom with `?`. Tower `Layer`s/`Service`s are
//! not used here, for three reasons:
//! - the stages borrow the request's config snapshot (the route, its
//!   matched entry, the rate limit filters); a tower service takes an
//!   owned `'static` request, so each of them would be cloned or
//!   reference-counted into extensions;
//! - every layer boundary would box a future or grow a nested generic
//!   type, on the path the `per_request` bench measures;
//! - the path is fixed: linkerd2-proxy needs tower to compose the same
//!   layers into many stacks per target, while ztunnel, whose proxy path
//!   is fixed like this one, writes it as plain async functions too. The
//!   typed results ([`authn::Authenticated`], [`route::Routed`],
//!   [`balance::Picked`]) make the order a compile-time fact instead.
//!
//! Stages do not import this module: shared types are in the leaf
//! modules [`head`] and [`reply`].

// Every stage's `Err` is a whole reply: the value the chain returns
// anyway. Boxing it would allocate once more per local reply for nothing.
#![allow(clippy::result_large_err)]

pub mod authn;
pub mod authz;
pub mod balance;
pub mod connect;
pub mod fault;
pub mod grpc;
pub mod head;
pub mod mirror;
pub mod ratelimit;
pub mod reply;
pub mod retry;
pub mod route;
pub mod telemetry;
pub mod upstream;

use std::sync::Arc;

use http::Request;
use hyper::body::Incoming;

use self::head::Head;
use self::reply::Reply;
use self::telemetry::Observed;
use self::upstream::{Forwarding, Upstream};
use crate::config::Config;
use crate::engine::Waypoint;
use crate::peer::Peer;
use crate::telemetry::RequestMeta;

/// Runs `req` from `peer` through the stages under `cfg`, and records it.
pub async fn handle(
    wp: &Arc<Waypoint>,
    req: Request<Incoming>,
    peer: &Peer,
    cfg: &Config,
) -> Reply {
    let mut observed = Observed::start(&req);
    let resp = match chain(wp, req, peer, cfg, &mut observed.meta).await {
        Ok(r) | Err(r) => r,
    };
    observed.finish(wp, peer, resp)
}

/// The stages in order; `Err` is the reply of the stage that answered.
async fn chain(
    wp: &Arc<Waypoint>,
    req: Request<Incoming>,
    peer: &Peer,
    cfg: &Config,
    meta: &mut RequestMeta,
) -> Result<Reply, Reply> {
    let (parts, body) = req.into_parts();
    let mut head = Head::read(parts)?;
    let (host, port) = crate::routes::split_host_port(&head.authority);

    let authenticated =
        authn::authenticate(cfg, &*wp.discovery, &mut head.parts, host, port).await?;
    authz::authorize(cfg, &authenticated, &head.parts, host, port, peer)?;

    let info = head.info(peer);
    let routed = route::select(cfg, &info, host)?;
    meta.route_name.clone_from(&routed.route.name);
    meta.destination_service = Some(host.to_string());
    meta.access_log = cfg.telemetry.access_log(host);

    let x_ratelimit = ratelimit::check(cfg, host, &*wp.discovery, &wp.telemetry)?;
    fault::inject(&routed.route, meta).await?;

    let dest = route::destination(&routed.route, &info, routed.matched)?;
    if dest.destination.host != host {
        meta.destination_service = Some(dest.destination.host.clone());
    }
    let rules = routed.route.headers.merged(&dest.headers);
    let body = Upstream::body(
        body,
        !routed.route.mirrors.is_empty(),
        wp.options.max_request_body,
        &wp.body_budget,
    )
    .await?;
    let forwarding = Forwarding {
        routed: &routed,
        rules: &rules,
        source_ip: peer.addr.ip(),
        sampling_percent: cfg.telemetry.sampling_percent(host),
    };
    let up = Upstream::new(&mut head, body, forwarding, meta);
    mirror::spawn(wp, &routed.route.mirrors, &up);

    let fwd = retry::forward(wp, &dest.destination, &routed.route.retry, &up);
    let mut resp = retry::within(routed.route.timeout, fwd).await;
    // Known by the response head: the announced length, else what was
    // read so far (a stream goes on).
    meta.request_bytes = up.body.len_so_far();
    rules.response.apply(resp.headers_mut());
    x_ratelimit.apply(resp.headers_mut());
    Ok(resp)
}
