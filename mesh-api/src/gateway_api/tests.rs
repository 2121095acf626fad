//! Unit tests of HTTPRoute.

use crate::testing::{e, errors, warnings};

#[test]
fn http_route_checks() {
    let y = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: reviews, kind: Service, group: ''}]
  rules:
  - matches: [{path: {type: PathPrefix, value: api}}, {path: {type: RegularExpression, value: '('}}]
    filters: [{type: RequestHeaderModifier}]
    backendRefs: [{name: reviews}, {name: reviews, port: 9080, weight: 90}]
";
    let mut got = errors(y);
    got.sort();
    let mut want = vec![
        e("AMB0013", "spec.rules[0].matches[0].path.value"),
        e("AMB0012", "spec.rules[0].matches[1].path.value"),
        e("AMB0007", "spec.rules[0].filters[0].requestHeaderModifier"),
        e("AMB0007", "spec.rules[0].backendRefs[0].port"),
    ];
    want.sort();
    assert_eq!(got, want);
    let gw = "apiVersion: gateway.networking.k8s.io/v1beta1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: a, port: 80}]}]
";
    assert_eq!(warnings(gw), vec![e("AMB0021", "spec.parentRefs[0]")]);
}
