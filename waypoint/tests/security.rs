//! L7 security end to end: RequestAuthentication and AuthorizationPolicy
//! through a real waypoint (hyper servers and clients on 127.0.0.1), JWTs
//! signed in the test with a fixed RSA key (tests/fixtures) and generated
//! EC P-256 keys, a JWKS served by a loopback server. The authorization
//! table calls the request path's hook ([`waypoint::security::enforce`])
//! directly, since a caller's SPIFFE identity only exists on HBONE.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mesh_identity::Identity;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use waypoint::layers::{authn, authz};
use waypoint::peer::Peer;
use waypoint::{Config, Endpoint, StaticDiscovery, TcpConnector, Waypoint};

/// The seed config `name` from the repository's fixtures
/// (`tests/fixtures/istio`).
fn seed(name: &str) -> String {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/istio");
    std::fs::read_to_string(dir.join(name)).expect("seed config")
}

const RSA_PEM: &[u8] = include_bytes!("fixtures/jwt-rsa-2048.pem");
const RSA_JWK: &str = include_str!("fixtures/jwt-rsa-2048.jwk.json");
const RSA_KID: &str = "rsa-test-1";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(RSA_PEM).expect("rsa key")
}

fn rsa_jwk() -> Value {
    serde_json::from_str(RSA_JWK).expect("jwk")
}

/// A fresh EC P-256 key and its public JWK.
fn ec_key(kid: &str) -> (EncodingKey, Value) {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("ec key");
    let raw = kp.public_key_raw();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let jwk = json!({"kty": "EC", "crv": "P-256", "alg": "ES256", "kid": kid,
        "x": b64.encode(&raw[1..33]), "y": b64.encode(&raw[33..65])});
    (
        EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).expect("pem"),
        jwk,
    )
}

fn sign(alg: Algorithm, key: &EncodingKey, kid: &str, claims: Value) -> String {
    let mut h = Header::new(alg);
    h.kid = Some(kid.to_string());
    jsonwebtoken::encode(&h, &claims, key).expect("sign")
}

// ------------------------------------------------------------ servers --

/// Serves `body` on every path; counts requests.
#[derive(Clone)]
struct JwksServer {
    addr: SocketAddr,
    body: Arc<Mutex<String>>,
    hits: Arc<AtomicUsize>,
}

impl JwksServer {
    async fn start(keys: Vec<Value>) -> JwksServer {
        Self::start_with(keys, None).await
    }

    /// Over TLS with a self-signed certificate for 127.0.0.1; also returns
    /// a client config trusting it.
    async fn start_tls(keys: Vec<Value>) -> (JwksServer, Arc<rustls::ClientConfig>) {
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("cert");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![ck.cert.der().clone()], key)
            .expect("server config");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ck.cert.der().clone()).expect("root");
        let client = waypoint::authn::tls_client_config(roots).expect("client config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        (Self::start_with(keys, Some(acceptor)).await, client)
    }

    async fn start_with(keys: Vec<Value>, tls: Option<tokio_rustls::TlsAcceptor>) -> JwksServer {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let s = JwksServer {
            addr: l.local_addr().expect("addr"),
            body: Arc::new(Mutex::new(json!({ "keys": keys }).to_string())),
            hits: Arc::new(AtomicUsize::new(0)),
        };
        let me = s.clone();
        tokio::spawn(async move {
            loop {
                let Ok((c, _)) = l.accept().await else { return };
                let me = me.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |_req: Request<Incoming>| {
                        me.hits.fetch_add(1, Ordering::SeqCst);
                        let body = me.body.lock().expect("lock").clone();
                        async move {
                            Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                                Bytes::from(body),
                            )))
                        }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    let _ = match tls {
                        Some(a) => match a.accept(c).await {
                            Ok(t) => http.serve_connection(TokioIo::new(t), svc).await,
                            Err(_) => return,
                        },
                        None => http.serve_connection(TokioIo::new(c), svc).await,
                    };
                });
            }
        });
        s
    }

    fn uri(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    fn set_keys(&self, keys: Vec<Value>) {
        *self.body.lock().expect("lock") = json!({ "keys": keys }).to_string();
    }
}

/// A backend that answers `ok` and remembers the last request's headers.
#[derive(Clone)]
struct Backend {
    addr: SocketAddr,
    last: Arc<Mutex<Option<HeaderMap>>>,
}

