//! The HTTP proxy: a hyper server (HTTP/1.1 and HTTP/2, negotiated per
//! connection) that applies the route table and forwards to an endpoint
//! of the chosen destination.
//!
//! Per request: host → route (first match; a host without routes goes to
//! itself, a host whose routes all miss gets `404`) → fault (delay, then
//! abort) → redirect / direct response, or: request body streamed
//! upstream while its first [`Options::max_request_body`] bytes are kept
//! for retries ([`crate::replay`]; a longer body is not retried), or, on a
//! route with mirrors, buffered whole so that the copies can be sent too
//! (over the limit: `413`) → rewrite and request header operations → mirrors
//! spawned → weighted destination → tries under the route timeout, each
//! picking an endpoint (balancer, minus ejected endpoints, preferring
//! endpoints not tried yet for this request as Istio's
//! `previous_hosts` predicate does), leasing a connection from the pool
//! and waiting for the response head under `perTryTimeout` → response
//! header operations.
//!
//! The route timeout and `perTryTimeout` bound the time to the response
//! head; the response body then streams through unbounded.
//!
//! Local replies follow Envoy's: `404` no route, `503 no healthy
//! upstream`, `503` with `x-envoy-overloaded: true` on circuit-breaker
//! overflow, `503 upstream connect error or disconnect/reset before
//! headers`, `504 upstream request timeout`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rand::Rng;
use tokio::net::TcpListener;

use crate::authn::RequestAuth;
use crate::authz::{Decision, RequestAttributes};
use crate::balancer::{Balancer, Candidate, HashInput};
use crate::body::{full, local_reply, GuardedBody, ProxyBody};
use crate::config::Config;
use crate::connector::{Connector, Io};
use crate::destination::DestinationRef;
use crate::discovery::{Discovery, Endpoint};
use crate::fault::AbortWith;
use crate::headers::HeaderRules;
use crate::mirror::shadow_authority;
use crate::outlier::OutlierDetector;
use crate::peer::Peer;
use crate::policy::{ClusterSpec, ResolveError};
use crate::pool::{Pool, PoolError, PoolLimits, Proto};
use crate::replay::UpstreamBody;
use crate::resilience::{Outcome, RetryPolicy};
use crate::routes::{split_host_port, Action, RequestInfo, Route};
use crate::security::Target;
// ambit:telemetry
use crate::telemetry::{flagged, RequestMeta, ResponseFlag, SourceInfo, Telemetry, UpstreamHost};

/// Tunables that are not Istio config.
#[derive(Clone, Debug)]
pub struct Options {
    /// Largest request body kept for retries (a longer one streams on
    /// but is not retried), and buffered for mirrors (longer: `413`).
    pub max_request_body: usize,
    /// How long a mirrored request may take before it is abandoned.
    pub mirror_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_request_body: 8 << 20,
            mirror_timeout: Duration::from_secs(30),
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
/// state.
pub struct Waypoint {
    config: RwLock<Arc<Config>>,
    discovery: Arc<dyn Discovery>,
    connector: Arc<dyn Connector>,
    clusters: Mutex<HashMap<DestinationRef, Arc<Cluster>>>,
    pub options: Options,
    /// ambit:telemetry — metrics registry and access log switch.
    telemetry: Telemetry,
}

/// A request ready to be sent upstream; each try builds its own from it.
#[derive(Clone)]
struct Upstream {
    method: Method,
    path_and_query: String,
    authority: String,
    headers: HeaderMap,
    body: UpstreamBody,
    source_ip: IpAddr,
    /// ambit:grpc — the downstream request's version (the upstream
    /// protocol follows it) and whether it asked for trailers (`te`).
    version: http::Version,
    te_trailers: bool,
}

impl Upstream {
    fn build(&self) -> Result<Request<UpstreamBody>, http::Error> {
        let mut r = Request::builder()
            .method(self.method.clone())
            .uri(self.path_and_query.as_str())
            .body(self.body.replay())?;
        *r.headers_mut() = self.headers.clone();
        let host = HeaderValue::from_str(&self.authority).map_err(http::Error::from)?;
        r.headers_mut().insert(header::HOST, host);
        Ok(r)
    }

