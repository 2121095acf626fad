//! HTTP/2 and gRPC through the waypoint on loopback: the
//! upstream protocol follows the downstream one, HTTP/2 upstream
//! connections are multiplexed, gRPC trailers reach the client, gRPC local
//! replies carry `grpc-status`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::client::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use waypoint::{Config, Endpoint, StaticDiscovery, TcpConnector, Waypoint};

/// A body of the given frames (data, then trailers).
struct Frames(VecDeque<Frame<Bytes>>);

impl Body for Frames {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.get_mut().0.pop_front().map(Ok))
    }
}

/// A backend speaking HTTP/1.1 and HTTP/2 (prior knowledge): `/grpc...`
/// answers a gRPC message and `grpc-status: 0` in trailers; anything else
/// answers "ok" after `delay`. Counts TCP connections and the versions seen.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    inflight: AtomicUsize,
    max_inflight: AtomicUsize,
    versions: Mutex<Vec<Version>>,
    last_headers: Mutex<Option<HeaderMap>>,
}

const GRPC_REPLY: &[u8] = &[0, 0, 0, 0, 2, 0x08, 0x01];

async fn backend(delay: Duration) -> (SocketAddr, Arc<Seen>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let seen = Arc::new(Seen::default());
    let st = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            st.connections.fetch_add(1, Ordering::SeqCst);
            let st = st.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let st = st.clone();
                    async move {
                        st.versions.lock().expect("lock").push(req.version());
                        *st.last_headers.lock().expect("lock") = Some(req.headers().clone());
                        let now = st.inflight.fetch_add(1, Ordering::SeqCst) + 1;
                        st.max_inflight.fetch_max(now, Ordering::SeqCst);
                        let grpc = req.uri().path().starts_with("/grpc");
                        let _ = req.into_body().collect().await;
                        tokio::time::sleep(delay).await;
                        st.inflight.fetch_sub(1, Ordering::SeqCst);
                        let mut frames = VecDeque::new();
                        let mut r = Response::builder();
                        if grpc {
                            let mut t = HeaderMap::new();
                            t.insert("grpc-status", "0".parse().expect("v"));
                            t.insert("grpc-message", "fine".parse().expect("v"));
                            frames.push_back(Frame::data(Bytes::from_static(GRPC_REPLY)));
                            frames.push_back(Frame::trailers(t));
                            r = r.header("content-type", "application/grpc");
                        } else {
                            frames.push_back(Frame::data(Bytes::from_static(b"ok")));
                        }
                        Ok::<_, std::convert::Infallible>(r.body(Frames(frames)).expect("response"))
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

async fn start_proxy(yaml: &str, disc: StaticDiscovery) -> SocketAddr {
    let (cfg, _issues) = Config::from_yaml(yaml, "test.yaml");
    let wp = Waypoint::new(cfg, Arc::new(disc), Arc::new(TcpConnector));
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(wp.serve(l));
    addr
}

async fn h2_client(addr: SocketAddr) -> http2::SendRequest<Full<Bytes>> {
    let s = TcpStream::connect(addr).await.expect("connect");
    let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(s))
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    sender
}

fn grpc_request(host: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method("POST")
        .uri(format!("http://{host}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        // An empty HealthCheckRequest: the 5-byte gRPC prefix only.
        .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
        .expect("request")
}

fn one(host: &str, addr: SocketAddr) -> StaticDiscovery {
    StaticDiscovery::new().with(host, vec![Endpoint::new(addr, &[])])
}

#[tokio::test]
async fn grpc_unary_call_gets_its_trailers_over_http2() {
    let (b, seen) = backend(Duration::ZERO).await;
    let wp = start_proxy("", one("health", b)).await;
    let mut c = h2_client(wp).await;
    let resp = c
        .send_request(grpc_request("health"))
        .await
        .expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    let collected = resp.into_body().collect().await.expect("body");
    let trailers = collected
        .trailers()
        .cloned()
        .expect("trailers reach the client");
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );
    assert_eq!(
        trailers.get("grpc-message").map(|v| v.as_bytes()),
        Some(&b"fine"[..])
    );
    assert_eq!(&collected.to_bytes()[..], GRPC_REPLY);
    assert_eq!(*seen.versions.lock().expect("lock"), [Version::HTTP_2]);
    let h = seen
        .last_headers
        .lock()
        .expect("lock")
        .clone()
        .expect("headers");
    assert_eq!(h.get("te").map(|v| v.as_bytes()), Some(&b"trailers"[..]));
}

#[tokio::test]
async fn concurrent_http2_requests_share_one_upstream_connection() {
    let (b, seen) = backend(Duration::from_millis(300)).await;
    let wp = start_proxy("", one("reviews", b)).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        tasks.push(tokio::spawn(async move {
            let mut c = h2_client(wp).await;
            let req = Request::builder()
                .uri("http://reviews/")
                .body(Full::new(Bytes::new()))
                .expect("request");
            let r = c.send_request(req).await.expect("response");
            assert_eq!(r.status(), StatusCode::OK);
            r.into_body().collect().await.expect("body").to_bytes()
        }));
    }
    for t in tasks {
        assert_eq!(&t.await.expect("task")[..], b"ok");
    }
    assert_eq!(
        seen.connections.load(Ordering::SeqCst),
        1,
        "one upstream connection"
    );
    assert_eq!(
        seen.max_inflight.load(Ordering::SeqCst),
        8,
        "multiplexed, not queued"
    );
    assert!(seen
        .versions
        .lock()
        .expect("lock")
        .iter()
        .all(|v| *v == Version::HTTP_2));
}

#[tokio::test]
async fn http1_requests_stay_http1_upstream() {
    let (b, seen) = backend(Duration::ZERO).await;
    let wp = start_proxy("", one("reviews", b)).await;
    let s = TcpStream::connect(wp).await.expect("connect");
    let (mut c, conn) = http1::handshake(TokioIo::new(s)).await.expect("h1");
    tokio::spawn(conn);
    for _ in 0..2 {
        let req = Request::builder()
            .uri("/")
            .header("host", "reviews")
            .body(Full::new(Bytes::new()))
            .expect("request");
        let r = c.send_request(req).await.expect("response");
        assert_eq!(r.status(), StatusCode::OK);
        let _ = r.into_body().collect().await;
    }
    assert_eq!(
        *seen.versions.lock().expect("lock"),
        [Version::HTTP_11, Version::HTTP_11]
    );
}

#[tokio::test]
async fn h2_upgrade_policy_sends_http1_requests_over_http2() {
    let (b, seen) = backend(Duration::ZERO).await;
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r, namespace: default}\nspec:\n  host: reviews\n  trafficPolicy:\n    connectionPool:\n      http: {h2UpgradePolicy: UPGRADE}\n";
    let wp = start_proxy(dr, one("reviews", b)).await;
    let s = TcpStream::connect(wp).await.expect("connect");
    let (mut c, conn) = http1::handshake(TokioIo::new(s)).await.expect("h1");
    tokio::spawn(conn);
    let req = Request::builder()
        .uri("/")
        .header("host", "reviews")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let r = c.send_request(req).await.expect("response");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(*seen.versions.lock().expect("lock"), [Version::HTTP_2]);
}

