//! Unit tests of VirtualService.

use crate::testing::{diags, e, errors, message_of, warnings, VS_HEAD};

#[test]
fn virtual_service_every_problem_is_reported() {
    let y = format!(
        "{VS_HEAD}spec:
  hosts: [reviews]
  gatways: [x]
  http:
  - match:
    - uri: {{prefix: /a, exact: /b}}
    - headers: {{x: {{regex: '([a-'}}}}
    route:
    - destination: {{host: reviews, subset: v1}}
      weight: 70
    - destination: {{host: reviews, subset: v2}}
      weight: 20
    timeout: 5 seconds
    retries: {{attempts: three, perTryTimeout: 0.5s, retryOn: '5xx,gateway-eror'}}
    fault:
      abort: {{httpStatus: 700, percentage: {{value: 150}}}}
"
    );
    let mut got = errors(&y);
    got.sort();
    let mut want = vec![
        e("AMB0003", "spec.gatways"),
        e("AMB0004", "spec.http[0].retries.attempts"),
        e("AMB0014", "spec.http[0].match[0].uri"),
        e("AMB0012", "spec.http[0].match[1].headers.x.regex"),
        e("AMB0010", "spec.http[0].route"),
        e("AMB0008", "spec.http[0].timeout"),
        e("AMB0013", "spec.http[0].retries.retryOn"),
        e("AMB0013", "spec.http[0].fault.abort.httpStatus"),
        e("AMB0009", "spec.http[0].fault.abort.percentage.value"),
    ];
    want.sort();
    assert_eq!(got, want);
    assert!(message_of(&y, "spec.gatways").contains("did you mean spec.gateways?"));
    assert!(message_of(&y, "spec.http[0].retries.retryOn").contains("did you mean gateway-error?"));
}

#[test]
fn virtual_service_weights_and_durations() {
    let ok = format!("{VS_HEAD}spec:\n  hosts: [a]\n  http:\n  - timeout: 0.5s\n    retries: {{attempts: 2, perTryTimeout: 10ms}}\n    fault: {{delay: {{fixedDelay: 3m, percentage: {{value: 50}}}}}}\n    route:\n    - destination: {{host: a, subset: v1}}\n      weight: 50\n    - destination: {{host: a, subset: v2}}\n      weight: 50\n");
    assert!(diags(&ok).is_empty(), "{:#?}", diags(&ok));
    let single = format!("{VS_HEAD}spec:\n  hosts: [a]\n  http: [{{route: [{{destination: {{host: a}}, weight: 30}}]}}]\n");
    assert!(errors(&single).is_empty());
    let bad = format!("{VS_HEAD}spec:\n  hosts: [a]\n  http:\n  - route:\n    - destination: {{host: a, port: {{number: 70000}}}}\n      weight: 60\n    - destination: {{host: a}}\n");
    let mut got = errors(&bad);
    got.sort();
    assert_eq!(
        got,
        vec![
            e("AMB0010", "spec.http[0].route"),
            e("AMB0011", "spec.http[0].route[0].destination.port.number"),
        ]
    );
}

#[test]
fn virtual_service_unimplemented_and_deprecated_fields_warn() {
    let y = format!("{VS_HEAD}spec:\n  hosts: [a]\n  exportTo: ['.']\n  http:\n  - corsPolicy: {{allowOrigins: [{{exact: x}}]}}\n    mirror: {{host: b}}\n    mirrorPercent: 10\n    route: [{{destination: {{host: a}}}}]\n  tcp:\n  - route: [{{destination: {{host: a}}}}]\n");
    let mut got = warnings(&y);
    got.sort();
    assert_eq!(
        got,
        vec![
            e("AMB0020", "spec.http[0].mirrorPercent"),
            e("AMB0021", "spec.exportTo"),
            e("AMB0021", "spec.http[0].corsPolicy"),
            e("AMB0021", "spec.tcp"),
        ]
    );
    assert!(errors(&y).is_empty());
}

#[test]
fn virtual_service_without_hosts_is_a_delegate_warning() {
    let y = format!("{VS_HEAD}spec:\n  http: [{{route: [{{destination: {{host: a}}}}]}}]\n");
    assert_eq!(warnings(&y), vec![e("AMB0021", "spec.hosts")]);
}
