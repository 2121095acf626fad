use http::header::HeaderMap;
use http::{HeaderValue, Method, StatusCode};

use super::*;
use crate::destination::DestinationRef;
use crate::discovery::Labels;
use crate::Config;

const SEEDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/istio/");

fn seed(name: &str) -> String {
    std::fs::read_to_string(format!("{SEEDS}{name}")).expect("seed config")
}

struct Req {
    method: Method,
    path: String,
    query: Option<String>,
    authority: String,
    headers: HeaderMap,
    labels: Labels,
}

impl Req {
    fn new(authority: &str, path_q: &str) -> Self {
        let (path, query) = match path_q.split_once('?') {
            Some((p, q)) => (p.to_string(), Some(q.to_string())),
            None => (path_q.to_string(), None),
        };
        Req {
            method: Method::GET,
            path,
            query,
            authority: authority.into(),
            headers: HeaderMap::new(),
            labels: Labels::new(),
        }
    }
    fn header(mut self, k: &'static str, v: &str) -> Self {
        self.headers
            .insert(k, HeaderValue::from_str(v).expect("value"));
        self
    }
    fn info(&self) -> RequestInfo<'_> {
        RequestInfo {
            method: &self.method,
            path: &self.path,
            query: self.query.as_deref(),
            scheme: "http",
            authority: &self.authority,
            port: split_host_port(&self.authority).1,
            headers: &self.headers,
            source_labels: &self.labels,
        }
    }
}

fn route_name(t: &RouteTable, r: &Req) -> Option<String> {
    t.select(&r.info())
        .map(|s| s.route.name.clone().unwrap_or_default())
}

fn single_dest(s: &Selected<'_>) -> DestinationRef {
    match &s.route.action {
        Action::Forward(ds) => ds[0].destination.clone(),
        a => panic!("not a forward: {a:?}"),
    }
}

#[test]
fn seed_54_jason_goes_to_v2() {
    let (c, issues) = Config::from_yaml(&seed("54-004-virtualservice-reviews.yaml"), "54");
    assert!(issues.is_empty(), "{issues:?}");
    let jason = Req::new("reviews:9080", "/reviews/0").header("end-user", "jason");
    let other = Req::new("reviews.default.svc.cluster.local", "/").header("end-user", "mary");
    let anon = Req::new("reviews", "/");
    let d = single_dest(&c.routes.select(&jason.info()).expect("jason"));
    assert_eq!(d.subset.as_deref(), Some("v2"));
    for r in [&other, &anon] {
        let d = single_dest(&c.routes.select(&r.info()).expect("route"));
        assert_eq!(d.subset.as_deref(), Some("v1"));
    }
    assert!(c.routes.host_routes("ratings").is_none());
}

const MATCHES: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: m}
spec:
  hosts: [svc]
  http:
  - name: exact
    match: [{uri: {exact: /exact}}]
    route: [{destination: {host: svc}}]
  - name: regex
    match: [{uri: {regex: "/items/[0-9]+"}}]
    route: [{destination: {host: svc}}]
  - name: header-prefix-and-method
    match: [{headers: {x-team: {prefix: blue}}, method: {exact: POST}}]
    route: [{destination: {host: svc}}]
  - name: header-regex
    match: [{headers: {x-id: {regex: "[a-f]{4}"}}}]
    route: [{destination: {host: svc}}]
  - name: query
    match: [{queryParams: {debug: {exact: "1"}}}]
    route: [{destination: {host: svc}}]
  - name: source
    match: [{sourceLabels: {app: productpage}}]
    route: [{destination: {host: svc}}]
  - name: present-or-nocase
    match:
    - headers: {x-present: {}}
    - uri: {prefix: /CASE}
      ignoreUriCase: true
    route: [{destination: {host: svc}}]
  - name: gw-only
    match: [{gateways: [my-gw], uri: {prefix: /}}]
    route: [{destination: {host: svc}}]
  - name: catch-all
    route: [{destination: {host: svc}}]
"#;