#[tokio::test]
async fn grpc_local_reply_carries_grpc_status() {
    // No endpoint: the waypoint's own 503 becomes UNAVAILABLE (14).
    let wp = start_proxy("", StaticDiscovery::new().with("health", vec![])).await;
    let mut c = h2_client(wp).await;
    let resp = c
        .send_request(grpc_request("health"))
        .await
        .expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers().get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"14"[..])
    );
    assert_eq!(
        resp.headers().get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/grpc"[..])
    );
}

/// TCP passthrough: a tunnel that carries no HTTP (a server-first
/// protocol: the server greets, the client stays silent) is relayed as
/// plain TCP to an endpoint of the service the tunnel was opened for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hbone_tunnel_without_http_is_relayed_as_tcp() {
    use mesh_hbone::{ConnectRequest, HboneClient, PlainSocketFactory};
    use mesh_identity::{CertStore, CertificateAuthority, Identity};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use waypoint::hbone::MeshDiscovery;

    // A server-first echo service on 127.0.0.5.
    let echo = TcpListener::bind("127.0.0.5:0").await.expect("bind");
    let echo_port = echo.local_addr().expect("addr").port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let acc = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = echo.accept().await else {
                return;
            };
            acc.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let _ = s.write_all(b"220 hello\r\n").await;
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let cfg = format!(
        "namespaces:\n- name: demo\n  labels: {{istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint}}\n\
         workloads:\n- {{name: waypoint, namespace: demo, serviceAccount: waypoint, node: a, ip: 127.0.0.4}}\n\
         - {{name: smtp, namespace: demo, serviceAccount: smtp, node: a, ip: 127.0.0.5, labels: {{app: smtp}}}}\n\
         services:\n- {{name: smtp, namespace: demo, addresses: [10.96.0.25], ports: [{{port: 25, targetPort: {echo_port}}}], selector: {{app: smtp}}}}\n"
    );
    let state = mesh_model::config::parse_state(&cfg).unwrap_or_else(|e| panic!("{e}"));
    let discovery = Arc::new(MeshDiscovery::from_state(&state));

    let ca = CertificateAuthority::self_signed("cluster.local").expect("ca");
    let wp_id = Identity::new("cluster.local", "demo", "waypoint");
    let client_id = Identity::new("cluster.local", "demo", "client");
    let store = |id: &Identity| {
        let s = CertStore::with_roots_pem(ca.root_pem().as_bytes()).expect("roots");
        let (chain, key) = ca.issue(id, Duration::from_secs(3600)).expect("issue");
        s.insert_pem(chain.as_bytes(), key.as_bytes())
            .expect("insert");
        Arc::new(s)
    };
    let server_certs = store(&wp_id);
    let tls = server_certs.server_config(&wp_id).expect("server config");

    // Plain TCP to the endpoint: the relay is under test, not HBONE out.
    let (wcfg, _) = Config::from_yaml("", "test.yaml");
    let wp = Waypoint::new(wcfg, discovery.clone(), Arc::new(TcpConnector));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let listen = listener.local_addr().expect("addr");
    let (_drain_tx, drain) = tokio::sync::watch::channel(false);
    tokio::spawn(waypoint::hbone::serve(listener, tls, wp, discovery, drain));

    let client = HboneClient::new(store(&client_id), client_id, Arc::new(PlainSocketFactory));
    let mut stream = client
        .connect(ConnectRequest {
            dst_identity: wp_id,
            hbone_addr: listen,
            target: "10.96.0.25:25".parse().expect("vip"),
            forwarded_for: "127.0.0.1:1".parse().expect("addr"),
            service_host: None,
            baggage: None,
            traceparent: None,
        })
        .await
        .expect("tunnel");
    let mut greeting = [0u8; 11];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut greeting))
        .await
        .expect("greeting in time")
        .expect("greeting");
    assert_eq!(&greeting, b"220 hello\r\n");
    stream.write_all(b"EHLO x\r\n").await.expect("write");
    let mut back = [0u8; 8];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut back))
        .await
        .expect("echo in time")
        .expect("echo");
    assert_eq!(&back, b"EHLO x\r\n");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

