//! Unit tests of PeerAuthentication, AuthorizationPolicy, RequestAuthentication.

use crate::testing::{diags, e, errors, message_of, warnings};

#[test]
fn peer_authentication_modes() {
    let y = "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: pa}
spec:
  mtls: {mode: strict}
  portLevelMtls:
    8080: {mode: DISABLE}
";
    let mut got = errors(y);
    got.sort();
    assert_eq!(
        got,
        vec![
            e("AMB0004", "spec.mtls.mode"),
            e("AMB0007", "spec.selector")
        ]
    );
    assert!(message_of(y, "spec.mtls.mode").contains("did you mean STRICT?"));
    let ok = "apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: pa}
spec:
  selector: {matchLabels: {app: a}}
  mtls: {mode: PERMISSIVE}
  portLevelMtls: {8080: {mode: DISABLE}}
";
    assert!(diags(ok).is_empty());
    // A port without `mode` inherits (UNSET), as Istio reads it.
    let inherit = "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: pa}
spec:
  selector: {matchLabels: {app: a}}
  mtls: {mode: STRICT}
  portLevelMtls: {8080: {}}
";
    assert!(diags(inherit).is_empty(), "{:?}", diags(inherit));
}

#[test]
fn authorization_policy_action_and_rule_shapes() {
    let y = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ap}
spec:
  action: DENIED
  rules:
  - from:
    - source: {principals: ['spiffe://cluster.local/ns/a/sa/b'], ipBlocks: ['10.0.0.0/40']}
    - source: {}
    to:
    - operation: {ports: ['99999'], paths: [api]}
    when:
    - key: request.header[x]
      values: [a]
    - key: source.ip
";
    let mut got = errors(y);
    got.sort();
    let mut want = vec![
        e("AMB0004", "spec.action"),
        e("AMB0013", "spec.rules[0].from[0].source.principals[0]"),
        e("AMB0013", "spec.rules[0].from[0].source.ipBlocks[0]"),
        e("AMB0007", "spec.rules[0].from[1].source"),
        e("AMB0011", "spec.rules[0].to[0].operation.ports[0]"),
        e("AMB0013", "spec.rules[0].to[0].operation.paths[0]"),
        e("AMB0013", "spec.rules[0].when[0].key"),
        e("AMB0007", "spec.rules[0].when[1].values"),
    ];
    want.sort();
    assert_eq!(got, want);
    assert!(message_of(y, "spec.rules[0].when[0].key").contains("request.headers[x]"));

    let custom = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ap}
spec:
  action: CUSTOM
  rules: [{}]
";
    assert_eq!(errors(custom), vec![e("AMB0007", "spec.provider")]);
    let custom = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ap}
spec:
  action: CUSTOM
  provider: {name: ext-authz}
  rules: [{}]
";
    assert_eq!(warnings(custom), vec![e("AMB0021", "spec.action")]);
    // AUDIT is evaluated and logged by the waypoint: nothing to warn about.
    let audit = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ap}
spec:
  action: AUDIT
  rules: [{to: [{operation: {paths: [/admin/*]}}]}]
";
    assert!(diags(audit).is_empty(), "{:#?}", diags(audit));
    let allow_nothing = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing}
spec: {}
";
    assert!(diags(allow_nothing).is_empty());
}

#[test]
fn request_authentication_needs_issuer_and_keys() {
    let y = "apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: ra}
spec:
  jwtRules:
  - audiences: [x]
  - issuer: a
    jwksUri: ftp://x
  - issuer: b
  - issuer: c
    jwks: 'not json'
";
    let mut got = errors(y);
    got.sort();
    assert_eq!(
        got,
        vec![
            e("AMB0007", "spec.jwtRules[0].issuer"),
            e("AMB0013", "spec.jwtRules[1].jwksUri"),
            e("AMB0013", "spec.jwtRules[3].jwks"),
        ]
    );
    assert_eq!(warnings(y), vec![e("AMB0021", "spec.jwtRules[2].jwksUri")]);
    assert!(message_of(y, "spec.jwtRules[2].jwksUri").contains("OpenID discovery"));
    // What the waypoint implements passes without a word; cookies do not.
    let full = "apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: ra}
spec:
  jwtRules:
  - issuer: a
    audiences: [x]
    jwksUri: https://a.example.com/jwks.json
    fromHeaders: [{name: x-jwt, prefix: 'Bearer '}]
    fromParams: [token]
    forwardOriginalToken: true
    outputPayloadToHeader: x-jwt-payload
    outputClaimToHeaders: [{header: x-sub, claim: sub}]
    timeout: 2s
  - issuer: b
    jwks: '{\"keys\": []}'
    fromCookies: [session]
";
    assert!(errors(full).is_empty(), "{:?}", errors(full));
    assert_eq!(
        warnings(full),
        vec![e("AMB0021", "spec.jwtRules[1].fromCookies")]
    );
    let bad_headers = "apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: ra}
spec:
  jwtRules:
  - issuer: a
    jwksUri: https://a.example.com/jwks.json
    fromHeaders: [{name: 'x jwt'}]
    outputPayloadToHeader: 'x:payload'
    outputClaimToHeaders: [{header: 'x sub', claim: sub}]
";
    let mut got = errors(bad_headers);
    got.sort();
    assert_eq!(
        got,
        vec![
            e("AMB0013", "spec.jwtRules[0].fromHeaders[0].name"),
            e("AMB0013", "spec.jwtRules[0].outputClaimToHeaders[0].header"),
            e("AMB0013", "spec.jwtRules[0].outputPayloadToHeader"),
        ]
    );
}