impl Backend {
    async fn start() -> Backend {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let b = Backend {
            addr: l.local_addr().expect("addr"),
            last: Arc::default(),
        };
        let me = b.clone();
        tokio::spawn(async move {
            loop {
                let Ok((c, _)) = l.accept().await else { return };
                let me = me.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        *me.last.lock().expect("lock") = Some(req.headers().clone());
                        async move {
                            Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                                Bytes::from_static(b"ok"),
                            )))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(c), svc)
                        .await;
                });
            }
        });
        b
    }

    fn last(&self) -> HeaderMap {
        self.last.lock().expect("lock").clone().expect("a request")
    }
}

async fn start_waypoint(yaml: &str, disc: StaticDiscovery) -> SocketAddr {
    let (cfg, issues) = Config::from_yaml(yaml, "test.yaml");
    assert!(issues.is_empty(), "config issues: {issues:?}");
    let wp = Waypoint::new(cfg, Arc::new(disc), Arc::new(TcpConnector));
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(wp.serve(l));
    addr
}

async fn get(
    addr: SocketAddr,
    host: &str,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, String) {
    get_with(addr, host, path, token, &[]).await
}

async fn get_with(
    addr: SocketAddr,
    host: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> (StatusCode, String) {
    let s = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut b = Request::get(path).header("host", host);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = sender
        .send_request(b.body(Full::new(Bytes::new())).expect("request"))
        .await
        .expect("response");
    let status = resp.status();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Swaps the payload of `token` for `claims`, keeping its signature.
fn tamper(token: &str, claims: Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.{}",
        parts[0],
        b64.encode(claims.to_string()),
        parts[2]
    )
}

// ------------------------------------------------------- authn, HTTP --

const PRODUCTPAGE: &str = "productpage.bookinfo.svc.cluster.local";
const ISSUER: &str = "testing@secure.istio.io";

#[tokio::test]
async fn seed_multi_jwt_auth_with_jwks_uri() {
    let jwks = JwksServer::start(vec![rsa_jwk()]).await;
    let backend = Backend::start().await;
    let yaml = seed("12-000-multi-jwt-auth.yaml").replace(
        "https://raw.githubusercontent.com/istio/istio/release-1.19/security/tools/jwt/samples/jwks.json",
        &jwks.uri(),
    );
    assert!(
        yaml.contains(&jwks.uri()),
        "the seed's jwksUri was replaced"
    );
    let disc = StaticDiscovery::new().with(
        PRODUCTPAGE,
        vec![Endpoint::new(backend.addr, &[("app", "productpage")])],
    );
    let wp = start_waypoint(&yaml, disc).await;
    let key = rsa_key();
    let claims = |iss: &str, sub: &str, exp: u64| json!({"iss": iss, "sub": sub, "exp": exp});
    let valid = sign(
        Algorithm::RS256,
        &key,
        RSA_KID,
        claims(ISSUER, ISSUER, now() + 600),
    );

    let (status, body) = get(wp, PRODUCTPAGE, "/productpage", Some(&valid)).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    assert!(
        !backend.last().contains_key("authorization"),
        "the token is not forwarded (forwardOriginalToken defaults to false)"
    );
    // Cached: a second request does not fetch the keys again.
    assert_eq!(
        get(wp, PRODUCTPAGE, "/", Some(&valid)).await.0,
        StatusCode::OK
    );
    assert_eq!(jwks.hits.load(Ordering::SeqCst), 1);

    let cases: Vec<(&str, Option<String>, StatusCode, &str)> = vec![
        (
            "no token: no principal, the ALLOW needs one",
            None,
            StatusCode::FORBIDDEN,
            "RBAC: access denied",
        ),
        (
            "expired",
            Some(sign(
                Algorithm::RS256,
                &key,
                RSA_KID,
                claims(ISSUER, ISSUER, now() - 3600),
            )),
            StatusCode::UNAUTHORIZED,
            "Jwt is expired",
        ),
        (
            "unknown issuer",
            Some(sign(
                Algorithm::RS256,
                &key,
                RSA_KID,
                claims("evil@example.com", ISSUER, now() + 600),
            )),
            StatusCode::UNAUTHORIZED,
            "Jwt issuer is not configured",
        ),
        (
            "forged payload",
            Some(tamper(&valid, claims(ISSUER, "admin", now() + 600))),
            StatusCode::UNAUTHORIZED,
            "Jwt verification fails",
        ),
        (
            "signed by another key under the same kid",
            Some(sign(
                Algorithm::ES256,
                &ec_key(RSA_KID).0,
                RSA_KID,
                claims(ISSUER, ISSUER, now() + 600),
            )),
            StatusCode::UNAUTHORIZED,
            "Jwks doesn't have key to match kid or alg from Jwt",
        ),
        (
            "valid, but another principal",
            Some(sign(
                Algorithm::RS256,
                &key,
                RSA_KID,
                claims(ISSUER, "someone-else", now() + 600),
            )),
            StatusCode::FORBIDDEN,
            "RBAC: access denied",
        ),
        (
            "garbage",
            Some("abc".into()),
            StatusCode::UNAUTHORIZED,
            "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
        ),
    ];
    for (what, token, want_status, want_body) in cases {
        let (status, body) = get(wp, PRODUCTPAGE, "/productpage", token.as_deref()).await;
        assert_eq!((status, body.as_str()), (want_status, want_body), "{what}");
    }
    // The policies select app=productpage only: other services are open.
    let other = Backend::start().await;
    let yaml2 = yaml.clone();
    let disc = StaticDiscovery::new().with(
        "ratings.bookinfo.svc.cluster.local",
        vec![Endpoint::new(other.addr, &[("app", "ratings")])],
    );
    let wp2 = start_waypoint(&yaml2, disc).await;
    assert_eq!(
        get(wp2, "ratings.bookinfo.svc.cluster.local", "/", None)
            .await
            .0,
        StatusCode::OK
    );
}

const HTTPBIN: &str = "httpbin.foo.svc.cluster.local";

#[tokio::test]
async fn inline_es256_jwks_audiences_and_claim_headers() {
    let (key, jwk) = ec_key("ec-1");
    let backend = Backend::start().await;
    let jwks = json!({ "keys": [jwk] }).to_string();
    let yaml = format!(
        r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: jwt, namespace: foo}}
spec:
  jwtRules:
  - issuer: https://issuer.example
    audiences: [httpbin]
    jwks: '{jwks}'
    outputClaimToHeaders:
    - header: x-jwt-group
      claim: group
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: need-jwt, namespace: foo}}
spec:
  rules:
  - from:
    - source:
        requestPrincipals: ["*"]
    when:
    - key: request.auth.claims[group]
      values: ["admins"]
