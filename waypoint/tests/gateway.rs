//! The gateway role end to end on 127.0.0.1: real Gateway/VirtualService
//! seeds, real hyper backends and clients, real TLS (a test CA and server
//! certificates generated with rcgen into a credentials folder laid out as
//! `<dir>/<credentialName>/tls.crt|tls.key`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use waypoint::discovery::Labels;
use waypoint::engine::Options;
use waypoint::gateway::{GatewayConfig, GatewayWorkload, ListenerProtocol, ListenerService};
use waypoint::limits::Limits;
use waypoint::{Config, Endpoint, StaticDiscovery, TcpConnector, Waypoint};

/// The seed config `name` from the repository's fixtures
/// (`tests/fixtures/istio`).
fn seed(name: &str) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/istio");
    std::fs::read_to_string(dir.join(name)).expect("seed config")
}

fn seeds(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| seed(n))
        .collect::<Vec<_>>()
        .join("\n---\n")
}

fn ingress_labels() -> Labels {
    [("istio".to_string(), "ingressgateway".to_string())]
        .into_iter()
        .collect()
}

/// The ingress gateway workload as Istio installs it.
fn ingress() -> GatewayWorkload {
    GatewayWorkload::new("istio-system", ingress_labels())
}

// ---------------------------------------------------------- certificates --

/// A test CA and the server certificates it signed, written as TLS Secrets.
struct Credentials {
    dir: tempfile::TempDir,
    ca: CertificateDer<'static>,
    /// credentialName -> leaf certificate (DER)
    leaves: HashMap<String, CertificateDer<'static>>,
}

impl Credentials {
    fn new(secrets: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_key = rcgen::KeyPair::generate().expect("ca key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "gateway test CA");
        let ca = ca_params.self_signed(&ca_key).expect("ca");
        let mut leaves = HashMap::new();
        for (secret, host) in secrets {
            let key = rcgen::KeyPair::generate().expect("key");
            let params = rcgen::CertificateParams::new(vec![host.to_string()]).expect("params");
            let leaf = params.signed_by(&key, &ca, &ca_key).expect("leaf");
            let d = dir.path().join(secret);
            std::fs::create_dir_all(&d).expect("mkdir");
            std::fs::write(d.join("tls.crt"), leaf.pem()).expect("write crt");
            std::fs::write(d.join("tls.key"), key.serialize_pem()).expect("write key");
            leaves.insert(secret.to_string(), leaf.der().clone());
        }
        Credentials {
            dir,
            ca: ca.der().clone(),
            leaves,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A client trusting exactly the test CA, offering `alpn`.
    fn client(&self, alpn: &[&[u8]]) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone()).expect("root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsConnector::from(Arc::new(cfg))
    }
}

// -------------------------------------------------------------- backend --

/// Answers with its name; remembers the last path and headers.
#[derive(Clone)]
struct Backend {
    name: &'static str,
    addr: SocketAddr,
    last: Arc<Mutex<Option<(String, HeaderMap)>>>,
}

impl Backend {
    async fn start(name: &'static str) -> Backend {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let b = Backend {
            name,
            addr: l.local_addr().expect("addr"),
            last: Arc::new(Mutex::new(None)),
        };
        let me = b.clone();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                let me = me.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let me = me.clone();
                        async move {
                            *me.last.lock().expect("lock") = Some((
                                req.uri()
                                    .path_and_query()
                                    .map(|p| p.to_string())
                                    .unwrap_or_default(),
                                req.headers().clone(),
                            ));
                            Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                                Bytes::from(me.name),
                            )))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        b
    }

    fn last(&self) -> Option<(String, HeaderMap)> {
        self.last.lock().expect("lock").clone()
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint::new(self.addr, &[])
    }
}

// -------------------------------------------------------------- gateway --

/// Compiles `yaml` for the ingress gateway workload (no issues allowed)
/// and serves each listener on an ephemeral loopback port: Gateway port ->
/// bound address.
async fn start_gateway(
    yaml: &str,
    disc: StaticDiscovery,
    creds: &Path,
) -> HashMap<u16, SocketAddr> {
    start_gateway_with(yaml, disc, creds, None).await
}

