//! Envoy's local rate limit filter (`envoy.filters.http.local_ratelimit`),
//! as Istio's EnvoyFilter inserts it.
//!
//! A token bucket (`max_tokens`, `tokens_per_fill`, `fill_interval`) that
//! starts full and refills lazily: each check adds the fills elapsed since
//! the last one (no background task), under a mutex around two numbers.
//! `filter_enabled` is the share of requests that are checked (and take a
//! token); `filter_enforced` the share of the over-limit ones that are
//! denied. Enabled but not enforced only counts. A denied request gets
//! Envoy's local reply: `429`, body `local_rate_limited`,
//! `x-local-rate-limit: true`, plus `response_headers_to_add`. With
//! `enable_x_ratelimit_headers: DRAFT_VERSION_03` every response of a
//! checked request carries `x-ratelimit-limit` (max tokens),
//! `x-ratelimit-remaining` and `x-ratelimit-reset` (seconds to the next
//! fill), as Envoy does; without it, none.
//!
//! Which requests a filter applies to, by the destination service (the
//! request's host): an EnvoyFilter in the root namespace `istio-system`
//! applies to every service; one in another namespace to the services of
//! that namespace (`name.namespace[.svc[.cluster.local]]`; a bare `name`
//! has no known namespace and only root filters apply to it). With
//! `workloadSelector.labels` the waypoint narrows that to the services with
//! at least one endpoint carrying those labels: the waypoint sees services,
//! not pods, and the endpoint is picked after the rate limit check.
//!
//! Each (filter, service) pair has its own bucket, as each sidecar in
//! Istio has its own: a root-namespace filter does not make all services
//! share one budget. Buckets live in the compiled [`crate::Config`], so a
//! config change starts them full again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use mesh_api::networking::{
    EnvoyConfigObjectPatch, EnvoyFilterSpec, FractionalPercent, LocalRateLimit,
    LOCAL_RATELIMIT_FILTER,
};
use mesh_api::Code;
use rand::Rng;
use serde_yaml::Value;

use crate::body::{local_reply, ProxyBody};
use crate::discovery::{Discovery, Labels};
use crate::issue::Issue;
use crate::namespace::{host_namespace, ROOT_NAMESPACE};

/// A token bucket with lazy refill.
#[derive(Debug)]
pub struct TokenBucket {
    max_tokens: u64,
    tokens_per_fill: u64,
    fill_interval: Duration,
    state: Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    tokens: u64,
    /// When the last fill (counted in whole intervals) happened.
    last_fill: Instant,
}

/// What a bucket said about one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Take {
    pub allowed: bool,
    /// Tokens left after this request.
    pub remaining: u64,
    /// Time to the next fill.
    pub reset: Duration,
}

impl TokenBucket {
    pub fn new(
        max_tokens: u64,
        tokens_per_fill: u64,
        fill_interval: Duration,
        now: Instant,
    ) -> Self {
        TokenBucket {
            max_tokens,
            tokens_per_fill,
            // A zero interval would divide by zero; validation asks ≥ 1 ms.
            fill_interval: fill_interval.max(Duration::from_millis(1)),
            state: Mutex::new(BucketState {
                tokens: max_tokens,
                last_fill: now,
            }),
        }
    }

    pub fn max_tokens(&self) -> u64 {
        self.max_tokens
    }

    /// Takes one token if there is one, refilling first for the whole
    /// intervals elapsed since the last fill.
    pub fn try_take(&self, now: Instant) -> Take {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(s.last_fill);
        let fills = elapsed.as_nanos() / self.fill_interval.as_nanos();
        if fills > 0 {
            let added = (self.tokens_per_fill as u128).saturating_mul(fills);
            s.tokens = (s.tokens as u128 + added).min(self.max_tokens as u128) as u64;
            // Whole intervals only, so the fill schedule does not drift.
            let advance = self.fill_interval.as_nanos().saturating_mul(fills);
            s.last_fill += Duration::from_nanos(u64::try_from(advance).unwrap_or(u64::MAX));
        }
        let allowed = s.tokens > 0;
        if allowed {
            s.tokens -= 1;
        }
        let since = now.saturating_duration_since(s.last_fill);
        Take {
            allowed,
            remaining: s.tokens,
            reset: self.fill_interval.saturating_sub(since),
        }
    }
}

