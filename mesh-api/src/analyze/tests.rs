//! Unit tests of the checks across resources: references, duplicates,
//! conflicts, providers.

use crate::testing::{e, message_of, warnings};

#[test]
fn referenced_subsets_and_gateways() {
    let y = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec:
  host: reviews.bookinfo.svc.cluster.local
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  gateways: [mesh, gw, other/gw2]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 50
    - destination: {host: reviews, subset: v3}
      weight: 50
  - route:
    - destination: {host: ratings, subset: v9}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: bookinfo}
spec:
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]
";
    let w: Vec<_> = warnings(y)
        .into_iter()
        .filter(|(c, _)| c != "AMB0022")
        .collect();
    assert_eq!(
        w,
        vec![
            e("AMB0030", "spec.http[0].route[1].destination.subset"),
            e("AMB0031", "spec.gateways[2]"),
        ]
    );
    assert!(message_of(y, "spec.http[0].route[1].destination.subset").contains("defined: v1"));
}

#[test]
fn duplicates_and_conflicting_destination_rules() {
    let y = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: a, namespace: p}
spec: {host: myapp, trafficPolicy: {loadBalancer: {simple: RANDOM}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: b, namespace: p}
spec: {host: myapp.p.svc.cluster.local, trafficPolicy: {loadBalancer: {simple: RANDOM}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: a, namespace: p}
spec: {host: other}
";
    assert_eq!(
        warnings(y),
        vec![
            e("AMB0033", "spec.trafficPolicy"),
            e("AMB0032", "metadata.name"),
        ]
    );
}

#[test]
fn telemetry_providers_are_checked_against_mesh_config() {
    let y = "apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |
    extensionProviders:
    - name: jaeger
      envoyOtelAls: {service: j, port: 9411}
    - name: otel
      opentelemetry: {service: o, port: 4317}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: t, namespace: istio-system}
spec:
  tracing: [{providers: [{name: jaeger}, {name: otel}, {name: nope}]}]
";
    let w: Vec<_> = warnings(y)
        .into_iter()
        .filter(|(c, _)| c == "AMB0034")
        .collect();
    assert_eq!(
        w,
        vec![
            e("AMB0034", "spec.tracing[0].providers[0].name"),
            e("AMB0034", "spec.tracing[0].providers[2].name"),
        ]
    );
}