/// As [`start_gateway`], with a TLS handshake timeout other than the default.
async fn start_gateway_with(
    yaml: &str,
    disc: StaticDiscovery,
    creds: &Path,
    tls_handshake_timeout: Option<Duration>,
) -> HashMap<u16, SocketAddr> {
    let (gw, issues) = GatewayConfig::from_yaml(yaml, "test.yaml", &ingress(), creds);
    assert!(issues.is_empty(), "gateway issues: {issues:?}");
    let disc = Arc::new(disc);
    let (_tx, rx) = tokio::sync::watch::channel(false);
    // The sender lives as long as the test's runtime.
    std::mem::forget(_tx);
    let mut ports = HashMap::new();
    for l in gw.listeners {
        let port = l.port;
        let mut svc =
            ListenerService::new(l, disc.clone(), Arc::new(TcpConnector)).expect("TLS config");
        if let Some(t) = tls_handshake_timeout {
            svc = svc.with_tls_handshake_timeout(t);
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        ports.insert(port, listener.local_addr().expect("addr"));
        tokio::spawn(svc.serve(listener, rx.clone()));
    }
    ports
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

async fn send<B>(mut sender: B, host: &str, path: &str) -> Reply
where
    B: Sender,
{
    let req = Request::builder()
        .uri(path)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = sender.send(req).await;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// HTTP/1.1 and HTTP/2 senders behind one call.
trait Sender {
    async fn send(&mut self, req: Request<Full<Bytes>>) -> Response<Incoming>;
}

impl Sender for http1::SendRequest<Full<Bytes>> {
    async fn send(&mut self, req: Request<Full<Bytes>>) -> Response<Incoming> {
        self.send_request(req).await.expect("response")
    }
}

impl Sender for http2::SendRequest<Full<Bytes>> {
    async fn send(&mut self, req: Request<Full<Bytes>>) -> Response<Incoming> {
        self.send_request(req).await.expect("response")
    }
}

async fn http_get(addr: SocketAddr, host: &str, path: &str) -> Reply {
    let s = TcpStream::connect(addr).await.expect("connect");
    let (sender, conn) = http1::handshake(TokioIo::new(s)).await.expect("handshake");
    tokio::spawn(conn);
    send(sender, host, path).await
}

async fn tls_connect(
    creds: &Credentials,
    addr: SocketAddr,
    sni: &str,
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<TcpStream>> {
    let s = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_string()).expect("server name");
    creds.client(alpn).connect(name, s).await
}

fn presented(tls: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("a server certificate")
        .clone()
        .into_owned()
}

async fn https_get_h1(tls: TlsStream<TcpStream>, host: &str, path: &str) -> Reply {
    let (sender, conn) = http1::handshake(TokioIo::new(tls))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    send(sender, host, path).await
}

// ---------------------------------------------------------------- tests --

/// The subsets seed 41 routes to.
const MYAPP_SUBSETS: &str = r#"
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: myapp, namespace: production}
spec:
  host: myapp
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"#;

/// Seeds 39+40 (my-gateway, example.com) plus 43+41 (myapp-gateway, a
/// second certificate on 443) with `myapp` (v1) behind the gateway.
async fn example_com() -> (Credentials, HashMap<u16, SocketAddr>, Backend) {
    example_com_with(None).await
}

/// As [`example_com`], with a TLS handshake timeout other than the default.
async fn example_com_with(
    tls_handshake_timeout: Option<Duration>,
) -> (Credentials, HashMap<u16, SocketAddr>, Backend) {
    let creds = Credentials::new(&[
        ("tls-secret", "example.com"),
        ("myapp-tls-secret", "myapp.example.com"),
    ]);
    let myapp = Backend::start("myapp").await;
    let v1 = Endpoint::new(myapp.addr, &[("version", "v1")]);
    let disc = StaticDiscovery::new().with("myapp", vec![v1]);
    let yaml = seeds(&[
        "39-002-gateway-my-gateway.yaml",
        "40-002-virtualservice-gateway-vs.yaml",
        "43-003-gateway-myapp-gateway.yaml",
        "41-003-virtualservice-myapp.yaml",
    ]) + MYAPP_SUBSETS;
    let ports = start_gateway_with(&yaml, disc, creds.path(), tls_handshake_timeout).await;
    (creds, ports, myapp)
}

/// A client that opens TCP and starts, but never finishes, a TLS handshake
/// is cut at the handshake timeout; a well-behaved client is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_tls_handshake_is_cut_at_the_timeout() {
    let timeout = Duration::from_millis(300);
    let (creds, ports, _myapp) = example_com_with(Some(timeout)).await;

    let mut stalled = TcpStream::connect(ports[&443]).await.expect("connect");
    // The header of a handshake record promising 255 bytes, then nothing.
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x00, 0xff])
        .await
        .expect("write a partial record");
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), stalled.read(&mut buf)).await;
    let waited = started.elapsed();
    match read {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!("the gateway answered a partial record with {n} bytes"),
        Err(_) => panic!("a stalled TLS handshake was still open after 5 s"),
    }
    assert!(
        waited >= timeout - Duration::from_millis(50) && waited < Duration::from_secs(3),
        "cut after {waited:?}, the timeout is {timeout:?}"
    );

    let tls = tls_connect(&creds, ports[&443], "example.com", &[b"http/1.1"])
        .await
        .expect("a well-behaved client completes its handshake");
    let r = https_get_h1(tls, "example.com", "/hello").await;
    assert_eq!(r.status, StatusCode::OK, "body: {}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_is_redirected_to_https_same_host_and_path() {
    let (_creds, ports, myapp) = example_com().await;
    let r = http_get(ports[&80], "example.com", "/a/b?c=1").await;
    assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        r.headers.get("location").and_then(|v| v.to_str().ok()),
        Some("https://example.com/a/b?c=1")
    );
    let r = http_get(ports[&80], "myapp.example.com", "/x").await;
    assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        r.headers.get("location").and_then(|v| v.to_str().ok()),
        Some("https://myapp.example.com/x")
    );
    assert!(myapp.last().is_none(), "a redirect never reaches a backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_presents_the_sni_certificate_and_reaches_the_backend() {
    let (creds, ports, myapp) = example_com().await;
    let tls = tls_connect(&creds, ports[&443], "example.com", &[b"http/1.1"])
        .await
        .expect("TLS to example.com");
    assert_eq!(presented(&tls), creds.leaves["tls-secret"]);
    let r = https_get_h1(tls, "example.com", "/hello?q=1").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body, "myapp");
    let (path, headers) = myapp.last().expect("the backend was reached");
    assert_eq!(path, "/hello?q=1");
    assert_eq!(
        headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok()),
        Some("https")
    );
    assert_eq!(
        headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()),
        Some("127.0.0.1")
    );

    // The other server on the port: its own certificate.
    let tls = tls_connect(&creds, ports[&443], "myapp.example.com", &[b"http/1.1"])
        .await
        .expect("TLS to myapp.example.com");
    assert_eq!(presented(&tls), creds.leaves["myapp-tls-secret"]);
    // Seed 41 bound to myapp-gateway: the v1 subset.
    let r = https_get_h1(tls, "myapp.example.com", "/v1-path").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(myapp.last().expect("reached").0, "/v1-path");

    // An SNI no server names: no certificate, no handshake.
    assert!(
        tls_connect(&creds, ports[&443], "other.example.org", &[b"http/1.1"])
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_negotiates_h2() {
    let (creds, ports, myapp) = example_com().await;
    let tls = tls_connect(&creds, ports[&443], "example.com", &[b"h2", b"http/1.1"])
        .await
        .expect("TLS");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    let req = Request::builder()
        .uri("https://example.com/over-h2")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let mut sender = sender;
    let resp = sender.send(req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(myapp.last().expect("reached").0, "/over-h2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_outside_the_gateway_are_404() {
    let (creds, ports, myapp) = example_com().await;
    let r = http_get(ports[&80], "other.com", "/").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // TLS for example.com, then a Host no server allows.
    let tls = tls_connect(&creds, ports[&443], "example.com", &[b"http/1.1"])
        .await
        .expect("TLS");
    let r = https_get_h1(tls, "other.com", "/").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // A host of another server on the port, inside a connection made for
    // example.com.
    let tls = tls_connect(&creds, ports[&443], "example.com", &[b"http/1.1"])
        .await
        .expect("TLS");
    let r = https_get_h1(tls, "myapp.example.com", "/").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(myapp.last().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookinfo_gateway_routes_the_productpage_paths_only() {
    let productpage = Backend::start("productpage").await;
    let disc = StaticDiscovery::new().with("productpage", vec![productpage.endpoint()]);
    let yaml = seeds(&[
        "04-000-gateway-bookinfo-gateway.yaml",
        "05-000-virtualservice-bookinfo.yaml",
    ]);
    let creds = Credentials::new(&[]);
    let ports = start_gateway(&yaml, disc, creds.path()).await;
    assert_eq!(ports.len(), 1, "one listener: port 80");
    for path in [
        "/productpage",
        "/static/x",
        "/login",
        "/logout",
        "/api/v1/products/1",
    ] {
        let r = http_get(ports[&80], "bookinfo.example", path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
        assert_eq!(r.body, "productpage", "{path}");
        assert_eq!(productpage.last().expect("reached").0, path);
    }
    for path in ["/other", "/productpage/x", "/"] {
        let r = http_get(ports[&80], "bookinfo.example", path).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
    }
}

const MESH_ONLY: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: all, namespace: web}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: web}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: both, namespace: web}
spec:
  hosts: [shop.example.com]
  gateways: [mesh, web/all]
  http:
  - match:
    - uri: {prefix: /a}
      gateways: [mesh]
    route:
    - destination: {host: mesh-only}
  - route:
    - destination: {host: shop}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_virtual_services_and_matches_stay_off_the_gateway() {
    let reviews = Backend::start("reviews").await;
    let shop = Backend::start("shop").await;
    let mesh_only = Backend::start("mesh-only").await;
    let disc = || {
        StaticDiscovery::new()
            .with("reviews", vec![reviews.endpoint()])
            .with("shop", vec![shop.endpoint()])
            .with("mesh-only", vec![mesh_only.endpoint()])
    };
    let creds = Credentials::new(&[]);
    let ports = start_gateway(MESH_ONLY, disc(), creds.path()).await;
    // No `gateways`: a mesh VirtualService, not served by the gateway.
    let r = http_get(ports[&80], "reviews", "/").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(reviews.last().is_none());
    // Bound to both; the `/a` match is the mesh's only.
    let r = http_get(ports[&80], "shop.example.com", "/a").await;
    assert_eq!(r.body, "shop");
    assert!(mesh_only.last().is_none());

    // The same resources in the mesh: unchanged behaviour.
    let (cfg, issues) = Config::from_yaml(MESH_ONLY, "test.yaml");
    assert!(issues.is_empty(), "{issues:?}");
    let wp = Waypoint::new(cfg, Arc::new(disc()), Arc::new(TcpConnector));
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(wp.serve(l));
    assert_eq!(http_get(addr, "reviews", "/").await.body, "reviews");
    assert_eq!(
        http_get(addr, "shop.example.com", "/a").await.body,
        "mesh-only"
    );
}

#[test]
fn virtual_service_hosts_meet_server_hosts() {
    let creds = Credentials::new(&[("myapp-tls-secret", "myapp.example.com")]);
    // Seed 41: gateways [mesh, myapp-gateway], hosts [myapp, myapp.example.com].
    let yaml = seeds(&[
        "43-003-gateway-myapp-gateway.yaml",
        "41-003-virtualservice-myapp.yaml",
    ]);
    let (gw, issues) = GatewayConfig::from_yaml(&yaml, "t", &ingress(), creds.path());
    assert!(issues.is_empty(), "{issues:?}");
    let ports: Vec<(u16, ListenerProtocol)> =
        gw.listeners.iter().map(|l| (l.port, l.protocol)).collect();
    assert_eq!(
        ports,
        [(80, ListenerProtocol::Http), (443, ListenerProtocol::Https)]
    );
    let https = &gw.listeners[1];
    let hosts: Vec<&str> = https
        .config
        .routes
        .hosts
        .iter()
        .map(|h| h.host.as_str())
        .collect();
    assert_eq!(hosts, ["myapp.example.com"]);
    assert_eq!(https.config.routes.hosts[0].routes.len(), 3);

    // A workload the selector does not pick gets nothing.
    let other: Labels = [("istio".to_string(), "egressgateway".to_string())]
        .into_iter()
        .collect();
    let (gw, _) = GatewayConfig::from_yaml(
        &yaml,
        "t",
        &GatewayWorkload::new("istio-system", other),
        creds.path(),
    );
    assert!(gw.listeners.is_empty());
}

const NAMESPACES: &str = r#"
apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata: {name: gw, namespace: edge}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["./own.example.com", "team/team.example.com", "*/any.example.com", "*/short.example.com"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: own, namespace: edge}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - route: [{destination: {host: own}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: team, namespace: team}
spec:
  hosts: ["*.example.com"]
  gateways: [edge/gw]
  http:
  - route: [{destination: {host: team}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: short-form-elsewhere, namespace: team}
spec:
  hosts: ["short.example.com"]
  gateways: [gw]
  http:
  - route: [{destination: {host: nope}}]
"#;

#[test]
fn server_host_namespaces_restrict_the_bound_virtual_services() {
    let creds = Credentials::new(&[]);
    let (gw, issues) = GatewayConfig::from_yaml(NAMESPACES, "t", &ingress(), creds.path());
    assert!(issues.is_empty(), "{issues:?}");
    let table = &gw.listeners[0].config.routes;
    let dest = |host: &str| -> Vec<String> {
        table
            .host_routes(host)
            .map(|h| {
                h.routes
                    .iter()
                    .map(|r| format!("{:?}", r.action))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    let own = dest("own.example.com");
    assert_eq!(own.len(), 1);
    assert!(own[0].contains("\"own\""), "{own:?}");
    let team = dest("team.example.com");
    assert_eq!(team.len(), 1);
    assert!(team[0].contains("\"team\""), "{team:?}");
    // Both namespaces may bind `*/any.example.com`, in document order.
    assert_eq!(dest("any.example.com").len(), 2);
    // `gw` written in namespace team names team/gw, not edge/gw: only the
    // own and team VirtualServices (`*`, `*.example.com`) apply there.
    let short = dest("short.example.com");
    assert_eq!(short.len(), 2, "{short:?}");
    assert!(short.iter().all(|r| !r.contains("\"nope\"")), "{short:?}");
}

const UNSUPPORTED: &str = r#"
apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata: {name: odd, namespace: edge}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [a.example.com]
    tls: {mode: MUTUAL, credentialName: a}
  - port: {number: 444, name: tls, protocol: TLS}
    hosts: [b.example.com]
    tls: {mode: PASSTHROUGH}
  - port: {number: 445, name: https, protocol: HTTPS}
    hosts: [c.example.com]
    tls: {mode: ISTIO_MUTUAL}
  - port: {number: 446, name: https, protocol: HTTPS}
    hosts: [d.example.com]
    tls: {mode: SIMPLE, credentialName: missing}
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [e.example.com]
"#;

#[test]
fn unsupported_servers_are_issues_naming_the_field() {
    let creds = Credentials::new(&[]);
    let (gw, issues) = GatewayConfig::from_yaml(UNSUPPORTED, "t", &ingress(), creds.path());
    let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "spec.servers[0].tls.mode",
            "spec.servers[1].port.protocol",
            "spec.servers[2].tls.mode",
            "spec.servers[3].tls.credentialName",
        ],
        "{issues:?}"
    );
    assert!(issues[0].message.contains("MUTUAL"), "{}", issues[0]);
    assert!(issues[3].message.contains("tls.crt"), "{}", issues[3]);
    assert!(issues.iter().all(|i| i.resource.contains("edge/odd")));
    // The supported server is still served.
    let ports: Vec<u16> = gw.listeners.iter().map(|l| l.port).collect();
    assert_eq!(ports, [80]);
}

// ------------------------------------------- policies at the gateway --

/// Policies around seeds 04+05: those selecting the gateway workload
/// (`istio: ingressgateway` in `istio-system`) apply at the gateway; the
/// destination-scoped ones (bookinfo's namespace-wide, `app: productpage`,
/// another gateway's) are the destination waypoint's and do not.
const GATEWAY_POLICIES: &str = r#"
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin*"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-all, namespace: bookinfo}
spec:
  action: DENY
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-productpage, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: productpage}}
  action: DENY
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-egress, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: egressgateway}}
  action: DENY
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt-at-the-edge, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  jwtRules:
  - issuer: edge-issuer
    jwks: '{"keys": []}'
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: edge-rate-limit, namespace: istio-system}
spec:
  workloadSelector: {labels: {istio: ingressgateway}}
  configPatches:
  - applyTo: HTTP_FILTER
    match:
      context: GATEWAY
      listener:
        filterChain:
          filter:
            name: envoy.filters.network.http_connection_manager
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.local_ratelimit
        typed_config:
          "@type": type.googleapis.com/udpa.type.v1.TypedStruct
          type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
          value:
            stat_prefix: edge
            token_bucket: {max_tokens: 4, tokens_per_fill: 4, fill_interval: 60s}
            filter_enabled:
              runtime_key: e
              default_value: {numerator: 100, denominator: HUNDRED}
            filter_enforced:
              runtime_key: f
              default_value: {numerator: 100, denominator: HUNDRED}
"#;

#[test]
fn only_policies_selecting_the_gateway_workload_are_compiled_for_it() {
    let creds = Credentials::new(&[]);
    // Seed 29 is a SIDECAR_INBOUND limit of namespace `default`; the
    // inline one selects the gateway but is for the sidecar context.
    let yaml = seeds(&[
        "04-000-gateway-bookinfo-gateway.yaml",
        "05-000-virtualservice-bookinfo.yaml",
        "29-001-envoyfilter-rate-limit-filter.yaml",
    ]) + GATEWAY_POLICIES
        + "---\n"
        + &GATEWAY_POLICIES
            .split("---\n")
            .find(|d| d.contains("kind: EnvoyFilter"))
            .expect("the gateway's filter")
            .replace("name: edge-rate-limit", "name: sidecar-only")
            .replace("context: GATEWAY", "context: SIDECAR_INBOUND")
            .replace("stat_prefix: edge", "stat_prefix: sidecar");
    let (gw, issues) = GatewayConfig::from_yaml(&yaml, "t", &ingress(), creds.path());
    assert!(issues.is_empty(), "{issues:?}");
    let cfg = &gw.listeners[0].config;
    let authz: Vec<&str> = cfg
        .authz
        .policies
        .iter()
        .map(|p| p.resource.as_str())
        .collect();
    assert_eq!(authz, ["AuthorizationPolicy istio-system/deny-admin"]);
    let authn: Vec<&str> = cfg
        .authn
        .policies
        .iter()
        .map(|p| p.resource.as_str())
        .collect();
    assert_eq!(
        authn,
        ["RequestAuthentication istio-system/jwt-at-the-edge"]
    );
    let limits: Vec<&str> = cfg
        .ratelimits
        .filters
        .iter()
        .map(|f| f.stat_prefix.as_str())
        .collect();
    assert_eq!(limits, ["edge"]);

    // The same gateway in another namespace: istio-system's policies are
    // the root namespace's and still select it by its labels.
    let (gw, _) = GatewayConfig::from_yaml(
        &yaml,
        "t",
        &GatewayWorkload::new("edge", ingress_labels()),
        creds.path(),
    );
    assert_eq!(gw.listeners[0].config.authz.policies.len(), 1);
    // A gateway in bookinfo: bookinfo's namespace-wide DENY is its own.
    let (gw, _) = GatewayConfig::from_yaml(
        &yaml,
        "t",
        &GatewayWorkload::new("bookinfo", ingress_labels()),
        creds.path(),
    );
    let authz: Vec<&str> = gw.listeners[0]
        .config
        .authz
        .policies
        .iter()
        .map(|p| p.resource.as_str())
        .collect();
    assert_eq!(
        authz,
        [
            "AuthorizationPolicy istio-system/deny-admin",
            "AuthorizationPolicy bookinfo/deny-all"
        ]
    );
}

#[test]
fn gateway_workload_selection() {
    let w = ingress();
    let sel = |pairs: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert!(w.selected_by("istio-system", None, false));
    assert!(w.selected_by(
        "istio-system",
        Some(&sel(&[("istio", "ingressgateway")])),
        false
    ));
    assert!(!w.selected_by(
        "istio-system",
        Some(&sel(&[("istio", "egressgateway")])),
        false
    ));
    assert!(
        !w.selected_by("istio-system", None, true),
        "targetRefs name others"
    );
    assert!(!w.selected_by("bookinfo", None, false));
    assert!(!w.selected_by(
        "bookinfo",
        Some(&sel(&[("istio", "ingressgateway")])),
        false
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_policies_are_enforced_at_the_gateway() {
    let productpage = Backend::start("productpage").await;
    let disc = StaticDiscovery::new().with("productpage", vec![productpage.endpoint()]);
    let yaml = seeds(&[
        "04-000-gateway-bookinfo-gateway.yaml",
        "05-000-virtualservice-bookinfo.yaml",
    ]) + GATEWAY_POLICIES;
    let creds = Credentials::new(&[]);
    let ports = start_gateway(&yaml, disc, creds.path()).await;
    let addr = ports[&80];
    // bookinfo's DENY policies are not the gateway's: the page is served.
    let r = http_get(addr, "bookinfo.example", "/productpage").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body, "productpage");
    // The gateway's DENY on /admin*: 403 before routing (no route would
    // match /admin either; 403, not 404, shows the policy ran).
    let r = http_get(addr, "bookinfo.example", "/admin/x").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    // The gateway's RequestAuthentication: a token it cannot verify is 401.
    let s = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = http1::handshake(TokioIo::new(s)).await.expect("handshake");
    tokio::spawn(conn);
    let req = Request::builder()
        .uri("/productpage")
        .header("host", "bookinfo.example")
        .header("authorization", "Bearer not.a.jwt")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = Sender::send(&mut sender, req).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // The gateway's rate limit: 4 tokens a minute, 3 used above (the 401
    // came before routing, so it took none; the 403 too).
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            http_get(addr, "bookinfo.example", "/productpage")
                .await
                .status,
        );
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
}

// --------------------------------------------------- shared engine --

/// Sums the samples of `name` whose label set contains every `labels` pair.
fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn admin_get(addr: SocketAddr, path: &str) -> Reply {
    http_get(addr, "admin", path).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_share_one_engine_and_one_admin_server() {
    let creds = Credentials::new(&[("tls-secret", "example.com")]);
    let myapp = Backend::start("myapp").await;
    let productpage = Backend::start("productpage").await;
    let disc = Arc::new(
        StaticDiscovery::new()
            .with("myapp", vec![myapp.endpoint()])
            .with("productpage", vec![productpage.endpoint()]),
    );
    // Port 80: bookinfo's `*` and example.com's redirect; 443: example.com.
    let yaml = seeds(&[
        "04-000-gateway-bookinfo-gateway.yaml",
        "05-000-virtualservice-bookinfo.yaml",
        "39-002-gateway-my-gateway.yaml",
        "40-002-virtualservice-gateway-vs.yaml",
    ]);
    let (cfg, issues) = GatewayConfig::from_yaml(&yaml, "t", &ingress(), creds.path());
    assert!(issues.is_empty(), "{issues:?}");
    let gw = cfg
        .into_gateway(disc, Arc::new(TcpConnector))
        .expect("TLS config");
    assert_eq!(gw.listeners.len(), 2);
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let mut ports = HashMap::new();
    for l in &gw.listeners {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        ports.insert(l.port, listener.local_addr().expect("addr"));
        tokio::spawn(l.clone().serve(listener, rx.clone()));
    }
    let (admin, _thread) =
        waypoint::admin::spawn("127.0.0.1:0".parse().expect("addr"), gw.waypoint.clone())
            .expect("admin");

    let r = http_get(ports[&80], "bookinfo.example", "/productpage").await;
    assert_eq!(r.body, "productpage");
    let tls = tls_connect(&creds, ports[&443], "example.com", &[b"http/1.1"])
        .await
        .expect("TLS");
    let r = https_get_h1(tls, "example.com", "/").await;
    assert_eq!(r.body, "myapp");

    assert_eq!(
        admin_get(admin, "/healthz/ready").await.status,
        StatusCode::OK
    );
    let m = admin_get(admin, "/metrics").await;
    assert_eq!(m.status, StatusCode::OK);
    // Both ports' requests on the one registry.
    let ok = metric_sum(&m.body, "istio_requests_total", &["response_code=\"200\""]);
    assert_eq!(ok, 2.0, "{}", m.body);
    let _ = _tx;
}

// ------------------------------------------------- timeouts and limits --

/// Compiles `yaml` for the ingress gateway and serves every listener on
/// one engine with `options` (its limits on every listener): Gateway port
/// -> bound address, and the engine (its metrics and body budget).
async fn start_gateway_limited(
    yaml: &str,
    disc: StaticDiscovery,
    options: Options,
) -> (HashMap<u16, SocketAddr>, Arc<Waypoint>) {
    let creds = tempfile::tempdir().expect("credentials dir");
    let (gw, issues) = GatewayConfig::from_yaml(yaml, "test.yaml", &ingress(), creds.path());
    assert!(issues.is_empty(), "gateway issues: {issues:?}");
    let gw = gw
        .into_gateway_with(Arc::new(disc), Arc::new(TcpConnector), options)
        .expect("TLS config");
    let (tx, rx) = tokio::sync::watch::channel(false);
    // The sender lives as long as the test's runtime.
    std::mem::forget(tx);
    let mut ports = HashMap::new();
    for l in gw.listeners {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        ports.insert(l.port, listener.local_addr().expect("addr"));
        tokio::spawn(l.serve(listener, rx.clone()));
    }
    (ports, gw.waypoint)
}

fn limited(limits: Limits) -> Options {
    Options {
        limits,
        ..Options::default()
    }
}

/// Bookinfo's gateway (port 80, `/productpage` to productpage) in front
/// of `productpage`.
async fn bookinfo_limited(
    productpage: SocketAddr,
    limits: Limits,
) -> (HashMap<u16, SocketAddr>, Arc<Waypoint>) {
    let disc = StaticDiscovery::new().with("productpage", vec![Endpoint::new(productpage, &[])]);
    let yaml = seeds(&[
        "04-000-gateway-bookinfo-gateway.yaml",
        "05-000-virtualservice-bookinfo.yaml",
    ]);
    start_gateway_limited(&yaml, disc, limited(limits)).await
}

const PRODUCTPAGE_GET: &[u8] = b"GET /productpage HTTP/1.1\r\nhost: bookinfo.example\r\n\r\n";

/// Reads one response to `GET /productpage` (the backend answers
/// `productpage`, a short body) from a raw connection: its status line.
async fn read_response(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("\r\n\r\nproductpage")
        && !String::from_utf8_lossy(&got).contains("\r\n\r\nslow")
    {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("a response within 10 s")
            .expect("read");
        assert!(
            n > 0,
            "closed before the response: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    text.lines().next().unwrap_or_default().to_string()
}

/// How long until the peer closes `s` (reads nothing more), at most `max`.
async fn closed_after(s: &mut TcpStream, max: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout_at((started + max).into(), s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => continue,
        }
    }
}

/// A slowloris client (one byte of head per second) is cut at the header
/// timeout, counted; a well-behaved client is served meanwhile, and a
/// keep-alive connection idle between requests for longer than the header
/// timeout is not cut (the timer starts at a head's first byte).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_cut_at_the_header_timeout_while_a_good_client_is_served() {
    let productpage = Backend::start("productpage").await;
    let timeout = Duration::from_secs(2);
    let limits = Limits {
        header_read_timeout: timeout,
        ..Limits::default()
    };
    let (ports, engine) = bookinfo_limited(productpage.addr, limits).await;

    // A keep-alive connection: one request now, the next after 2.5 s.
    let mut keepalive = TcpStream::connect(ports[&80]).await.expect("connect");
    keepalive.write_all(PRODUCTPAGE_GET).await.expect("write");
    assert!(read_response(&mut keepalive).await.contains("200"));

    let mut slow = TcpStream::connect(ports[&80]).await.expect("connect");
    let (mut rd, mut wr) = slow.split();
    let head = PRODUCTPAGE_GET;
    let started = Instant::now();
    let writer = async {
        for b in head {
            if wr.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        panic!("the whole head went through at one byte per second");
    };
    let reader = async {
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_secs(8), rd.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => started.elapsed(),
            Ok(Ok(n)) => panic!("the gateway answered a partial head with {n} bytes"),
            Err(_) => panic!("a slowloris head was still being read after 8 s"),
        }
    };
    let good = async {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let r = http_get(ports[&80], "bookinfo.example", "/productpage").await;
        assert_eq!(r.status, StatusCode::OK, "body: {}", r.body);
        assert_eq!(r.body, "productpage");
    };
    let cut = tokio::select! {
        cut = async { tokio::join!(reader, good).0 } => cut,
        _ = writer => unreachable!("the writer panics or returns first"),
    };
    assert!(
        cut >= timeout - Duration::from_millis(100) && cut < timeout + Duration::from_millis(1500),
        "cut after {cut:?}, the header timeout is {timeout:?}"
    );

    // Idle for longer than the header timeout, then a second request.
    tokio::time::sleep(Duration::from_millis(2500).saturating_sub(started.elapsed())).await;
    keepalive.write_all(PRODUCTPAGE_GET).await.expect("write");
    assert!(
        read_response(&mut keepalive).await.contains("200"),
        "an idle keep-alive connection was cut by the header timeout"
    );

    let m = engine.metrics_text();
    let cut_count = metric_sum(
        &m,
        "envoy_http_downstream_rq_header_timeout_total",
        &["listener=\"gateway:80\""],
    );
    assert_eq!(cut_count, 1.0, "{m}");
}

/// A backend that answers `slow` after `delay`.
async fn slow_backend(delay: Duration) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let svc = service_fn(move |_req: Request<Incoming>| async move {
                    tokio::time::sleep(delay).await;
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(
                        b"slow",
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// A connection with no request in flight is closed after the idle
/// timeout, counted; a request that takes longer than the idle timeout is
/// not cut (idle means no request, as Envoy's `idle_timeout`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let idle = Duration::from_secs(1);
    let backend = slow_backend(Duration::from_millis(1500)).await;
    let limits = Limits {
        idle_timeout: idle,
        ..Limits::default()
    };
    let (ports, engine) = bookinfo_limited(backend, limits).await;

    let mut s = TcpStream::connect(ports[&80]).await.expect("connect");
    s.write_all(PRODUCTPAGE_GET).await.expect("write");
    let status = read_response(&mut s).await;
    assert!(
        status.contains("200"),
        "a 1.5 s request under a 1 s idle timeout: {status}"
    );
    let closed = closed_after(&mut s, Duration::from_secs(5))
        .await
        .expect("an idle connection still open 5 s after its last response");
    assert!(
        closed >= idle - Duration::from_millis(100) && closed < idle + Duration::from_millis(1500),
        "closed {closed:?} after the last response, the idle timeout is {idle:?}"
    );

    // A connection that never sends a byte is idle too.
    let mut silent = TcpStream::connect(ports[&80]).await.expect("connect");
    let closed = closed_after(&mut silent, Duration::from_secs(5))
        .await
        .expect("a silent connection still open after 5 s");
    assert!(closed < idle + Duration::from_millis(1500), "{closed:?}");

    let m = engine.metrics_text();
    let n = metric_sum(
        &m,
        "envoy_http_downstream_cx_idle_timeout_total",
        &["listener=\"gateway:80\""],
    );
    assert_eq!(n, 2.0, "{m}");
}

/// Raises this process's open file limit to its hard limit.
fn raise_nofile() -> libc::rlim_t {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid pointer to a live rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    lim.rlim_cur
}

/// 10,000 idle connections (half silent, half stopped inside a request
/// head) do not stop a well-behaved client: the listener keeps at most its
/// cap (500 here) open, closing the idlest to make room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_do_not_stop_a_good_client() {
    const IDLE: usize = 10_000;
    const CAP: usize = 500;
    let nofile = raise_nofile();
    assert!(
        nofile >= (IDLE + CAP + 200) as libc::rlim_t,
        "this test needs {} open files, the limit is {nofile}",
        IDLE + CAP + 200
    );
    let productpage = Backend::start("productpage").await;
    let limits = Limits {
        max_connections: CAP,
        ..Limits::default()
    };
    let (ports, engine) = bookinfo_limited(productpage.addr, limits).await;

    let mut idle = Vec::with_capacity(IDLE);
    for i in 0..IDLE {
        let mut s = TcpStream::connect(ports[&80]).await.expect("connect");
        if i % 2 == 1 {
            s.write_all(b"GET /productpage HTTP/1.1\r\nhost: bookinfo")
                .await
                .expect("write a partial head");
        }
        idle.push(s);
    }
    let active = |m: &str| {
        metric_sum(
            m,
            "envoy_listener_downstream_cx_active",
            &["listener=\"gateway:80\""],
        )
    };
    // The accepts catch up with the connects.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = engine.metrics_text();
        let evicted = metric_sum(
            &m,
            "ambit_listener_downstream_cx_evicted_total",
            &["listener=\"gateway:80\""],
        );
        if evicted >= (IDLE - CAP) as f64 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let started = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        http_get(ports[&80], "bookinfo.example", "/productpage"),
    )
    .await
    .expect("a good client is served within 5 s of 10,000 idle connections");
    assert_eq!(r.status, StatusCode::OK, "body: {}", r.body);
    assert_eq!(r.body, "productpage");
    let took = started.elapsed();

    let m = engine.metrics_text();
    assert!(
        active(&m) <= CAP as f64,
        "open connections over the cap: {m}"
    );
    let evicted = metric_sum(
        &m,
        "ambit_listener_downstream_cx_evicted_total",
        &["listener=\"gateway:80\""],
    );
    assert!(
        evicted >= (IDLE - CAP + 1) as f64,
        "{evicted} idle connections closed to make room, expected at least {}",
        IDLE - CAP + 1
    );
    let refused = metric_sum(
        &m,
        "envoy_listener_downstream_cx_overflow_total",
        &["listener=\"gateway:80\""],
    );
    assert_eq!(refused, 0.0, "no connection had a request in flight");
    eprintln!("good client served in {took:?}; {evicted} idle connections evicted");
    drop(idle);
}

/// An HTTP/2 connection is offered 100 concurrent streams (Envoy's
/// default as Istio sets it; hyper's is 200): the server's SETTINGS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_connections_are_offered_100_concurrent_streams() {
    let productpage = Backend::start("productpage").await;
    let (ports, _engine) = bookinfo_limited(productpage.addr, Limits::default()).await;
    let tcp = TcpStream::connect(ports[&80]).await.expect("connect");
    let (mut client, mut conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let req = Request::get("http://bookinfo.example/productpage")
        .body(())
        .expect("request");
    let (resp, _) = client.send_request(req, true).expect("send");
    let resp = tokio::select! {
        r = resp => r.expect("response"),
        r = &mut conn => panic!("connection ended first: {r:?}"),
    };
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(conn.max_concurrent_send_streams(), 100);
}

/// A request body streamed from a channel (ends when the sender drops).
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|b| b.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

const UPLOAD_MIRRORED: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: upload-gateway, namespace: bookinfo}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["upload.example"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: upload, namespace: bookinfo}
spec:
  hosts: ["upload.example"]
  gateways: [upload-gateway]
  http:
  - route:
    - destination: {host: myapp}
    mirror: {host: shadow}
    mirrorPercentage: {value: 100}
"#;

/// Waits until the engine buffers `cond` bytes (at most 5 s).
async fn buffered_until(engine: &Waypoint, cond: impl Fn(usize) -> bool) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = engine.buffered_body_bytes();
        if cond(n) || Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Mirrored bodies are buffered whole; the buffers of all requests share
/// one budget. A request over it while another holds most of it gets
/// `503` with `x-envoy-overloaded: true`; once the first is done its
/// bytes are given back and a later request is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_bodies_over_the_budget_are_refused_and_the_budget_is_given_back() {
    const BODY: usize = 600 << 10;
    let myapp = Backend::start("myapp").await;
    let shadow = Backend::start("shadow").await;
    let disc = StaticDiscovery::new()
        .with("myapp", vec![myapp.endpoint()])
        .with("shadow", vec![shadow.endpoint()]);
    let limits = Limits {
        buffered_body_budget: 1 << 20,
        ..Limits::default()
    };
    let (ports, engine) = start_gateway_limited(UPLOAD_MIRRORED, disc, limited(limits)).await;

    let tcp = TcpStream::connect(ports[&80]).await.expect("connect");
    let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    let post = |sender: &http2::SendRequest<ChannelBody>| {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let req = Request::post("http://upload.example/up")
            .body(ChannelBody(rx))
            .expect("request");
        let mut sender = sender.clone();
        let resp = tokio::spawn(async move { sender.send_request(req).await });
        (tx, resp)
    };
    let chunk = Bytes::from(vec![b'x'; BODY]);

    // A: 600 KiB, the body not ended yet.
    let (a_tx, a_resp) = post(&sender);
    a_tx.send(chunk.clone()).await.expect("send A");
    let held = buffered_until(&engine, |n| n >= BODY).await;
    assert_eq!(held, BODY, "A's body is buffered");

    // B: 600 KiB more is over the 1 MiB budget.
    let (b_tx, b_resp) = post(&sender);
    b_tx.send(chunk.clone()).await.expect("send B");
    drop(b_tx);
    let b = b_resp.await.expect("task").expect("B's response");
    assert_eq!(b.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(b.headers()["x-envoy-overloaded"], "true");

    drop(a_tx);
    let a = a_resp.await.expect("task").expect("A's response");
    assert_eq!(a.status(), StatusCode::OK);
    let body = a.into_body().collect().await.expect("A's body").to_bytes();
    assert_eq!(body, "myapp");
    let left = buffered_until(&engine, |n| n == 0).await;
    assert_eq!(
        left, 0,
        "A's bytes are given back once it and its mirror are done"
    );

    // C: the budget is free again.
    let (c_tx, c_resp) = post(&sender);
    c_tx.send(chunk).await.expect("send C");
    drop(c_tx);
    let c = c_resp.await.expect("task").expect("C's response");
    assert_eq!(c.status(), StatusCode::OK);

    let m = engine.metrics_text();
    // No labels: `name value`.
    let refused = m
        .lines()
        .find_map(|l| l.strip_prefix("ambit_buffered_request_body_overflow_total "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert_eq!(refused, Some(1.0), "{m}");
}