/// Which destination services a filter covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Root namespace: all services.
    All,
    /// The services of a namespace.
    Namespace(String),
    /// The services of a namespace with an endpoint carrying these labels.
    Workloads { namespace: String, labels: Labels },
}

impl Scope {
    fn covers(&self, host: &str, discovery: &dyn Discovery) -> bool {
        match self {
            Scope::All => true,
            Scope::Namespace(ns) => host_namespace(host) == Some(ns.as_str()),
            Scope::Workloads { namespace, labels } => {
                host_namespace(host) == Some(namespace.as_str())
                    && discovery
                        .endpoints(host, None)
                        .iter()
                        .any(|e| e.matches(labels))
            }
        }
    }
}

/// One header of `response_headers_to_add`.
#[derive(Clone, Debug)]
pub struct HeaderToAdd {
    pub name: HeaderName,
    pub value: HeaderValue,
    /// Append to an existing value (Envoy's default) or overwrite.
    pub append: bool,
}

/// One compiled local rate limit filter.
#[derive(Debug)]
pub struct LocalRateLimitFilter {
    /// `EnvoyFilter namespace/name[index]`, for logs.
    pub name: String,
    pub stat_prefix: String,
    pub scope: Scope,
    max_tokens: u64,
    tokens_per_fill: u64,
    fill_interval: Duration,
    /// Percent of requests checked.
    pub enabled_percent: f64,
    /// Percent of over-limit requests denied.
    pub enforced_percent: f64,
    pub response_headers_to_add: Vec<HeaderToAdd>,
    pub x_ratelimit_headers: bool,
    /// One bucket per destination service host.
    buckets: RwLock<HashMap<String, Arc<TokenBucket>>>,
}

/// Envoy's `<stat_prefix>.http_local_rate_limit.*` counters, per check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub enabled: bool,
    pub ok: bool,
    pub rate_limited: bool,
    pub enforced: bool,
}

/// The result of checking a request against one filter.
#[derive(Debug)]
pub struct Verdict<'a> {
    pub filter: &'a LocalRateLimitFilter,
    pub stats: Stats,
    /// Set when `enable_x_ratelimit_headers: DRAFT_VERSION_03`.
    pub x_ratelimit: Option<Take>,
}

impl Verdict<'_> {
    /// Denied: the request gets [`LocalRateLimitFilter::reply`].
    pub fn denied(&self) -> bool {
        self.stats.enforced
    }
}

fn sample(percent: f64, rng: &mut impl Rng) -> bool {
    percent >= 100.0 || (percent > 0.0 && rng.gen::<f64>() * 100.0 < percent)
}

impl LocalRateLimitFilter {
    fn bucket(&self, host: &str) -> Arc<TokenBucket> {
        if let Some(b) = self
            .buckets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(host)
        {
            return b.clone();
        }
        let mut w = self.buckets.write().unwrap_or_else(|e| e.into_inner());
        w.entry(host.to_string())
            .or_insert_with(|| {
                Arc::new(TokenBucket::new(
                    self.max_tokens,
                    self.tokens_per_fill,
                    self.fill_interval,
                    Instant::now(),
                ))
            })
            .clone()
    }