    // ambit:grpc begin
    /// The upstream protocol: the downstream's (Envoy's
    /// USE_DOWNSTREAM_PROTOCOL), or HTTP/2 under `h2UpgradePolicy: UPGRADE`.
    fn proto(&self, limits: &PoolLimits) -> Proto {
        if self.version == http::Version::HTTP_2 || limits.h2_upgrade {
            Proto::Http2
        } else {
            Proto::Http1
        }
    }

    /// The request for an HTTP/2 upstream: authority and scheme in the URI
    /// (`:authority`, `:scheme`), no `host`, `te: trailers` kept (gRPC).
    fn build_h2(&self) -> Result<Request<UpstreamBody>, http::Error> {
        let uri = http::Uri::builder()
            .scheme("http")
            .authority(self.authority.as_str())
            .path_and_query(self.path_and_query.as_str())
            .build()?;
        let mut r = Request::builder()
            .method(self.method.clone())
            .version(http::Version::HTTP_2)
            .uri(uri)
            .body(self.body.replay())?;
        *r.headers_mut() = self.headers.clone();
        if self.te_trailers {
            r.headers_mut()
                .insert(header::TE, HeaderValue::from_static("trailers"));
        }
        Ok(r)
    }
    // ambit:grpc end

    fn query(&self) -> Option<&str> {
        self.path_and_query.split_once('?').map(|(_, q)| q)
    }
}

/// Headers that belong to one connection, never forwarded.
const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::CONTENT_LENGTH,
];

fn strip_hop_by_hop(h: &mut HeaderMap, keep_length: bool) {
    let listed: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in listed {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        if keep_length && *n == header::CONTENT_LENGTH {
            continue;
        }
        h.remove(n);
    }
    h.remove("keep-alive");
    h.remove("proxy-connection");
}

fn overloaded() -> Response<ProxyBody> {
    let mut r = local_reply(
        StatusCode::SERVICE_UNAVAILABLE,
        "upstream connect error or disconnect/reset before headers. reset reason: overflow",
    );
    r.headers_mut()
        .insert("x-envoy-overloaded", HeaderValue::from_static("true"));
    flagged(r, ResponseFlag::UPSTREAM_OVERFLOW)
}

fn timeout_reply() -> Response<ProxyBody> {
    flagged(
        local_reply(StatusCode::GATEWAY_TIMEOUT, "upstream request timeout"),
        ResponseFlag::UPSTREAM_TIMEOUT,
    )
}