"#
    );
    let disc = StaticDiscovery::new().with(HTTPBIN, vec![Endpoint::new(backend.addr, &[])]);
    let wp = start_waypoint(&yaml, disc).await;
    let tok = |aud: &str, group: &str| {
        sign(
            Algorithm::ES256,
            &key,
            "ec-1",
            json!({"iss": "https://issuer.example", "sub": "alice", "aud": aud, "group": group, "exp": now() + 600}),
        )
    };
    let forged = [("x-jwt-group", "forged")];
    let admins = tok("httpbin", "admins");
    let (status, _) = get_with(wp, HTTPBIN, "/headers", Some(&admins), &forged).await;
    assert_eq!(status, StatusCode::OK);
    let seen = backend.last();
    let groups: Vec<_> = seen.get_all("x-jwt-group").iter().collect();
    assert_eq!(
        groups,
        ["admins"],
        "the upstream sees the token's claim, not the client's header"
    );
    assert_eq!(
        get(wp, HTTPBIN, "/headers", Some(&tok("httpbin", "users"))).await,
        (StatusCode::FORBIDDEN, "RBAC: access denied".to_string())
    );
    assert_eq!(
        get(wp, HTTPBIN, "/headers", Some(&tok("other", "admins"))).await,
        (
            StatusCode::UNAUTHORIZED,
            "Audiences in Jwt are not allowed".to_string()
        )
    );
    assert_eq!(
        get(wp, HTTPBIN, "/headers", None).await,
        (StatusCode::FORBIDDEN, "RBAC: access denied".to_string()),
        "requestPrincipals [*] without a token"
    );
}