    /// Checks one request to `host` (the filter covers it).
    pub fn check(&self, host: &str, now: Instant, rng: &mut impl Rng) -> Verdict<'_> {
        let mut stats = Stats::default();
        let mut x_ratelimit = None;
        if sample(self.enabled_percent, rng) {
            stats.enabled = true;
            let take = self.bucket(host).try_take(now);
            if take.allowed {
                stats.ok = true;
            } else {
                stats.rate_limited = true;
                stats.enforced = sample(self.enforced_percent, rng);
            }
            if self.x_ratelimit_headers {
                x_ratelimit = Some(take);
            }
        }
        Verdict {
            filter: self,
            stats,
            x_ratelimit,
        }
    }

    /// Envoy's local reply for a denied request.
    pub fn reply(&self, x: Option<Take>) -> Response<ProxyBody> {
        let mut r = local_reply(StatusCode::TOO_MANY_REQUESTS, "local_rate_limited");
        let h = r.headers_mut();
        h.insert("x-local-rate-limit", HeaderValue::from_static("true"));
        for a in &self.response_headers_to_add {
            if a.append {
                h.append(a.name.clone(), a.value.clone());
            } else {
                h.insert(a.name.clone(), a.value.clone());
            }
        }
        if let Some(t) = x {
            self.add_x_ratelimit(h, t);
        }
        r
    }

    /// The draft-03 `x-ratelimit-*` headers.
    pub fn add_x_ratelimit(&self, h: &mut HeaderMap, t: Take) {
        h.insert("x-ratelimit-limit", HeaderValue::from(self.max_tokens));
        h.insert("x-ratelimit-remaining", HeaderValue::from(t.remaining));
        // Whole seconds, rounded up, as Envoy's reset header.
        let secs = t.reset.as_millis().div_ceil(1000) as u64;
        h.insert("x-ratelimit-reset", HeaderValue::from(secs));
    }
}

/// Which proxy compiles a filter, for `match.context`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PatchContext {
    /// The waypoint: where the destination's traffic is received.
    SidecarInbound,
    /// The ingress gateway role.
    Gateway,
}

/// All local rate limit filters of the config.
#[derive(Debug, Default)]
pub struct RateLimits {
    pub filters: Vec<LocalRateLimitFilter>,
}

impl Clone for RateLimits {
    /// A clone starts with full buckets (only the config is cloned).
    fn clone(&self) -> Self {
        RateLimits {
            filters: self
                .filters
                .iter()
                .map(|f| LocalRateLimitFilter {
                    name: f.name.clone(),
                    stat_prefix: f.stat_prefix.clone(),
                    scope: f.scope.clone(),
                    max_tokens: f.max_tokens,
                    tokens_per_fill: f.tokens_per_fill,
                    fill_interval: f.fill_interval,
                    enabled_percent: f.enabled_percent,
                    enforced_percent: f.enforced_percent,
                    response_headers_to_add: f.response_headers_to_add.clone(),
                    x_ratelimit_headers: f.x_ratelimit_headers,
                    buckets: RwLock::default(),
                })
                .collect(),
        }
    }
}

fn percent(p: Option<&FractionalPercent>) -> f64 {
    // Envoy: an unset `filter_enabled` / `filter_enforced` is 0%.
    p.map_or(0.0, |f| f.percent().clamp(0.0, 100.0))
}

fn header_to_add(v: &Value) -> Result<HeaderToAdd, String> {
    let h = v.get("header").ok_or("no header")?;
    let key = h
        .get("key")
        .and_then(Value::as_str)
        .ok_or("header without a key")?;
    let value = h.get("value").and_then(Value::as_str).unwrap_or("");
    let name =
        HeaderName::from_bytes(key.as_bytes()).map_err(|e| format!("header {key:?}: {e}"))?;
    let value = HeaderValue::from_str(value).map_err(|e| format!("header {key:?} value: {e}"))?;
    // `append` (deprecated bool, default true) or `append_action`.
    let append = match v.get("append_action").and_then(Value::as_str) {
        Some("APPEND_IF_EXISTS_OR_ADD") | None => {
            v.get("append").and_then(Value::as_bool).unwrap_or(true)
        }
        Some("OVERWRITE_IF_EXISTS_OR_ADD") => false,
        Some(other) => return Err(format!("append_action {other} is not implemented")),
    };
    Ok(HeaderToAdd {
        name,
        value,
        append,
    })
}

