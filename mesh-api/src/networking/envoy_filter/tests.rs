//! Unit tests of EnvoyFilter (local rate limit).

use crate::parse::parse_documents;
use crate::resource::Resource;
use crate::testing::{diags, e, errors, warnings};

const RATE_LIMIT: &str = "apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: rl}
spec:
  configPatches:
  - applyTo: HTTP_FILTER
    match: {context: SIDECAR_INBOUND}
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.local_ratelimit
        typed_config:
          '@type': type.googleapis.com/udpa.type.v1.TypedStruct
          type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
          value:
            stat_prefix: rl
            token_bucket: {max_tokens: 10, tokens_per_fill: 10, fill_interval: 60s}
            filter_enabled: {runtime_key: e, default_value: {numerator: 100, denominator: HUNDRED}}
";

#[test]
fn envoy_filter_local_rate_limit_is_understood() {
    assert!(diags(RATE_LIMIT).is_empty(), "{:#?}", diags(RATE_LIMIT));
    let docs = parse_documents(RATE_LIMIT, "t");
    let Some(Resource::EnvoyFilter(ef)) = &docs[0].resource else {
        panic!()
    };
    let rl = ef.spec.local_rate_limits();
    assert_eq!(rl.len(), 1);
    let tb = rl[0].config.token_bucket.as_ref().unwrap();
    assert_eq!(tb.max_tokens, Some(10));
    assert_eq!(
        rl[0]
            .config
            .filter_enabled
            .as_ref()
            .unwrap()
            .default_value
            .as_ref()
            .unwrap()
            .percent(),
        100.0
    );
}

#[test]
fn envoy_filter_other_patches_warn_and_bad_buckets_fail() {
    let other = "apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: lua}
spec:
  configPatches:
  - applyTo: HTTP_FILTER
    patch: {operation: INSERT_BEFORE, value: {name: envoy.filters.http.lua}}
";
    assert_eq!(warnings(other), vec![e("AMB0021", "spec.configPatches[0]")]);
    assert!(errors(other).is_empty());
    let bad = RATE_LIMIT
        .replace("fill_interval: 60s", "fill_interval: soon")
        .replace("max_tokens: 10,", "max_tokens: 0,")
        .replace(
            "stat_prefix: rl",
            "stat_prefix: rl\n            descriptors: []",
        );
    let base = "spec.configPatches[0].patch.value.typed_config.value";
    let mut got = errors(&bad);
    got.sort();
    assert_eq!(
        got,
        vec![
            e("AMB0008", &format!("{base}.token_bucket.fill_interval")),
            e("AMB0013", &format!("{base}.token_bucket.max_tokens")),
        ]
    );
    assert_eq!(
        warnings(&bad),
        vec![e("AMB0021", &format!("{base}.descriptors"))]
    );
}

#[test]
fn envoy_filter_response_headers_and_x_ratelimit_headers_are_implemented() {
    let with = RATE_LIMIT.replace(
        "stat_prefix: rl",
        "stat_prefix: rl
            enable_x_ratelimit_headers: DRAFT_VERSION_03
            response_headers_to_add:
            - append_action: OVERWRITE_IF_EXISTS_OR_ADD
              header: {key: x-local-rate-limit, value: 'true'}",
    );
    assert!(diags(&with).is_empty(), "{:#?}", diags(&with));
    let base = "spec.configPatches[0].patch.value.typed_config.value";
    let bad = RATE_LIMIT.replace(
        "stat_prefix: rl",
        "stat_prefix: rl
            enable_x_ratelimit_headers: DRAFT_VERSION_04
            response_headers_to_add:
            - header: {key: 'bad key', value: x}
            - append_action: ADD_IF_ABSENT
              header: {key: x-a, value: b}
            - {}",
    );
    let mut got = errors(&bad);
    got.sort();
    assert_eq!(
        got,
        vec![
            e("AMB0004", &format!("{base}.enable_x_ratelimit_headers")),
            e(
                "AMB0007",
                &format!("{base}.response_headers_to_add[2].header")
            ),
            e(
                "AMB0013",
                &format!("{base}.response_headers_to_add[0].header.key")
            ),
        ]
    );
    assert_eq!(
        warnings(&bad),
        vec![e(
            "AMB0021",
            &format!("{base}.response_headers_to_add[1].append_action")
        )]
    );
    let targeted = RATE_LIMIT.replace(
        "spec:\n",
        "spec:\n  priority: 10\n  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: g}]\n",
    );
    let mut got = warnings(&targeted);
    got.sort();
    assert_eq!(
        got,
        vec![
            e("AMB0021", "spec.priority"),
            e("AMB0021", "spec.targetRefs")
        ]
    );
}