// ---- streamed request bodies ------------------------------------------

/// A request body fed by the test as it goes (a gRPC client stream).
struct Fed(tokio::sync::mpsc::Receiver<Frame<Bytes>>);

impl Body for Fed {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.get_mut().0.poll_recv(cx).map(|f| f.map(Ok))
    }
}

/// A bidirectional-streaming backend: each request data frame is echoed
/// at once as a response data frame; the request's end ends the response
/// with `grpc-status: 0` trailers.
async fn echo_stream_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let (tx, rx) = tokio::sync::mpsc::channel(8);
                    tokio::spawn(async move {
                        let mut body = req.into_body();
                        while let Some(Ok(f)) = body.frame().await {
                            if let Ok(d) = f.into_data() {
                                if tx.send(Frame::data(d)).await.is_err() {
                                    return;
                                }
                            }
                        }
                        let mut t = HeaderMap::new();
                        t.insert("grpc-status", "0".parse().expect("v"));
                        let _ = tx.send(Frame::trailers(t)).await;
                    });
                    Response::builder()
                        .header("content-type", "application/grpc")
                        .body(Fed(rx))
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// One gRPC message frame (5-byte prefix) carrying `payload`.
fn grpc_message(payload: &[u8]) -> Bytes {
    let mut m = vec![0u8];
    m.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    m.extend_from_slice(payload);
    Bytes::from(m)
}