/// The typed LocalRateLimit fields (mesh-api's `LocalRateLimit`); other
/// keys are Envoy features the waypoint does not implement.
const TYPED_FIELDS: &[&str] = &[
    "stat_prefix",
    "token_bucket",
    "filter_enabled",
    "filter_enforced",
    "response_headers_to_add",
];
/// Fields the waypoint implements beyond mesh-api's typed ones.
const EXTRA_FIELDS: &[&str] = &["enable_x_ratelimit_headers"];
/// Fields mesh-api's validation calls unimplemented that the waypoint
/// implements.
const IMPLEMENTED_HERE: &[&str] = &["response_headers_to_add", "enable_x_ratelimit_headers"];

/// The LocalRateLimit config of a local-rate-limit patch, raw (mesh-api's
/// typed form has no `enable_x_ratelimit_headers`), and its path relative
/// to the patch.
fn raw_config(p: &EnvoyConfigObjectPatch) -> Option<(Value, &'static str)> {
    if p.apply_to.as_deref() != Some("HTTP_FILTER") {
        return None;
    }
    let value = p.patch.as_ref()?.value.as_ref()?;
    if value.get("name").and_then(Value::as_str) != Some(LOCAL_RATELIMIT_FILTER) {
        return None;
    }
    let tc = value
        .get("typed_config")
        .or_else(|| value.get("typedConfig"))?;
    match tc.get("value") {
        // A TypedStruct (`type_url` + `value`).
        Some(inner) if tc.get("type_url").is_some() => {
            Some((inner.clone(), "patch.value.typed_config.value"))
        }
        _ => Some((tc.clone(), "patch.value.typed_config")),
    }
}

impl RateLimits {
    /// Compiles the local rate limit patches of one EnvoyFilter. What the
    /// waypoint does not implement is reported with its field path.
    pub fn add_envoy_filter(
        &mut self,
        resource: &str,
        namespace: &str,
        spec: &EnvoyFilterSpec,
        issues: &mut Vec<Issue>,
    ) {
        let scope = match &spec.workload_selector {
            _ if namespace == ROOT_NAMESPACE && spec.workload_selector.is_none() => Scope::All,
            Some(sel) if !sel.labels.is_empty() => Scope::Workloads {
                namespace: namespace.to_string(),
                labels: sel.labels.clone(),
            },
            _ => Scope::Namespace(namespace.to_string()),
        };
        self.add_patches(resource, spec, scope, PatchContext::SidecarInbound, issues)
    }

    /// Compiles the local rate limit patches of an EnvoyFilter that selects
    /// the ingress gateway workload (the caller decided that): they cover
    /// every request of the gateway, and `match.context` must be `GATEWAY`
    /// or `ANY` (a `SIDECAR_INBOUND` patch is not the gateway's).
    pub fn add_gateway_envoy_filter(
        &mut self,
        resource: &str,
        spec: &EnvoyFilterSpec,
        issues: &mut Vec<Issue>,
    ) {
        self.add_patches(resource, spec, Scope::All, PatchContext::Gateway, issues)
    }

