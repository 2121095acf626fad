//! Unit tests per kind: shape errors, value checks, unimplemented fields,
//! and the cross-resource checks.

use crate::{analyze, parse_documents, Code, Diagnostic, Resource, Severity};

fn diags(yaml: &str) -> Vec<Diagnostic> {
    analyze(&parse_documents(yaml, "test.yaml"))
}

/// `(code, field)` of every diagnostic at `sev`.
fn at(yaml: &str, sev: Severity) -> Vec<(String, String)> {
    diags(yaml)
        .into_iter()
        .filter(|d| d.severity == sev)
        .map(|d| (d.code.as_str().to_string(), d.field))
        .collect()
}

fn errors(yaml: &str) -> Vec<(String, String)> {
    at(yaml, Severity::Error)
}

fn warnings(yaml: &str) -> Vec<(String, String)> {
    at(yaml, Severity::Warning)
}

fn e(code: &str, field: &str) -> (String, String) {
    (code.to_string(), field.to_string())
}

fn message_of(yaml: &str, field: &str) -> String {
    diags(yaml)
        .into_iter()
        .find(|d| d.field == field)
        .map(|d| d.message)
        .unwrap_or_else(|| panic!("no diagnostic at {field}"))
}

const VS_HEAD: &str = "apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: r, namespace: demo}
";

// ------------------------------------------------------------ envelope --

#[test]
fn multi_document_yaml_with_comments() {
    let docs = parse_documents(
        "# leading comment\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n# only a comment\n---\napiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: a}\nspec: {}\n",
        "f.yaml",
    );
    assert_eq!(docs.len(), 2);
    assert_eq!(
        docs[0].resource.as_ref().unwrap().kind(),
        crate::Kind::Namespace
    );
    assert_eq!(docs[1].location.document, 2);
    assert!(docs.iter().all(|d| d.is_valid()));
}

#[test]
fn missing_metadata_and_name_are_errors() {
    let y = "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec: {}\n";
    assert_eq!(errors(y), vec![e("AMB0002", "metadata.name")]);
    let y = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {namespace: x}\nspec: {host: a}\n";
    assert_eq!(errors(y), vec![e("AMB0002", "metadata.name")]);
    let y = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: Not_Valid}\nspec: {host: a}\n";
    assert_eq!(errors(y), vec![e("AMB0002", "metadata.name")]);
}

#[test]
fn api_versions_as_istio_serves_them() {
    for v in ["v1", "v1beta1", "v1alpha3"] {
        let y = format!("apiVersion: networking.istio.io/{v}\nkind: DestinationRule\nmetadata: {{name: a}}\nspec: {{host: a}}\n");
        assert!(errors(&y).is_empty(), "{v}");
    }
    let y =
        "apiVersion: security.istio.io/v1alpha3\nkind: PeerAuthentication\nmetadata: {name: a}\n";
    assert_eq!(errors(y), vec![e("AMB0005", "apiVersion")]);
    let y = "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: a}\nspec: {}\n";
    assert!(errors(y).is_empty());
}

#[test]
fn unknown_kinds_are_warnings_and_syntax_errors_are_errors() {
    let y = "apiVersion: linkerd.io/v1alpha2\nkind: ServiceProfile\nmetadata: {name: a}\n";
    assert_eq!(warnings(y), vec![e("AMB0006", "")]);
    let d = diags("a: [unclosed\n");
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].code, Code::YamlSyntax);
    assert!(d[0].object.is_none());
    let d = diags("- just\n- a list\n");
    assert_eq!(d[0].code, Code::YamlSyntax);
}

#[test]
fn lists_are_expanded() {
    let y = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: a}\n- apiVersion: v1\n  kind: Namespace\n  metadata: {}\n";
    let docs = parse_documents(y, "l.yaml");
    assert_eq!(docs.len(), 2);
    assert_eq!(errors(y), vec![e("AMB0002", "metadata.name")]);
}

#[test]
fn display_is_mesh_node_style() {
    let y = format!("{VS_HEAD}spec:\n  host: reviews\n  http: [{{route: [{{destination: {{host: reviews}}}}]}}]\n");
    let d = diags(&y);
    assert_eq!(
        d[0].to_string(),
        "VirtualService demo/r: field spec.host: unknown field; did you mean spec.hosts?"
    );
    // The misspelt field is not reported again as missing hosts.
    assert!(!d.iter().any(|x| x.field == "spec.hosts"), "{d:#?}");
}

// ------------------------------------------------------ VirtualService --

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

// ----------------------------------------------------- DestinationRule --

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

// -------------------------------------------- Gateway, SE, Sidecar --

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

// --------------------------------------------------------- EnvoyFilter --