/// Each message is answered before the next is sent: the request body is
/// streamed through the waypoint, not buffered until it ends.
#[tokio::test]
async fn grpc_bidirectional_stream_goes_message_by_message() {
    let b = echo_stream_backend().await;
    let wp = start_proxy("", one("chat", b)).await;
    let s = TcpStream::connect(wp).await.expect("connect");
    let (mut c, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(s))
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let req = Request::builder()
        .method("POST")
        .uri("http://chat/chat.v1.Chat/Talk")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Fed(rx))
        .expect("request");
    tx.send(Frame::data(grpc_message(b"one")))
        .await
        .expect("send");
    let resp = tokio::time::timeout(Duration::from_secs(5), c.send_request(req))
        .await
        .expect("the response head came while the request was still open")
        .expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    for word in [&b"one"[..], b"two", b"three"] {
        if word != b"one" {
            tx.send(Frame::data(grpc_message(word)))
                .await
                .expect("send");
        }
        let f = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .unwrap_or_else(|_| panic!("no echo of {word:?} while the request stream is open"))
            .expect("a frame")
            .expect("no error");
        assert_eq!(f.into_data().ok(), Some(grpc_message(word)));
    }
    drop(tx);
    let rest = tokio::time::timeout(Duration::from_secs(5), body.collect())
        .await
        .expect("the stream ends with the request")
        .expect("body");
    assert_eq!(
        rest.trailers()
            .and_then(|t| t.get("grpc-status"))
            .map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );
}

/// A backend that answers `503` to the first request it sees and echoes
/// the request body of every later one; records each body it read.
async fn fail_first_backend() -> (SocketAddr, Arc<Mutex<Vec<Bytes>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = bodies.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|c| c.to_bytes())
                            .unwrap_or_default();
                        let first = {
                            let mut s = seen.lock().expect("lock");
                            s.push(body.clone());
                            s.len() == 1
                        };
                        let status = if first { 503 } else { 200 };
                        Response::builder().status(status).body(Full::new(body))
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, bodies)
}

const RETRY_5XX: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: up, namespace: default}\nspec:\n  hosts: [up]\n  http:\n  - route:\n    - destination: {host: up}\n    retries: {attempts: 2, retryOn: 5xx}\n";

/// POSTs `parts` (one data frame each) over HTTP/1.1 chunked; returns the
/// status and the body echoed back.
async fn post_in_parts(wp: SocketAddr, parts: &[&'static [u8]]) -> (StatusCode, Bytes) {
    let s = TcpStream::connect(wp).await.expect("connect");
    let (mut c, conn) = http1::handshake(TokioIo::new(s)).await.expect("h1");
    tokio::spawn(conn);
    let frames = parts
        .iter()
        .map(|p| Frame::data(Bytes::from_static(p)))
        .collect();
    let req = Request::builder()
        .method("POST")
        .uri("/upload")
        .header("host", "up")
        .body(Frames(frames))
        .expect("request");
    let r = c.send_request(req).await.expect("response");
    let status = r.status();
    (
        status,
        r.into_body().collect().await.expect("body").to_bytes(),
    )
}

#[tokio::test]
async fn a_streamed_body_is_sent_again_on_retry() {
    let (b, bodies) = fail_first_backend().await;
    let wp = start_proxy(RETRY_5XX, one("up", b)).await;
    let (status, echoed) = post_in_parts(wp, &[b"alpha-", b"beta-", b"gamma"]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&echoed[..], b"alpha-beta-gamma");
    let seen = bodies.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2, "one failed try, one retry: {seen:?}");
    assert!(
        seen.iter().all(|b| &b[..] == b"alpha-beta-gamma"),
        "{seen:?}"
    );
}

#[tokio::test]
async fn a_body_over_the_retry_buffer_is_not_retried() {
    let (b, bodies) = fail_first_backend().await;
    let (cfg, _) = Config::from_yaml(RETRY_5XX, "test.yaml");
    let opts = waypoint::engine::Options {
        max_request_body: 8,
        ..Default::default()
    };
    let wp = Waypoint::with_options(cfg, Arc::new(one("up", b)), Arc::new(TcpConnector), opts);
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(wp.serve(l));
    // 16 bytes against a buffer of 8: sent whole once, the 503 returned.
    let (status, _) = post_in_parts(addr, &[b"0123456789", b"abcdef"]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let seen = bodies.lock().expect("lock").clone();
    assert_eq!(seen.len(), 1, "no retry: {seen:?}");
    assert_eq!(&seen[0][..], b"0123456789abcdef", "streamed whole");
}
