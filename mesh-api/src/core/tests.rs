//! Unit tests of the core kinds and the mesh config.

use crate::testing::{diags, e, errors, message_of, warnings};

#[test]
fn core_kinds_and_mesh_config() {
    let y = "apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |
    defaultConfig:
      proxyStatsMatcher:
        inclusionRegexps: ['(']
        exclusionRegexps: [x]
    enablePrometheusMerge: false
    trustDomian: x
";
    let mut got = errors(y);
    got.sort();
    let mut want = vec![
        e(
            "AMB0012",
            "data.mesh.defaultConfig.proxyStatsMatcher.inclusionRegexps[0]",
        ),
        e(
            "AMB0003",
            "data.mesh.defaultConfig.proxyStatsMatcher.exclusionRegexps",
        ),
        e("AMB0003", "data.mesh.trustDomian"),
    ];
    want.sort();
    assert_eq!(got, want);
    assert!(message_of(y, "data.mesh.trustDomian").contains("did you mean data.mesh.trustDomain?"));
    let op = "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nmetadata: {name: x}\nspec: {profile: demo}\n";
    assert_eq!(warnings(op), vec![e("AMB0022", "")]);
    let other = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {replicas: 1}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: app}\ndata: {a: b}\n";
    assert!(diags(other).is_empty());
}

#[test]
fn use_waypoint_namespace_is_named_as_not_implemented() {
    let field = "metadata.labels.istio.io/use-waypoint-namespace";
    for kind in ["Namespace", "Service"] {
        let y = format!(
            "apiVersion: v1\nkind: {kind}\nmetadata:\n  name: reviews\n  namespace: shop\n  labels: {{istio.io/use-waypoint: wp, istio.io/use-waypoint-namespace: infra}}\n"
        );
        assert_eq!(warnings(&y), vec![e("AMB0021", field)], "{kind}");
        assert!(message_of(&y, field).contains("own namespace"), "{kind}");
    }
    // istio.io/use-waypoint alone, on either, is implemented: nothing to say.
    let y = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels: {istio.io/use-waypoint: wp}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: cart\n  namespace: shop\n  labels: {istio.io/use-waypoint: none}\nspec: {}\n";
    assert!(diags(y).is_empty(), "{:?}", diags(y));
}