#[test]
fn match_kinds_first_match_wins() {
    let (c, issues) = Config::from_yaml(MATCHES, "m");
    // The gateway-only route is reported and left out.
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert!(issues[0].path.contains("http[7]"), "{}", issues[0]);
    let t = &c.routes;
    let n = |r: Req| route_name(t, &r);
    assert_eq!(n(Req::new("svc", "/exact")).as_deref(), Some("exact"));
    assert_eq!(
        n(Req::new("svc", "/exact/no")).as_deref(),
        Some("catch-all")
    );
    assert_eq!(n(Req::new("svc", "/items/42")).as_deref(), Some("regex"));
    // Regex is anchored: a longer path does not match.
    assert_eq!(
        n(Req::new("svc", "/items/42/x")).as_deref(),
        Some("catch-all")
    );
    let mut post = Req::new("svc", "/p").header("x-team", "blue-7");
    assert_eq!(
        n(Req::new("svc", "/p").header("x-team", "blue-7")).as_deref(),
        Some("catch-all")
    );
    post.method = Method::POST;
    assert_eq!(n(post).as_deref(), Some("header-prefix-and-method"));
    assert_eq!(
        n(Req::new("svc", "/").header("x-id", "beef")).as_deref(),
        Some("header-regex")
    );
    assert_eq!(
        n(Req::new("svc", "/").header("x-id", "beefy")).as_deref(),
        Some("catch-all")
    );
    assert_eq!(
        n(Req::new("svc", "/?a=2&debug=1")).as_deref(),
        Some("query")
    );
    assert_eq!(
        n(Req::new("svc", "/?debug=10")).as_deref(),
        Some("catch-all")
    );
    let mut src = Req::new("svc", "/");
    src.labels.insert("app".into(), "productpage".into());
    src.labels.insert("version".into(), "v1".into());
    assert_eq!(n(src).as_deref(), Some("source"));
    assert_eq!(
        n(Req::new("svc", "/").header("x-present", "")).as_deref(),
        Some("present-or-nocase")
    );
    assert_eq!(
        n(Req::new("svc", "/case/x")).as_deref(),
        Some("present-or-nocase")
    );
    assert_eq!(n(Req::new("other", "/")), None);
}

#[test]
fn rewrite_redirect_headers_weights() {
    let yaml = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r}
spec:
  hosts: [svc]
  http:
  - match: [{uri: {prefix: /old}}]
    redirect: {uri: /new, authority: elsewhere, redirectCode: 308}
  - match: [{uri: {prefix: /api/v1/}}]
    rewrite: {uri: /v2/, authority: backend}
    headers:
      request: {set: {x-a: "1"}, remove: [x-secret]}
      response: {add: {x-served-by: waypoint}}
    route:
    - destination: {host: svc, subset: a}
      weight: 80
      headers: {request: {add: {x-dest: a}}}
    - destination: {host: svc, subset: b}
      weight: 20
  - match: [{uri: {prefix: /re}}]
    rewrite: {uriRegexRewrite: {match: "^/re/(\\w+)/(\\w+)$", rewrite: "/\\2/\\1"}}
    route: [{destination: {host: svc}}]
  - match: [{uri: {exact: /teapot}}]
    directResponse: {status: 418, body: {string: short and stout}}
"#;
    let (c, issues) = Config::from_yaml(yaml, "r");
    assert!(issues.is_empty(), "{issues:?}");
    let r = Req::new("svc:8080", "/old/x?q=1");
    let s = c.routes.select(&r.info()).expect("redirect");
    let Action::Redirect(rd) = &s.route.action else {
        panic!("redirect")
    };
    assert_eq!(rd.code, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        rd.location(&r.info(), s.matched),
        "http://elsewhere/new?q=1"
    );

    let r = Req::new("svc", "/api/v1/users");
    let s = c.routes.select(&r.info()).expect("rewrite");
    let rw = s.route.rewrite.as_ref().expect("rewrite");
    assert_eq!(
        rw.path.as_ref().expect("path").apply(&r.path, s.matched),
        "/v2/users"
    );
    assert_eq!(rw.authority.as_deref(), Some("backend"));
    let Action::Forward(ds) = &s.route.action else {
        panic!("forward")
    };
    assert_eq!(
        ds.iter().map(|d| d.weight).collect::<Vec<_>>(),
        vec![80, 20]
    );
    let merged = s.route.headers.merged(&ds[0].headers);
    let mut h = HeaderMap::new();
    h.insert("x-secret", HeaderValue::from_static("s"));
    merged.request.apply(&mut h);
    assert!(h.get("x-secret").is_none());
    assert_eq!(h.get("x-a").map(|v| v.as_bytes()), Some(&b"1"[..]));
    assert_eq!(h.get("x-dest").map(|v| v.as_bytes()), Some(&b"a"[..]));

    let r = Req::new("svc", "/re/one/two");
    let s = c.routes.select(&r.info()).expect("regex rewrite");
    let p = s
        .route
        .rewrite
        .as_ref()
        .and_then(|x| x.path.as_ref())
        .expect("path");
    assert_eq!(p.apply(&r.path, s.matched), "/two/one");

    let r = Req::new("svc", "/teapot");
    let s = c.routes.select(&r.info()).expect("direct");
    assert!(matches!(&s.route.action, Action::Direct { status, .. } if status.as_u16() == 418));

    // Prefix rewrite without a uri match replaces the leading "/".
    assert_eq!(
        PathRewrite::Prefix("/v1/".into()).apply("/x", None),
        "/v1/x"
    );
}