const RATE_LIMIT: &str = "apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: rl}
spec:
  configPatches:
  - applyTo: HTTP_FILTER
    match: {context: SIDECAR_INBOUND}
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.local_ratelimit
        typed_config:
          '@type': type.googleapis.com/udpa.type.v1.TypedStruct
          type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
          value:
            stat_prefix: rl
            token_bucket: {max_tokens: 10, tokens_per_fill: 10, fill_interval: 60s}
            filter_enabled: {runtime_key: e, default_value: {numerator: 100, denominator: HUNDRED}}
";

#[test]
fn envoy_filter_local_rate_limit_is_understood() {
    assert!(diags(RATE_LIMIT).is_empty(), "{:#?}", diags(RATE_LIMIT));
    let docs = parse_documents(RATE_LIMIT, "t");
    let Some(Resource::EnvoyFilter(ef)) = &docs[0].resource else {
        panic!()
    };
    let rl = ef.spec.local_rate_limits();
    assert_eq!(rl.len(), 1);
    let tb = rl[0].config.token_bucket.as_ref().unwrap();
    assert_eq!(tb.max_tokens, Some(10));
    assert_eq!(
        rl[0]
            .config
            .filter_enabled
            .as_ref()
            .unwrap()
            .default_value
            .as_ref()
            .unwrap()
            .percent(),
        100.0
    );
}

#[test]
fn envoy_filter_other_patches_warn_and_bad_buckets_fail() {
    let other = "apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: lua}
spec:
  configPatches:
  - applyTo: HTTP_FILTER
    patch: {operation: INSERT_BEFORE, value: {name: envoy.filters.http.lua}}
";
    assert_eq!(warnings(other), vec![e("AMB0021", "spec.configPatches[0]")]);
    assert!(errors(other).is_empty());
    let bad = RATE_LIMIT
        .replace("fill_interval: 60s", "fill_interval: soon")
        .replace("max_tokens: 10,", "max_tokens: 0,")
        .replace(
            "stat_prefix: rl",
            "stat_prefix: rl\n            descriptors: []",
        );
    let base = "spec.configPatches[0].patch.value.typed_config.value";
    let mut got = errors(&bad);
    got.sort();
    assert_eq!(
        got,
        vec![
            e("AMB0008", &format!("{base}.token_bucket.fill_interval")),
            e("AMB0013", &format!("{base}.token_bucket.max_tokens")),
        ]
    );
    assert_eq!(
        warnings(&bad),
        vec![e("AMB0021", &format!("{base}.descriptors"))]
    );
}

#[test]
fn envoy_filter_response_headers_and_x_ratelimit_headers_are_implemented() {
    let with = RATE_LIMIT.replace(
        "stat_prefix: rl",
        "stat_prefix: rl
            enable_x_ratelimit_headers: DRAFT_VERSION_03
            response_headers_to_add:
            - append_action: OVERWRITE_IF_EXISTS_OR_ADD
              header: {key: x-local-rate-limit, value: 'true'}",
    );
    assert!(diags(&with).is_empty(), "{:#?}", diags(&with));
    let base = "spec.configPatches[0].patch.value.typed_config.value";
    let bad = RATE_LIMIT.replace(
        "stat_prefix: rl",
        "stat_prefix: rl
            enable_x_ratelimit_headers: DRAFT_VERSION_04
            response_headers_to_add:
            - header: {key: 'bad key', value: x}
            - append_action: ADD_IF_ABSENT
              header: {key: x-a, value: b}
            - {}",
    );
    let mut got = errors(&bad);
    got.sort();
    assert_eq!(
        got,
        vec![
            e("AMB0004", &format!("{base}.enable_x_ratelimit_headers")),
            e(
                "AMB0007",
                &format!("{base}.response_headers_to_add[2].header")
            ),
            e(
                "AMB0013",
                &format!("{base}.response_headers_to_add[0].header.key")
            ),
        ]
    );
    assert_eq!(
        warnings(&bad),
        vec![e(
            "AMB0021",
            &format!("{base}.response_headers_to_add[1].append_action")
        )]
    );
    let targeted = RATE_LIMIT.replace(
        "spec:\n",
        "spec:\n  priority: 10\n  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: g}]\n",
    );
    let mut got = warnings(&targeted);
    got.sort();
    assert_eq!(
        got,
        vec![
            e("AMB0021", "spec.priority"),
            e("AMB0021", "spec.targetRefs")
        ]
    );
}

// -------------------------------------------------------------- security --

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

// ------------------------------------------------------------ telemetry --

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

// -------------------------------------------------------------- HTTPRoute --

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

// ------------------------------------------------------------ core kinds --

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

// ------------------------------------------------------ cross-resource --

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

#[test]
fn codes_are_unique_and_stable() {
    let mut seen = std::collections::BTreeSet::new();
    for c in Code::ALL {
        assert!(seen.insert(c.as_str()), "duplicate {c}");
        assert!(c.as_str().starts_with("AMB") && c.as_str().len() == 7);
    }
    assert_eq!(Code::UnknownField.as_str(), "AMB0003");
}
