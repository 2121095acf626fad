//! Unit tests of Sidecar.

use crate::testing::{e, errors, warnings};

#[test]
fn sidecar_is_not_applied_but_checked() {
    let y = "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: a}
spec:
  egress:
  - hosts: ['./*', 'reviews']
";
    assert_eq!(errors(y), vec![e("AMB0013", "spec.egress[0].hosts[1]")]);
    assert_eq!(warnings(y), vec![e("AMB0022", "")]);
}
