//! Envoy's local rate limit, after routing (a request no route matches
//! gets `404` without taking a token, and a limited request's log names
//! its route). Each covering filter is checked in order and counted; the
//! first denial answers `429` (`RL`). With draft-03 headers on, the
//! response gets `x-ratelimit-*` once it is known.

use http::HeaderMap;

use super::reply::Reply;
use crate::config::Config;
use crate::discovery::Discovery;
use crate::ratelimit::{LocalRateLimitFilter, Take};
use crate::telemetry::{flagged, ResponseFlag, Telemetry};

/// The `x-ratelimit-*` headers a response gets: the last checked filter
/// that has them on.
#[derive(Debug, Default)]
pub struct RateLimitHeaders<'c>(Option<(&'c LocalRateLimitFilter, Take)>);

impl RateLimitHeaders<'_> {
    pub fn apply(self, h: &mut HeaderMap) {
        if let Some((f, t)) = self.0 {
            f.add_x_ratelimit(h, t);
        }
    }
}

/// Checks the request to `host` against the filters that cover it.
pub fn check<'c>(
    cfg: &'c Config,
    host: &str,
    discovery: &dyn Discovery,
    telemetry: &Telemetry,
) -> Result<RateLimitHeaders<'c>, Reply> {
    let mut headers = RateLimitHeaders::default();
    for v in cfg
        .ratelimits
        .check(host, discovery, &mut rand::thread_rng())
    {
        telemetry.record_rate_limit(&v.filter.stat_prefix, v.stats);
        if v.denied() {
            return Err(flagged(
                v.filter.reply(v.x_ratelimit),
                ResponseFlag::RATE_LIMITED,
            ));
        }
        if let Some(t) = v.x_ratelimit {
            headers = RateLimitHeaders(Some((v.filter, t)));
        }
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::*;
    use crate::discovery::StaticDiscovery;

    const ONE_PER_MINUTE: &str = r#"
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: rl, namespace: ns}
spec:
  configPatches:
  - applyTo: HTTP_FILTER
    match: {context: SIDECAR_INBOUND}
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.local_ratelimit
        typed_config:
          "@type": type.googleapis.com/udpa.type.v1.TypedStruct
          type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
          value:
            stat_prefix: one
            enable_x_ratelimit_headers: DRAFT_VERSION_03
            token_bucket: {max_tokens: 1, tokens_per_fill: 1, fill_interval: 60s}
            filter_enabled: {default_value: {numerator: 100}}
            filter_enforced: {default_value: {numerator: 100}}
"#;

    #[test]
    fn the_second_request_is_limited_and_both_are_counted() {
        let (cfg, issues) = Config::from_yaml(ONE_PER_MINUTE, "t.yaml");
        assert!(issues.is_empty(), "{issues:?}");
        let (disc, t) = (StaticDiscovery::new(), Telemetry::new());
        let first = check(&cfg, "svc.ns.svc.cluster.local", &disc, &t).expect("a token");
        let mut h = HeaderMap::new();
        first.apply(&mut h);
        assert_eq!(h["x-ratelimit-limit"], "1");
        assert_eq!(h["x-ratelimit-remaining"], "0");
        let Err(r) = check(&cfg, "svc.ns.svc.cluster.local", &disc, &t) else {
            panic!("no token left")
        };
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            r.extensions().get::<ResponseFlag>(),
            Some(&ResponseFlag::RATE_LIMITED)
        );
        assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
        let text = t.metrics_text();
        assert!(
            text.contains(r#"envoy_http_local_rate_limit_enabled_total{stat_prefix="one"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"envoy_http_local_rate_limit_enforced_total{stat_prefix="one"} 1"#),
            "{text}"
        );
        // Another namespace's services are not covered.
        assert!(check(&cfg, "svc.other", &disc, &t).is_ok());
    }
}
