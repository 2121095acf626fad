//! Unit tests of ServiceEntry.

use crate::testing::{diags, e, errors};

#[test]
fn service_entry_checks() {
    let y = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec:
  hosts: [api.example.com]
  addresses: [10.0.0.0/33]
  ports: [{number: 443, name: https, protocol: TLS}]
  resolution: STATIC
";
    let mut got = errors(y);
    got.sort();
    assert_eq!(
        got,
        vec![
            e("AMB0007", "spec.endpoints"),
            e("AMB0013", "spec.addresses[0]")
        ]
    );
    let ok = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec:
  hosts: [api.example.com]
  ports: [{number: 443, name: https, protocol: TLS}]
  resolution: DNS
  location: MESH_EXTERNAL
";
    assert!(diags(ok).is_empty(), "{:#?}", diags(ok));
}