#[tokio::test]
async fn jwks_uri_is_fetched_again_for_an_unknown_kid() {
    let (old_key, old_jwk) = ec_key("old");
    let (new_key, new_jwk) = ec_key("new");
    let jwks = JwksServer::start(vec![old_jwk.clone()]).await;
    let backend = Backend::start().await;
    let yaml = format!(
        r#"
apiVersion: security.istio.io/v1beta1
kind: RequestAuthentication
metadata: {{name: jwt, namespace: foo}}
spec:
  jwtRules:
  - issuer: rotating
    jwksUri: {}
    timeout: 2s
"#,
        jwks.uri()
    );
    let disc = StaticDiscovery::new().with(HTTPBIN, vec![Endpoint::new(backend.addr, &[])]);
    let wp = start_waypoint(&yaml, disc).await;
    let claims = json!({"iss": "rotating", "sub": "s"});
    let old = sign(Algorithm::ES256, &old_key, "old", claims.clone());
    let new = sign(Algorithm::ES256, &new_key, "new", claims);
    assert_eq!(get(wp, HTTPBIN, "/", Some(&old)).await.0, StatusCode::OK);
    jwks.set_keys(vec![old_jwk, new_jwk]);
    // Within the refetch floor the cached set is used: the new kid is unknown.
    assert_eq!(
        get(wp, HTTPBIN, "/", Some(&new)).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(jwks.hits.load(Ordering::SeqCst), 1);
    tokio::time::sleep(waypoint::authn::JWKS_MIN_REFETCH + Duration::from_millis(200)).await;
    assert_eq!(get(wp, HTTPBIN, "/", Some(&new)).await.0, StatusCode::OK);
    assert_eq!(jwks.hits.load(Ordering::SeqCst), 2);
}

// -------------------------------------------------------- authz table --

const MYAPP: &str = "myapp.production.svc.cluster.local";

fn identity(ns: &str, sa: &str) -> Option<Identity> {
    Some(Identity {
        trust_domain: "cluster.local".into(),
        namespace: ns.into(),
        service_account: sa.into(),
    })
}

struct Case {
    what: &'static str,
    method: &'static str,
    authority: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    caller: Option<Identity>,
    allowed: bool,
}

fn case(
    what: &'static str,
    method: &'static str,
    path: &'static str,
    caller: Option<Identity>,
    allowed: bool,
) -> Case {
    Case {
        what,
        method,
        authority: MYAPP,
        path,
        headers: &[],
        caller,
        allowed,
    }
}

/// Runs the request path's security hook for each case.
async fn run_table(yaml: &str, cases: &[Case]) {
    let (cfg, issues) = Config::from_yaml(yaml, "table.yaml");
    assert!(issues.is_empty(), "config issues: {issues:?}");
    let disc = StaticDiscovery::new()
        .with(
            MYAPP,
            vec![Endpoint::new(
                "127.0.0.1:1".parse().expect("addr"),
                &[("app", "myapp")],
            )],
        )
        .with(
            "other.production.svc.cluster.local",
            vec![Endpoint::new(
                "127.0.0.1:2".parse().expect("addr"),
                &[("app", "other")],
            )],
        );
    for c in cases {
        let mut b = Request::builder().method(c.method).uri(c.path);
        for (k, v) in c.headers {
            b = b.header(*k, *v);
        }
        let (mut parts, ()) = b.body(()).expect("request").into_parts();
        let (host, port) = waypoint::routes::split_host_port(c.authority);
        let peer = Peer {
            addr: "10.1.2.3:40000".parse().expect("addr"),
            labels: Default::default(),
            identity: c.caller.clone(),
            source: waypoint::telemetry::SourceInfo::new(None, &Default::default(), false),
        };
        // The request path's security stages, in their order.
        let checked = match authn::authenticate(&cfg, &disc, &mut parts, host, port).await {
            Ok(a) => authz::authorize(&cfg, &a, &parts, host, port, &peer),
            Err(r) => Err(r),
        };
        let got = match checked {
            Ok(_) => true,
            Err(r) => {
                assert_eq!(r.status(), StatusCode::FORBIDDEN, "{}", c.what);
                false
            }
        };
        assert_eq!(got, c.allowed, "{}", c.what);
    }
}

#[tokio::test]
async fn seed_myapp_authz_table() {
    let frontend = || identity("production", "frontend");
    let gateway = || identity("production", "api-gateway");
    let cases = [
        case("frontend GET /api/*", "GET", "/api/users", frontend(), true),
        case(
            "api-gateway POST /api/*",
            "POST",
            "/api/orders/1",
            gateway(),
            true,
        ),
        case(
            "frontend DELETE: method not listed",
            "DELETE",
            "/api/users",
            frontend(),
            false,
        ),
        case(
            "frontend GET outside /api/",
            "GET",
            "/admin",
            frontend(),
            false,
        ),
        case(
            "/api without the slash is not /api/*",
            "GET",
            "/api",
            frontend(),
            false,
        ),
        case(
            "another service account",
            "GET",
            "/api/users",
            identity("production", "batch"),
            false,
        ),
        case(
            "same sa name, other namespace",
            "GET",
            "/api/users",
            identity("staging", "frontend"),
            false,
        ),
        case("plaintext GET /health", "GET", "/health", None, true),
        case(
            "anyone GET /ready",
            "GET",
            "/ready",
            identity("other", "x"),
            true,
        ),
        case("POST /health: only GET", "POST", "/health", None, false),
        case("GET /healthz: exact path", "GET", "/healthz", None, false),
        case(
            "plaintext to /api/: implicit deny",
            "GET",
            "/api/users",
            None,
            false,
        ),
        Case {
            authority: "other.production.svc.cluster.local",
            ..case(
                "selector does not select app=other",
                "DELETE",
                "/x",
                None,
                true,
            )
        },
        Case {
            authority: "myapp.staging.svc.cluster.local",
            ..case("another namespace's myapp", "DELETE", "/x", None, true)
        },
    ];
    run_table(&seed("46-003-authorizationpolicy-myapp-authz.yaml"), &cases).await;
}

#[tokio::test]
async fn hand_written_authz_table() {
    let yaml = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-all, namespace: production}
spec:
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: production}
spec:
  action: DENY
  rules:
  - to:
    - operation: {paths: ["/admin*"]}
  - to:
    - operation: {notMethods: [GET, POST], paths: ["/api/*"]}
  - to:
    - operation: {hosts: ["db.*"]}
  - to:
    - operation: {hosts: ["MYAPP.Production.svc.cluster.local"], paths: ["/by-host"]}
  - when:
    - key: request.headers[x-debug]
      values: ["on"]
  - from:
    - source: {notNamespaces: [production, istio-system], principals: ["*"]}
    to:
    - operation: {paths: ["*.secret"]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit-everything, namespace: istio-system}
