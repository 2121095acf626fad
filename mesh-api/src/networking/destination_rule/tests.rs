//! Unit tests of DestinationRule.

use crate::parse::parse_documents;
use crate::resource::Resource;
use crate::testing::{e, errors, warnings};

const DR_HEAD: &str = "apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: r, namespace: demo}
";

#[test]
fn destination_rule_consecutive_errors_is_deprecated_and_effective() {
    let y = format!("{DR_HEAD}spec:\n  host: a\n  trafficPolicy:\n    outlierDetection: {{consecutiveErrors: 3, interval: 1s, baseEjectionTime: 3m, maxEjectionPercent: 100}}\n");
    assert_eq!(
        warnings(&y),
        vec![e(
            "AMB0020",
            "spec.trafficPolicy.outlierDetection.consecutiveErrors"
        )]
    );
    let docs = parse_documents(&y, "t");
    let Some(Resource::DestinationRule(dr)) = &docs[0].resource else {
        panic!()
    };
    let od = dr
        .spec
        .traffic_policy
        .as_ref()
        .unwrap()
        .outlier_detection
        .as_ref()
        .unwrap();
    assert_eq!(od.effective_consecutive_5xx_errors(), Some(3));
}

#[test]
fn destination_rule_values() {
    let y = format!("{DR_HEAD}spec:\n  trafficPolicy:\n    loadBalancer: {{simple: LEAST_CONNECTIONS}}\n    outlierDetection: {{interval: 10, maxEjectionPercent: 120}}\n    connectionPool: {{tcp: {{connectTimeout: 5x}}, http: {{h2UpgradePolicy: UPGRADE}}}}\n  subsets:\n  - name: v1\n  - name: v1\n  - labels: {{a: b}}\n");
    let mut got = errors(&y);
    got.sort();
    let mut want = vec![
        e("AMB0007", "spec.host"),
        e("AMB0004", "spec.trafficPolicy.loadBalancer.simple"),
        e("AMB0004", "spec.trafficPolicy.outlierDetection.interval"),
        e(
            "AMB0009",
            "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
        ),
        e(
            "AMB0008",
            "spec.trafficPolicy.connectionPool.tcp.connectTimeout",
        ),
        e("AMB0013", "spec.subsets[1].name"),
        e("AMB0007", "spec.subsets[2].name"),
    ];
    want.sort();
    assert_eq!(got, want);
    // h2UpgradePolicy is implemented by the waypoint: no warning.
    assert!(warnings(&y).is_empty(), "{:?}", warnings(&y));
}