#[test]
fn http_route_precedence_and_filters() {
    let yaml = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: h}
spec:
  parentRefs: [{group: "", kind: Service, name: svc, port: 80}]
  rules:
  - backendRefs: [{name: svc-v1, port: 80, weight: 90}, {name: svc-v2, port: 80, weight: 10}]
  - matches: [{path: {type: PathPrefix, value: /api}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-api, value: "yes"}], remove: [x-drop]}
    - type: URLRewrite
      urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}
    backendRefs: [{name: api, port: 80}]
  - matches: [{path: {type: Exact, value: /api/special}, headers: [{name: x-k, value: v}]}]
    filters:
    - type: RequestRedirect
      requestRedirect: {hostname: new.example, statusCode: 301}
  - matches: [{path: {type: PathPrefix, value: /m}}]
    filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: shadow, port: 80}, percent: 25}
    backendRefs: [{name: svc-v1, port: 80}]
"#;
    let (c, issues) = Config::from_yaml(yaml, "h");
    assert!(issues.is_empty(), "{issues:?}");
    let t = &c.routes;
    // Exact beats the /api prefix even though written later.
    let r = Req::new("svc", "/api/special").header("x-k", "v");
    let s = t.select(&r.info()).expect("exact");
    assert!(matches!(&s.route.action, Action::Redirect(rd) if rd.code.as_u16() == 301));
    let r = Req::new("svc", "/api/users");
    let s = t.select(&r.info()).expect("prefix");
    assert_eq!(single_dest(&s).host, "api");
    let p = s
        .route
        .rewrite
        .as_ref()
        .and_then(|x| x.path.as_ref())
        .expect("rewrite");
    assert_eq!(p.apply(&r.path, s.matched), "/v2/users");
    assert_eq!(s.route.headers.request.set.len(), 1);
    // /apix is not under /api for Gateway API? It is a plain prefix here.
    let r = Req::new("svc", "/other");
    let s = t.select(&r.info()).expect("catch-all");
    let Action::Forward(ds) = &s.route.action else {
        panic!("forward")
    };
    assert_eq!(
        ds.iter().map(|d| d.weight).collect::<Vec<_>>(),
        vec![90, 10]
    );
    let r = Req::new("svc", "/m/1");
    let s = t.select(&r.info()).expect("mirror");
    assert_eq!(s.route.mirrors.len(), 1);
    assert_eq!(s.route.mirrors[0].destination.host, "shadow");
    assert_eq!(s.route.mirrors[0].percent, 25.0);
}

#[test]
fn weighted_pick_follows_weights() {
    let (c, _) = Config::from_yaml(&seed("55-004-virtualservice-reviews.yaml"), "55");
    let r = Req::new("reviews", "/");
    let s = c.routes.select(&r.info()).expect("route");
    let mut rng = rand::thread_rng();
    let n = 10_000;
    let v1 = (0..n)
        .filter(|_| {
            s.route
                .pick_destination(&mut rng)
                .and_then(|d| d.destination.subset.clone())
                .as_deref()
                == Some("v1")
        })
        .count();
    // 50/50 over 10 000 draws: sd = 50; 4.5 sd = 225.
    assert!((4775..=5225).contains(&v1), "{v1}");
}