    fn add_patches(
        &mut self,
        resource: &str,
        spec: &EnvoyFilterSpec,
        scope: Scope,
        context: PatchContext,
        issues: &mut Vec<Issue>,
    ) {
        let mut findings = mesh_api::diag::Findings::default();
        spec.validate(&mut findings);
        for f in &findings.items {
            let implemented = IMPLEMENTED_HERE
                .iter()
                .any(|n| f.field.ends_with(&format!(".{n}")));
            // mesh-api judges contexts for the mesh's inbound side; the
            // gateway applies its own rule below.
            let gateway_context =
                context == PatchContext::Gateway && f.field.ends_with(".match.context");
            if f.code == Code::NotImplemented && !implemented && !gateway_context {
                issues.push(Issue::new(resource, &f.field, f.message.clone()));
            }
        }
        if !spec.target_refs.is_empty() {
            issues.push(Issue::new(
                resource,
                "spec.targetRefs",
                "EnvoyFilter targetRefs are not implemented by the waypoint; the filter is ignored",
            ));
            return;
        }
        if spec.priority.is_some() {
            issues.push(Issue::new(
                resource,
                "spec.priority",
                "ignored: the waypoint applies local rate limits in resource order",
            ));
        }
        for (index, p) in spec.config_patches.iter().enumerate() {
            // What is not a local rate limit insert was reported by validate.
            let Some((raw, rel)) = raw_config(p) else {
                continue;
            };
            if let Some(ctx) = p.match_.as_ref().and_then(|m| m.context.as_deref()) {
                let ours = match context {
                    PatchContext::SidecarInbound => "SIDECAR_INBOUND",
                    PatchContext::Gateway => "GATEWAY",
                };
                if ctx != ours && ctx != "ANY" {
                    continue; // reported by validate (inbound), not ours (gateway)
                }
            }
            let base = format!("spec.configPatches[{index}].{rel}");
            let x_headers = raw
                .get("enable_x_ratelimit_headers")
                .and_then(Value::as_str)
                .map(str::to_string);
            // Keep the typed fields; the others were reported as not
            // implemented by validate.
            let mut typed = raw;
            if let Value::Mapping(m) = &mut typed {
                m.retain(|k, _| {
                    k.as_str()
                        .is_some_and(|k| TYPED_FIELDS.contains(&k) && !EXTRA_FIELDS.contains(&k))
                });
            }
            let config: LocalRateLimit = match serde_yaml::from_value(typed) {
                Ok(c) => c,
                Err(e) => {
                    issues.push(Issue::new(
                        resource,
                        &base,
                        format!("{e}; the local rate limit is ignored"),
                    ));
                    continue;
                }
            };
            match x_headers.as_deref() {
                None | Some("DISABLE_X_RATELIMIT_HEADERS") | Some("DRAFT_VERSION_03") => {}
                Some(other) => issues.push(Issue::new(
                    resource,
                    &format!("{base}.enable_x_ratelimit_headers"),
                    format!(
                        "{other:?} is not DISABLE_X_RATELIMIT_HEADERS or DRAFT_VERSION_03; ignored"
                    ),
                )),
            }
            let x_on = x_headers.as_deref() == Some("DRAFT_VERSION_03");
            if let Some(f) = compile_one(resource, &base, &config, x_on, scope.clone(), issues) {
                self.filters.push(LocalRateLimitFilter {
                    name: format!("{resource}[{index}]"),
                    ..f
                });
            }
        }
    }

    /// The filters that cover requests to `host`, checked in order; the
    /// first denial wins (later filters are not consulted, as Envoy's
    /// filter chain stops at a local reply).
    pub fn check<'a>(
        &'a self,
        host: &str,
        discovery: &dyn Discovery,
        rng: &mut impl Rng,
    ) -> Vec<Verdict<'a>> {
        let mut out = Vec::new();
        if self.filters.is_empty() {
            return out;
        }
        let now = Instant::now();
        for f in &self.filters {
            if !f.scope.covers(host, discovery) {
                continue;
            }
            let v = f.check(host, now, rng);
            let denied = v.denied();
            out.push(v);
            if denied {
                break;
            }
        }
        out
    }
}

