//! Unit tests of Telemetry.

use crate::testing::{diags, e, errors, message_of, warnings};

#[test]
fn telemetry_unknown_and_unimplemented() {
    let y = "apiVersion: telemetry.istio.io/v1alpha1
kind: Telemetry
metadata: {name: t}
spec:
  tracing:
  - providers: [{name: zipkin}]
    randomSamplingPercentage: 120
  metrics:
  - providers: [{name: prometheus}]
    dimensions: {a: b}
    overrides:
    - match: {metric: REQUEST_COUNTS}
";
    let mut got = errors(y);
    got.sort();
    assert_eq!(
        got,
        vec![
            e("AMB0003", "spec.metrics[0].dimensions"),
            e("AMB0004", "spec.metrics[0].overrides[0].match.metric"),
            e("AMB0009", "spec.tracing[0].randomSamplingPercentage"),
        ]
    );
    assert_eq!(warnings(y), vec![e("AMB0021", "spec.tracing[0].providers")]);
    assert!(message_of(y, "spec.metrics[0].dimensions").contains("tagOverrides"));
}

#[test]
fn telemetry_what_the_waypoint_applies_passes_the_rest_is_named() {
    let applied = "apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: t, namespace: bookinfo}
spec:
  tracing: [{randomSamplingPercentage: 10, disableSpanReporting: true}]
  metrics: [{providers: [{name: prometheus}]}]
  accessLogging:
  - providers: [{name: envoy}]
  - disabled: true
";
    assert!(diags(applied).is_empty(), "{:#?}", diags(applied));
    let not = "apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: t, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: a}}
  tracing:
  - providers: [{name: zipkin}]
    customTags: {a: {literal: {value: b}}}
    useRequestIdForTraceSampling: true
  metrics:
  - overrides:
    - match: {metric: REQUEST_COUNT}
      disabled: true
    - match: {metric: REQUEST_DURATION}
      tagOverrides: {method: {value: request.method}}
  accessLogging:
  - providers: [{name: otel}]
    filter: {expression: 'response.code >= 400'}
    match: {mode: CLIENT}
";
    let mut got: Vec<_> = warnings(not)
        .into_iter()
        .filter(|(c, _)| c == "AMB0021")
        .collect();
    got.sort();
    let mut want = vec![
        e("AMB0021", "spec.selector"),
        e("AMB0021", "spec.tracing[0].providers"),
        e("AMB0021", "spec.tracing[0].customTags"),
        e("AMB0021", "spec.tracing[0].useRequestIdForTraceSampling"),
        e("AMB0021", "spec.metrics[0].overrides[0].disabled"),
        e("AMB0021", "spec.metrics[0].overrides[1].tagOverrides"),
        e("AMB0021", "spec.accessLogging[0].providers[0].name"),
        e("AMB0021", "spec.accessLogging[0].filter"),
        e("AMB0021", "spec.accessLogging[0].match"),
    ];
    want.sort();
    assert_eq!(got, want);
}