spec:
  action: AUDIT
  rules: [{}]
"#;
    let me = || identity("production", "me");
    let cases = [
        case("allowed by the rule {}", "GET", "/", None, true),
        case(
            "DENY paths prefix beats ALLOW",
            "GET",
            "/admin/users",
            None,
            false,
        ),
        case(
            "DENY notMethods: DELETE on /api/",
            "DELETE",
            "/api/x",
            None,
            false,
        ),
        case(
            "DENY notMethods: GET on /api/ passes",
            "GET",
            "/api/x",
            None,
            true,
        ),
        case(
            "DENY notMethods: DELETE elsewhere passes",
            "DELETE",
            "/x",
            None,
            true,
        ),
        Case {
            authority: "MyApp.production.svc.cluster.local:8080",
            ..case("no host rule matches myapp", "GET", "/", None, true)
        },
        Case {
            authority: "myapp.production.svc.cluster.local:8080",
            ..case(
                "DENY hosts: case- and port-insensitive",
                "GET",
                "/by-host",
                None,
                false,
            )
        },
        Case {
            authority: "db.production.svc.cluster.local:5432",
            ..case("DENY hosts prefix, port ignored", "GET", "/", None, false)
        },
        Case {
            headers: &[("x-debug", "on")],
            ..case("DENY header condition", "GET", "/", None, false)
        },
        Case {
            headers: &[("x-debug", "off")],
            ..case("header condition not met", "GET", "/", None, true)
        },
        case(
            "*.secret from another namespace",
            "GET",
            "/keys.secret",
            identity("dev", "x"),
            false,
        ),
        case(
            "*.secret from production (notNamespaces)",
            "GET",
            "/keys.secret",
            me(),
            true,
        ),
        case(
            "*.secret in plaintext: principals [*] needs mTLS",
            "GET",
            "/keys.secret",
            None,
            true,
        ),
    ];
    run_table(yaml, &cases).await;

    // No ALLOW matches: implicit deny; ports; a targetRef to the service.
    let yaml = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: only-9080, namespace: production}