fn abort_reply(a: AbortWith) -> Response<ProxyBody> {
    let r = match a {
        AbortWith::Http(code) => local_reply(code, "fault filter abort"),
        AbortWith::Grpc(code) => {
            let mut r = Response::new(full(Bytes::new()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            r.headers_mut()
                .insert("grpc-status", HeaderValue::from(code));
            r.headers_mut().insert(
                "grpc-message",
                HeaderValue::from_static("fault filter abort"),
            );
            r
        }
    };
    flagged(r, ResponseFlag::FAULT_ABORT)
}

// ambit:grpc begin
fn is_grpc(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// A local reply to a gRPC request becomes a gRPC status (`grpc-status`,
/// the reason in `grpc-message`) as Envoy's do, so gRPC clients see a
/// status instead of a bare HTTP error. Upstream responses pass untouched.
fn grpc_local_reply(mut r: Response<ProxyBody>) -> Response<ProxyBody> {
    if r.extensions().get::<UpstreamHost>().is_some() || r.headers().contains_key("grpc-status") {
        return r;
    }
    // The gRPC HTTP-to-status mapping, except that a timeout is a deadline.
    let code: u16 = match r.status().as_u16() {
        200 => return r,
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        504 => 4,
        429 | 502 | 503 => 14,
        _ => 2,
    };
    let reason = r.status().canonical_reason().unwrap_or("local reply");
    // Envoy's form: a trailers-only response, `200` and no body.
    *r.status_mut() = StatusCode::OK;
    *r.body_mut() = full(Bytes::new());
    let h = r.headers_mut();
    h.insert("grpc-status", HeaderValue::from(code));
    h.insert("grpc-message", HeaderValue::from_static(reason));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    r
}
// ambit:grpc end

/// The request path's security hook: authenticates (stripping or adding
/// headers in `parts` as the JWT rules say) and authorizes. `Err` is the
/// local reply to send (`401` / `403`).
pub async fn enforce(
    cfg: &Config,
    discovery: &dyn Discovery,
    parts: &mut Parts,
    host: &str,
    port: Option<u16>,
    peer: &Peer,
) -> Result<RequestAuth, http::Response<ProxyBody>> {
    if cfg.authn.is_empty() && cfg.authz.is_empty() {
        return Ok(RequestAuth::default());
    }
    let labels = if cfg.authn.needs_endpoint_labels() || cfg.authz.needs_endpoint_labels() {
        discovery
            .endpoints(host, port)
            .into_iter()
            .map(|e| e.labels)
            .collect()
    } else {
        Vec::new()
    };
    let target = Target::new(host, labels);
    let query = parts.uri.query().map(str::to_string);
    let auth = match cfg
        .authn
        .authenticate(&target, &mut parts.headers, query.as_deref())
        .await
    {
        Ok(a) => a,
        Err(e) => {
            tracing::debug!(host, error = %e, "request authentication failed");
            let mut r = local_reply(StatusCode::UNAUTHORIZED, &e.to_string());
            let challenge = format!(
                "Bearer realm=\"http://{host}{}\", error=\"invalid_token\"",
                parts.uri.path()
            );
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                r.headers_mut().insert(http::header::WWW_AUTHENTICATE, v);
            }
            return Err(r);
        }
    };
    let scheme_port = if parts.uri.scheme_str() == Some("https") {
        443
    } else {
        80
    };
    let attrs = RequestAttributes {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        host,
        port: port.unwrap_or(scheme_port),
        headers: &parts.headers,
        source_ip: peer.addr.ip(),
        identity: peer.identity.as_ref(),
        auth: &auth,
    };
    match cfg.authz.check(&target, &attrs) {
        Decision::Allow => Ok(auth),
        Decision::Deny { policy } => {
            tracing::debug!(host, policy = %policy, "request denied by authorization policy");
            Err(local_reply(StatusCode::FORBIDDEN, "RBAC: access denied"))
        }
    }
}

/// Is this hyper error an HTTP/2 REFUSED_STREAM?
fn refused_stream(e: &hyper::Error) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(h) = s.downcast_ref::<h2::Error>() {
            return h.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        src = s.source();
    }
    false
}

/// How one try ended.
enum Try {
    /// Nothing to retry: answer with this (no endpoint, unknown subset).
    Final(Response<ProxyBody>),
    Done {
        addr: Option<SocketAddr>,
        outcome: Outcome,
        response: Response<ProxyBody>,
    },
}

/// 32 random hex digits, formatted without an allocation.
fn request_id() -> Option<HeaderValue> {
    let v: u128 = rand::thread_rng().gen();
    let mut buf = [0u8; 32];
    for (i, b) in buf.iter_mut().enumerate() {
        let nibble = (v >> (124 - 4 * i)) as u8 & 0xf;
        *b = b"0123456789abcdef"[nibble as usize];
    }
    HeaderValue::from_bytes(&buf).ok()
}

impl Waypoint {
    pub fn new(
        config: Config,
        discovery: Arc<dyn Discovery>,
        connector: Arc<dyn Connector>,
    ) -> Arc<Self> {
        Arc::new(Waypoint {
            config: RwLock::new(Arc::new(config)),
            discovery,
            connector,
            clusters: Mutex::new(HashMap::new()),
            options: Options::default(),
            telemetry: Telemetry::new(),
        })
    }

    pub fn with_options(
        config: Config,
        discovery: Arc<dyn Discovery>,
        connector: Arc<dyn Connector>,
        options: Options,
    ) -> Arc<Self> {
        Arc::new(Waypoint {
            config: RwLock::new(Arc::new(config)),
            discovery,
            connector,
            clusters: Mutex::new(HashMap::new()),
            options,
            telemetry: Telemetry::new(),
        })
    }

    // ambit:telemetry begin
    /// The metrics registry and access log switch.
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// The metrics in OpenMetrics text (what the admin `/metrics` serves).
    pub fn metrics_text(&self) -> String {
        self.telemetry.metrics_text()
    }
    // ambit:telemetry end

    /// ambit:grpc — how upstream endpoints are reached (TCP passthrough
    /// of tunnels that carry no HTTP uses it too).
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

    /// Accepts connections until the listener fails.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((s, peer)) => {
                    let _ = s.set_nodelay(true);
                    let me = self.clone();
                    tokio::spawn(me.serve_connection(s, peer));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Serves one downstream connection (a TCP stream, or an HBONE tunnel
    /// stream once terminated) from `peer`.
    pub async fn serve_connection<I: Io>(self: Arc<Self>, io: I, peer: SocketAddr) {
        let labels = self.discovery.source_labels(peer.ip());
        let peer = Arc::new(Peer {
            addr: peer,
            identity: None,
            // ambit:telemetry — plain TCP: no mTLS.
            source: SourceInfo::new(
                self.discovery.workload(peer.ip()).as_deref(),
                &labels,
                false,
            ),
            labels,
        });
        let svc = service_fn(move |req: Request<Incoming>| {
            let me = self.clone();
            let peer = peer.clone();
            async move { Ok::<_, Infallible>(me.handle(req, &peer).await) }
        });
        if let Err(e) = auto::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(io), svc)
            .await
        {
            tracing::debug!(error = %e, "downstream connection ended");
        }
    }

    /// Handles one request; records its metrics and access log once the
    /// response head is known (ambit:telemetry).
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: &Peer,
    ) -> Response<ProxyBody> {
        let cfg = self.config();
        self.handle_with(req, peer, cfg).await
    }

    /// Like [`Waypoint::handle`] under `cfg` instead of the waypoint's own
    /// config: the gateway's listeners share one engine (pools, outlier
    /// state, metrics) but each has its own routes and policies. Clusters
    /// still resolve under the waypoint's own config.
    pub async fn handle_with(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: &Peer,
        cfg: Arc<Config>,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        let mut meta = RequestMeta::from_request(&req);
        let grpc = is_grpc(req.headers()); // ambit:grpc
        let resp = self.clone().handle_request(req, peer, &mut meta, cfg).await;
        let resp = if grpc { grpc_local_reply(resp) } else { resp }; // ambit:grpc
        self.telemetry.record(
            &meta,
            &peer.source,
            peer.addr,
            &*self.discovery,
            resp,
            started,
        )
    }

    /// The request path.
    async fn handle_request(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: &Peer,
        meta: &mut RequestMeta,
        cfg: Arc<Config>,
    ) -> Response<ProxyBody> {
        let (mut parts, body) = req.into_parts();
        let authority = parts.uri.authority().map(|a| a.to_string()).or_else(|| {
            parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        });
        let Some(authority) = authority else {
            return local_reply(StatusCode::BAD_REQUEST, "missing host");
        };
        let (host, port) = split_host_port(&authority);
        // L7 security: RequestAuthentication (401), AuthorizationPolicy (403).
        if let Err(reply) = enforce(&cfg, &*self.discovery, &mut parts, host, port, peer).await {
            return reply;
        }
        let scheme = parts.uri.scheme_str().unwrap_or("http").to_string();
        let path = parts.uri.path().to_string();
        let query = parts.uri.query().map(str::to_string);
        let info = RequestInfo {
            method: &parts.method,
            path: &path,
            query: query.as_deref(),
            scheme: &scheme,
            authority: &authority,
            port,
            headers: &parts.headers,
            source_labels: &peer.labels,
        };
        let default_route;
        let (route, matched): (&Route, _) = match cfg.routes.host_routes(&authority) {
            None => {
                default_route = Route::default_for(host);
                (&default_route, None)
            }
            Some(hr) => match hr
                .routes
                .iter()
                .find_map(|r| r.matching(&info).map(|m| (r, m)))
            {
                Some(found) => found,
                None => {
                    return flagged(
                        local_reply(StatusCode::NOT_FOUND, "route not found"),
                        ResponseFlag::NO_ROUTE,
                    )
                }
            },
        };

        // ambit:ratelimit begin — Envoy's local rate limit, after routing.
        meta.route_name.clone_from(&route.name);
        meta.destination_service = Some(host.to_string());
        meta.access_log = cfg.telemetry.access_log(host);
        let mut x_ratelimit = None;
        for v in cfg
            .ratelimits
            .check(host, &*self.discovery, &mut rand::thread_rng())
        {
            self.telemetry
                .record_rate_limit(&v.filter.stat_prefix, v.stats);
            if v.denied() {
                return flagged(v.filter.reply(v.x_ratelimit), ResponseFlag::RATE_LIMITED);
            }
            if let Some(t) = v.x_ratelimit {
                x_ratelimit = Some((v.filter, t));
            }
        }
        // ambit:ratelimit end

        if let Some(f) = &route.fault {
            let d = f.decide(&mut rand::thread_rng());
            if let Some(delay) = d.delay {
                meta.delayed = true; // ambit:telemetry
                tokio::time::sleep(delay).await;
            }
            if let Some(a) = d.abort {
                let mut r = abort_reply(a);
                route.headers.response.apply(r.headers_mut());
                return r;
            }
        }

        let dest = match &route.action {
            Action::Redirect(rd) => {
                let mut r = local_reply(rd.code, "");
                match HeaderValue::from_str(&rd.location(&info, matched)) {
                    Ok(v) => {
                        r.headers_mut().insert(header::LOCATION, v);
                    }
                    Err(_) => {
                        return local_reply(StatusCode::INTERNAL_SERVER_ERROR, "bad redirect")
                    }
                }
                route.headers.response.apply(r.headers_mut());
                return r;
            }
            Action::Direct { status, body } => {
                let mut r = local_reply(*status, "");
                *r.body_mut() = full(body.clone());
                route.headers.response.apply(r.headers_mut());
                return r;
            }
            Action::Forward(_) => match route.pick_destination(&mut rand::thread_rng()) {
                Some(d) => d,
                None => {
                    return flagged(
                        local_reply(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream"),
                        ResponseFlag::NO_HEALTHY_UPSTREAM,
                    )
                }
            },
        };
        if dest.destination.host != host {
            meta.destination_service = Some(dest.destination.host.clone()); // ambit:telemetry
        }
        let rules: HeaderRules = route.headers.merged(&dest.headers);

        let body = if body.is_end_stream() {
            UpstreamBody::full(Bytes::new())
        } else if route.mirrors.is_empty() {
            UpstreamBody::streaming(body, self.options.max_request_body)
        } else {
            // Mirrors run beside the primary: each needs the whole body.
            match Limited::new(body, self.options.max_request_body)
                .collect()
                .await
            {
                Ok(b) => UpstreamBody::full(b.to_bytes()),
                Err(e) => {
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some()
                    {
                        return local_reply(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "request body too large",
                        );
                    }
                    return local_reply(StatusCode::BAD_REQUEST, "request body could not be read");
                }
            }
        };

        let mut new_path = path.clone();
        let mut new_authority = authority.clone();
        if let Some(rw) = &route.rewrite {
            if let Some(p) = &rw.path {
                new_path = p.apply(&path, matched);
            }
            if let Some(a) = &rw.authority {
                new_authority = a.clone();
            }
        }
        // The request head is not needed past here: move, not copy.
        let mut headers = std::mem::take(&mut parts.headers);
        // ambit:grpc — `te: trailers` is hop-by-hop but HTTP/2 upstreams need it.
        let te_trailers = headers
            .get_all(header::TE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
            });
        strip_hop_by_hop(&mut headers, false);
        headers.remove(header::HOST);
        if !headers.contains_key("x-request-id") {
            if let Some(v) = request_id() {
                headers.insert("x-request-id", v);
            }
        }
        if let Ok(v) = HeaderValue::from_str(&scheme) {
            headers.insert("x-forwarded-proto", v);
        }
        // ambit:telemetry begin — trace context for the upstream (and mirrors, retries).
        meta.request_id = headers.get("x-request-id").cloned();
        crate::trace::propagate(
            &mut headers,
            cfg.telemetry.sampling_percent(host),
            &mut rand::thread_rng(),
        );
        // ambit:telemetry end
        rules.request.apply(&mut headers);
        let up = Upstream {
            method: parts.method.clone(),
            path_and_query: match &query {
                Some(q) => format!("{new_path}?{q}"),
                None => new_path,
            },
            authority: new_authority,
            headers,
            body,
            source_ip: peer.addr.ip(),
            version: parts.version,
            te_trailers,
        };

        for m in &route.mirrors {
            if m.sample(&mut rand::thread_rng()) {
                let mut copy = up.clone();
                copy.authority = shadow_authority(&up.authority);
                self.spawn_mirror(m.destination.clone(), copy);
            }
        }

        let fwd = self.forward(&dest.destination, &route.retry, &up);
        let mut resp = match route.timeout {
            Some(t) => match tokio::time::timeout(t, fwd).await {
                Ok(r) => r,
                Err(_) => timeout_reply(),
            },
            None => fwd.await,
        };
        // ambit:telemetry — known by the response head: the announced
        // length, else what was read so far (a stream goes on).
        meta.request_bytes = up.body.len_so_far();
        rules.response.apply(resp.headers_mut());
        if let Some((f, t)) = x_ratelimit {
            f.add_x_ratelimit(resp.headers_mut(), t); // ambit:ratelimit
        }
        resp
    }

    fn spawn_mirror(self: &Arc<Self>, dest: DestinationRef, up: Upstream) {
        let me = self.clone();
        let limit = self.options.mirror_timeout;
        tokio::spawn(async move {
            let work = async {
                let r = me.forward(&dest, &RetryPolicy::none(), &up).await;
                // Read the body so the connection can be reused.
                let _ = r.into_body().collect().await;
            };
            if tokio::time::timeout(limit, work).await.is_err() {
                tracing::debug!(host = %dest.host, "mirrored request abandoned");
            }
        });
    }

    /// Tries `dest` under `retry`.
    async fn forward(
        &self,
        dest: &DestinationRef,
        retry: &RetryPolicy,
        up: &Upstream,
    ) -> Response<ProxyBody> {
        let cluster = match self.cluster(dest) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "destination not resolved");
                return flagged(
                    local_reply(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream"),
                    ResponseFlag::NO_HEALTHY_UPSTREAM,
                );
            }
        };
        let mut tried: Vec<SocketAddr> = Vec::new();
        let mut retries = 0;
        loop {
            match self
                .try_once(&cluster, dest, up, &tried, retry.per_try_timeout)
                .await
            {
                Try::Final(r) => return r,
                Try::Done {
                    addr,
                    outcome,
                    response,
                } => {
                    if let Some(a) = addr {
                        tried.push(a);
                    }
                    // A body too long to keep (or still being sent by the
                    // last try) cannot be sent again: no retry, as Envoy.
                    if retries < retry.attempts
                        && retry.on.retriable(&outcome)
                        && up.body.can_replay()
                    {
                        retries += 1;
                        drop(response);
                        tokio::time::sleep(retry.backoff(retries)).await;
                        continue;
                    }
                    return response;
                }
            }
        }
    }

    async fn try_once(
        &self,
        cluster: &Arc<Cluster>,
        dest: &DestinationRef,
        up: &Upstream,
        tried: &[SocketAddr],
        per_try: Option<Duration>,
    ) -> Try {
        let endpoints: Vec<Endpoint> = self
            .discovery
            .endpoints(&dest.host, dest.port)
            .into_iter()
            .filter(|e| e.matches(&cluster.spec.selector))
            .collect();
        let addrs: Vec<SocketAddr> = endpoints.iter().map(|e| e.addr).collect();
        let usable = match &cluster.outlier {
            Some(o) => o.filter(&addrs),
            None => addrs.clone(),
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
        let Some(i) = cluster.balancer.pick(&candidates, &input) else {
            return Try::Final(flagged(
                local_reply(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream"),
                ResponseFlag::NO_HEALTHY_UPSTREAM,
            ));
        };
        let addr = candidates[i].addr;
        let Some(ep) = endpoints.iter().find(|e| e.addr == addr) else {
            return Try::Final(flagged(
                local_reply(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream"),
                ResponseFlag::NO_HEALTHY_UPSTREAM,
            ));
        };
        let attempt = self.attempt(cluster, ep, up);
        let (outcome, response) = match per_try {
            Some(t) => match tokio::time::timeout(t, attempt).await {
                Ok(r) => r,
                Err(_) => (Outcome::PerTryTimeout, timeout_reply()),
            },
            None => attempt.await,
        };
        if let Some(o) = &cluster.outlier {
            o.record(addr, &outcome, endpoints.len());
        }
        Try::Done {
            addr: Some(addr),
            outcome,
            response,
        }
    }

    async fn attempt(
        &self,
        cluster: &Arc<Cluster>,
        ep: &Endpoint,
        up: &Upstream,
    ) -> (Outcome, Response<ProxyBody>) {
        // A pooled connection the upstream closed while idle fails before
        // the request is written; hyper hands the request back and it is
        // sent once more on another connection (not a retry: nothing was
        // sent).
        let mut resent = false;
        let mut fell_back = false; // ambit:grpc
        loop {
            // ambit:grpc — the upstream protocol follows the request, but
            // an endpoint that failed HTTP/2 before ever answering in it is
            // taken for HTTP/1.1-only.
            let mut proto = up.proto(&cluster.pool.limits);
            if proto == Proto::Http2 && cluster.pool.h1_only(ep.addr) {
                proto = Proto::Http1;
            }
            let mut lease = match cluster.pool.acquire_proto(ep, proto).await {
                Ok(l) => l,
                Err(PoolError::Overflow(_)) => return (Outcome::Overflow, overloaded()),
                Err(e) => {
                    tracing::debug!(endpoint = %ep.addr, error = %e, "upstream connect failed");
                    return (
                        Outcome::ConnectFailure,
                        flagged(
                            local_reply(
                                StatusCode::SERVICE_UNAVAILABLE,
                                "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
                            ),
                            ResponseFlag::UPSTREAM_CONNECT_FAILURE,
                        ),
                    );
                }
            };
            let req = match lease.proto() {
                Some(Proto::Http2) => up.build_h2(), // ambit:grpc
                _ => up.build(),
            };
            let Ok(req) = req else {
                return (
                    Outcome::Response {
                        status: StatusCode::BAD_REQUEST,
                        grpc_status: None,
                    },
                    local_reply(StatusCode::BAD_REQUEST, "request cannot be forwarded"),
                );
            };
            let Some(sender) = lease.sender() else {
                return (
                    Outcome::Reset,
                    local_reply(StatusCode::SERVICE_UNAVAILABLE, "no connection"),
                );
            };
            let sent = sender.try_send_request(req).await;
            // ambit:grpc begin
            if proto == Proto::Http2 && cluster.pool.h2_result(ep.addr, sent.is_ok()) && !fell_back
            {
                tracing::debug!(endpoint = %ep.addr, "HTTP/2 refused; HTTP/1.1 from now on");
                fell_back = true;
                drop(lease);
                continue;
            }
            // ambit:grpc end
            match sent {
                Ok(resp) => {
                    let grpc_status = resp
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok());
                    let outcome = Outcome::Response {
                        status: resp.status(),
                        grpc_status,
                    };
                    let (mut parts, body) = resp.into_parts();
                    strip_hop_by_hop(&mut parts.headers, true);
                    // ambit:telemetry — who answered, for destination labels.
                    parts.extensions.insert(UpstreamHost {
                        addr: ep.addr,
                        labels: ep.labels.clone(),
                    });
                    let body = GuardedBody::new(body, lease)
                        .map_err(|e| -> crate::body::BoxError { Box::new(e) })
                        .boxed_unsync();
                    return (outcome, Response::from_parts(parts, body));
                }
                Err(mut e) => {
                    if e.take_message().is_some() && !resent {
                        resent = true;
                        drop(lease);
                        continue;
                    }
                    let outcome = if refused_stream(e.error()) {
                        Outcome::RefusedStream
                    } else {
                        Outcome::Reset
                    };
                    tracing::debug!(endpoint = %ep.addr, error = %e.error(), "upstream request failed");
                    return (
                        outcome,
                        flagged(
                            local_reply(
                                StatusCode::SERVICE_UNAVAILABLE,
                                "upstream connect error or disconnect/reset before headers. reset reason: connection termination",
                            ),
                            ResponseFlag::UPSTREAM_CONNECTION_TERMINATION,
                        ),
                    );
                }
            }
        }
    }
}
