//! Unit tests of Gateway.

use crate::testing::{diags, e, errors, message_of, warnings};

#[test]
fn gateway_checks() {
    let y = "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: g}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [example.com]
  - port: {number: 0, name: x, protocol: HTTQ}
    hosts: []
";
    let mut got = errors(y);
    got.sort();
    let mut want = vec![
        e("AMB0007", "spec.servers[0].tls"),
        e("AMB0011", "spec.servers[1].port.number"),
        e("AMB0013", "spec.servers[1].port.protocol"),
        e("AMB0007", "spec.servers[1].hosts"),
    ];
    want.sort();
    assert_eq!(got, want);
    // Served by the gateway role: no warning for what it implements.
    assert!(warnings(y).is_empty(), "{:?}", warnings(y));
    let served = "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: g, namespace: production}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [myapp.example.com]
    tls: {httpsRedirect: true}
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [myapp.example.com]
    tls: {mode: SIMPLE, credentialName: myapp-tls}
  - port: {number: 8443, name: grpc, protocol: GRPC}
    hosts: ['*/grpc.example.com']
";
    assert!(diags(served).is_empty(), "{:#?}", diags(served));
    let unserved = "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: g}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [a.example.com]
    tls: {mode: MUTUAL, credentialName: c, minProtocolVersion: TLSV1_3}
  - port: {number: 15443, name: tls, protocol: TLS}
    hosts: ['*']
    tls: {mode: ISTIO_MUTUAL}
  - port: {number: 31400, name: tcp, protocol: TCP}
    hosts: ['*']
    bind: 10.0.0.1
  - port: {number: 8443, name: https2, protocol: HTTPS}
    hosts: [b.example.com]
    tls: {mode: PASSTHROUGH}
";
    assert!(errors(unserved).is_empty(), "{:?}", errors(unserved));
    let mut got = warnings(unserved);
    got.sort();
    let mut want = vec![
        e("AMB0021", "spec.servers[0].tls.mode"),
        e("AMB0021", "spec.servers[0].tls.minProtocolVersion"),
        e("AMB0021", "spec.servers[1].port.protocol"),
        e("AMB0021", "spec.servers[2].port.protocol"),
        e("AMB0021", "spec.servers[2].bind"),
        e("AMB0021", "spec.servers[3].tls.mode"),
    ];
    want.sort();
    assert_eq!(got, want);
    assert!(message_of(unserved, "spec.servers[0].tls.mode").contains("MUTUAL"));
    assert!(message_of(unserved, "spec.servers[1].port.protocol").starts_with("TLS servers"));
}