spec:
  targetRefs:
  - kind: Service
    name: myapp
  rules:
  - to:
    - operation: {ports: ["9080"]}
  - when:
    - key: source.principal
      values: ["cluster.local/ns/production/sa/*"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-all-other, namespace: production}
spec:
  targetRef: {kind: Service, name: other}
"#;
    let cases = [
        Case {
            authority: "myapp.production.svc.cluster.local:9080",
            ..case("port 9080 allowed", "GET", "/", None, true)
        },
        Case {
            authority: "myapp.production.svc.cluster.local:8080",
            ..case("port 8080: implicit deny", "GET", "/", None, false)
        },
        Case {
            authority: "myapp.production.svc.cluster.local:8080",
            ..case(
                "source.principal wildcard",
                "GET",
                "/",
                identity("production", "me"),
                true,
            )
        },
        Case {
            authority: "other.production.svc.cluster.local",
            ..case(
                "spec {} targeted at the service denies all",
                "GET",
                "/",
                None,
                false,
            )
        },
        Case {
            authority: "third.production.svc.cluster.local",
            ..case("an untargeted service is open", "GET", "/", None, true)
        },
    ];
    run_table(yaml, &cases).await;
}

#[tokio::test]
async fn denials_over_http_come_before_routing() {
    // A DENY over the wire, and the 403 comes before a 404 of routing (as
    // Envoy's RBAC filter runs before the router).
    let backend = Backend::start().await;
    let yaml = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-post, namespace: production}
spec:
  action: DENY
  rules:
  - to:
    - operation: {paths: ["/private/*"]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: myapp, namespace: production}
spec:
  hosts: [myapp.production.svc.cluster.local]
  http:
  - match:
    - uri: {prefix: /}
    route:
    - destination: {host: myapp.production.svc.cluster.local}
"#;
    let disc = StaticDiscovery::new().with(MYAPP, vec![Endpoint::new(backend.addr, &[])]);
    let wp = start_waypoint(yaml, disc).await;
    assert_eq!(
        get(wp, MYAPP, "/public", None).await,
        (StatusCode::OK, "ok".into())
    );
    assert_eq!(
        get(wp, MYAPP, "/private/x", None).await,
        (StatusCode::FORBIDDEN, "RBAC: access denied".into())
    );
}

#[tokio::test]
async fn jwks_uri_over_https() {
    let (key, jwk) = ec_key("tls-1");
    let (jwks, tls) = JwksServer::start_tls(vec![jwk]).await;
    let backend = Backend::start().await;
    let uri = format!("https://{}/keys", jwks.addr);
    let yaml = format!(
        r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: jwt, namespace: foo}}
spec:
  jwtRules:
  - issuer: tls-issuer
    jwksUri: {uri}
"#
    );
    let token = sign(
        Algorithm::ES256,
        &key,
        "tls-1",
        json!({"iss": "tls-issuer", "sub": "s"}),
    );
    let disc = || StaticDiscovery::new().with(HTTPBIN, vec![Endpoint::new(backend.addr, &[])]);
    let serve = |cfg: Config, disc: StaticDiscovery| async move {
        let wp = Waypoint::new(cfg, Arc::new(disc), Arc::new(TcpConnector));
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(wp.serve(l));
        addr
    };
    // Trusting the server's certificate: the keys are fetched.
    let (cfg, issues) = Config::from_yaml(&yaml, "tls.yaml");
    assert!(issues.is_empty(), "{issues:?}");
    cfg.authn.use_tls(tls);
    let wp = serve(cfg, disc()).await;
    assert_eq!(get(wp, HTTPBIN, "/", Some(&token)).await.0, StatusCode::OK);
    assert_eq!(jwks.hits.load(Ordering::SeqCst), 1);
    // With the system's roots the self-signed server is not trusted.
    let (cfg, _) = Config::from_yaml(&yaml, "tls.yaml");
    let wp = serve(cfg, disc()).await;
    assert_eq!(
        get(wp, HTTPBIN, "/", Some(&token)).await,
        (
            StatusCode::UNAUTHORIZED,
            "Jwks remote fetch is failed".to_string()
        )
    );
}