fn compile_one(
    resource: &str,
    base: &str,
    c: &LocalRateLimit,
    x_ratelimit_headers: bool,
    scope: Scope,
    issues: &mut Vec<Issue>,
) -> Option<LocalRateLimitFilter> {
    let tb = c.token_bucket.as_ref()?;
    let max_tokens = u64::try_from(tb.max_tokens?).ok().filter(|n| *n > 0)?;
    // Envoy: tokens_per_fill defaults to 1.
    let tokens_per_fill = u64::try_from(tb.tokens_per_fill.unwrap_or(1))
        .ok()
        .filter(|n| *n > 0)?;
    let fill_interval = mesh_api::util::parse_duration(tb.fill_interval.as_deref()?).ok()?;
    let mut headers = Vec::new();
    for (i, v) in c.response_headers_to_add.iter().enumerate() {
        match header_to_add(v) {
            Ok(h) => headers.push(h),
            Err(why) => issues.push(Issue::new(
                resource,
                &format!("{base}.response_headers_to_add[{i}]"),
                format!("{why}; the header is not added"),
            )),
        }
    }
    Some(LocalRateLimitFilter {
        name: resource.to_string(),
        stat_prefix: c.stat_prefix.clone().unwrap_or_default(),
        scope,
        max_tokens,
        tokens_per_fill,
        fill_interval,
        enabled_percent: percent(
            c.filter_enabled
                .as_ref()
                .and_then(|r| r.default_value.as_ref()),
        ),
        enforced_percent: percent(
            c.filter_enforced
                .as_ref()
                .and_then(|r| r.default_value.as_ref()),
        ),
        response_headers_to_add: headers,
        x_ratelimit_headers,
        buckets: RwLock::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::{Endpoint, StaticDiscovery};
    use mesh_api::Resource;

    fn compile(yaml: &str) -> (RateLimits, Vec<Issue>) {
        let docs = mesh_api::parse_documents(yaml, "t.yaml");
        let mut rl = RateLimits::default();
        let mut issues = Vec::new();
        for d in &docs {
            if let Some(Resource::EnvoyFilter(o)) = &d.resource {
                rl.add_envoy_filter(
                    "EnvoyFilter t",
                    d.resource.as_ref().map_or("", |r| r.namespace()),
                    &o.spec,
                    &mut issues,
                );
            }
        }
        (rl, issues)
    }

    fn filter(extra: &str, ns: &str, selector: &str) -> String {
        format!(
            r#"apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata:
  name: rl
  namespace: {ns}
spec:
{selector}
  configPatches:
  - applyTo: HTTP_FILTER
    match:
      context: SIDECAR_INBOUND
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.local_ratelimit
        typed_config:
          "@type": type.googleapis.com/udpa.type.v1.TypedStruct
          type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
          value:
            stat_prefix: rl
            token_bucket:
              max_tokens: 3
              tokens_per_fill: 2
              fill_interval: 1s
            filter_enabled:
              default_value:
                numerator: 100
            filter_enforced:
              default_value:
                numerator: 100
{extra}
"#
        )
    }

    #[test]
    fn bucket_empties_and_refills_lazily_by_whole_intervals() {
        let t0 = Instant::now();
        let b = TokenBucket::new(3, 2, Duration::from_secs(1), t0);
        for left in [2, 1, 0] {
            let t = b.try_take(t0);
            assert!(t.allowed);
            assert_eq!(t.remaining, left);
        }
        let t = b.try_take(t0 + Duration::from_millis(999));
        assert!(!t.allowed);
        assert_eq!(t.reset, Duration::from_millis(1));
        // One fill adds tokens_per_fill (2), not max_tokens.
        let t1 = t0 + Duration::from_millis(1500);
        assert!(b.try_take(t1).allowed);
        assert!(b.try_take(t1).allowed);
        assert!(!b.try_take(t1).allowed);
        assert_eq!(b.try_take(t1).reset, Duration::from_millis(500));
        // Many intervals later the bucket is capped at max_tokens.
        let t2 = t0 + Duration::from_secs(100);
        let taken = (0..10).filter(|_| b.try_take(t2).allowed).count();
        assert_eq!(taken, 3);
    }

    #[test]
    fn seeds_compile_with_their_scope() {
        let seed16 = crate::seed_config("16-000-envoyfilter-rate-limit.yaml");
        let (rl, issues) = compile(&seed16);
        assert!(issues.is_empty(), "{issues:?}");
        assert_eq!(rl.filters.len(), 1);
        let f = &rl.filters[0];
        assert_eq!(f.stat_prefix, "http_local_rate_limiter");
        assert_eq!((f.max_tokens, f.tokens_per_fill), (10, 10));
        assert_eq!(f.fill_interval, Duration::from_secs(60));
        assert_eq!((f.enabled_percent, f.enforced_percent), (100.0, 100.0));
        assert_eq!(
            f.scope,
            Scope::Workloads {
                namespace: "bookinfo".into(),
                labels: [("app".to_string(), "productpage".to_string())].into(),
            }
        );
    }

    #[test]
    fn scope_by_namespace_root_and_selector() {
        let disc = StaticDiscovery::new().with(
            "productpage.bookinfo.svc.cluster.local",
            vec![Endpoint::new(
                "127.0.0.1:1".parse().expect("addr"),
                &[("app", "productpage")],
            )],
        );
        let ns = Scope::Namespace("bookinfo".into());
        assert!(ns.covers("reviews.bookinfo.svc.cluster.local", &disc));
        assert!(ns.covers("reviews.bookinfo", &disc));
        assert!(!ns.covers("reviews.other.svc.cluster.local", &disc));
        assert!(!ns.covers("reviews", &disc));
        assert!(Scope::All.covers("reviews", &disc));
        let sel = Scope::Workloads {
            namespace: "bookinfo".into(),
            labels: [("app".to_string(), "productpage".to_string())].into(),
        };
        assert!(sel.covers("productpage.bookinfo.svc.cluster.local", &disc));
        assert!(!sel.covers("reviews.bookinfo.svc.cluster.local", &disc));

        let (rl, _) = compile(&filter("", ROOT_NAMESPACE, ""));
        assert_eq!(rl.filters[0].scope, Scope::All);
    }

    #[test]
    fn enforced_denies_and_not_enforced_counts_only() {
        let (rl, issues) = compile(&filter("", "default", ""));
        assert!(issues.is_empty(), "{issues:?}");
        let disc = StaticDiscovery::new();
        let mut rng = rand::thread_rng();
        let host = "a.default.svc.cluster.local";
        let denied = (0..10)
            .filter(|_| rl.check(host, &disc, &mut rng).iter().any(|v| v.denied()))
            .count();
        assert_eq!(denied, 7);
        // Another service has its own bucket.
        assert!(!rl.check("b.default", &disc, &mut rng)[0].denied());

        let yaml = filter("", "default", "").replace(
            "filter_enforced:\n              default_value:\n                numerator: 100",
            "filter_enforced:\n              default_value:\n                numerator: 0",
        );
        let (rl, _) = compile(&yaml);
        let verdicts: Vec<Stats> = (0..10)
            .map(|_| rl.check(host, &disc, &mut rng)[0].stats)
            .collect();
        assert!(verdicts.iter().all(|s| s.enabled && !s.enforced));
        assert_eq!(verdicts.iter().filter(|s| s.rate_limited).count(), 7);
    }

    #[test]
    fn reply_headers_and_unimplemented_fields_reported() {
        let extra = r#"            enable_x_ratelimit_headers: DRAFT_VERSION_03
            local_rate_limit_per_downstream_connection: true
            response_headers_to_add:
            - append: false
              header:
                key: x-limited
                value: "yes"
            - header:
                value: nokey"#;
        let (rl, issues) = compile(&filter(extra, "default", ""));
        let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        assert!(
            paths
                .iter()
                .any(|p| p.ends_with("local_rate_limit_per_downstream_connection")),
            "{issues:?}"
        );
        assert!(
            paths
                .iter()
                .any(|p| p.ends_with("response_headers_to_add[1]")),
            "{issues:?}"
        );
        let f = &rl.filters[0];
        assert!(f.x_ratelimit_headers);
        let t = Take {
            allowed: false,
            remaining: 0,
            reset: Duration::from_millis(1200),
        };
        let r = f.reply(Some(t));
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        let h = r.headers();
        assert_eq!(h["x-local-rate-limit"], "true");
        assert_eq!(h["x-limited"], "yes");
        assert_eq!(h["x-ratelimit-limit"], "3");
        assert_eq!(h["x-ratelimit-remaining"], "0");
        assert_eq!(h["x-ratelimit-reset"], "2");
    }
}
