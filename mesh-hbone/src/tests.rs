//! Unit tests of the pool and the server's request vetting, on loopback.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::client::build_request_for_test;
use super::*;
use mesh_identity::{CertStore, CertificateAuthority, Identity};

const HOUR: Duration = Duration::from_secs(3600);

fn client_id() -> Identity {
    Identity::new("cluster.local", "demo", "client")
}

fn server_id() -> Identity {
    Identity::new("cluster.local", "demo", "server")
}

fn certs() -> Arc<CertStore> {
    let ca = CertificateAuthority::self_signed("cluster.local").unwrap();
    let store = CertStore::with_roots_pem(ca.root_pem().as_bytes()).unwrap();
    for id in [client_id(), server_id()] {
        let (chain, key) = ca.issue(&id, HOUR).unwrap();
        store.insert_pem(chain.as_bytes(), key.as_bytes()).unwrap();
    }
    Arc::new(store)
}

struct Server {
    addr: SocketAddr,
    accepts: Arc<AtomicUsize>,
    /// The serve_connection tasks, to kill connections.
    conns: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
    _drain: watch::Sender<bool>,
}

/// Echo server.
async fn server(certs: Arc<CertStore>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepts = Arc::new(AtomicUsize::new(0));
    let conns = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (drain, drain_rx) = watch::channel(false);
    let (a, c) = (accepts.clone(), conns.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            a.fetch_add(1, Ordering::SeqCst);
            let tls = certs.server_config(&server_id()).unwrap();
            let drain_rx = drain_rx.clone();
            let task = tokio::spawn(async move {
                let _ = serve_connection(tcp, tls, drain_rx, |tunnel| {
                    tokio::spawn(async move {
                        let Ok(stream) = tunnel.accept() else { return };
                        let (mut r, mut w) = tokio::io::split(stream);
                        if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                            let _ = w.shutdown().await;
                        }
                    });
                })
                .await;
            });
            c.lock().unwrap().push(task);
        }
    });
    Server {
        addr,
        accepts,
        conns,
        _drain: drain,
    }
}

fn request(server: &Server) -> ConnectRequest {
    ConnectRequest {
        dst_identity: server_id(),
        hbone_addr: server.addr,
        target: SocketAddr::from(([10, 0, 0, 2], 80)),
        forwarded_for: SocketAddr::from(([10, 0, 0, 1], 1234)),
        service_host: None,
        baggage: None,
        traceparent: None,
    }
}

async fn ping(stream: &mut HboneStream) {
    stream.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    stream.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
}

#[tokio::test]
async fn opens_another_connection_past_the_stream_cap() {
    let certs = certs();
    let server = server(certs.clone()).await;
    let options = HboneClientOptions {
        max_streams_per_connection: 2,
        ..Default::default()
    };
    let client =
        HboneClient::with_options(certs, client_id(), Arc::new(PlainSocketFactory), options);
    let mut streams = Vec::new();
    for _ in 0..5 {
        let mut s = client.connect(request(&server)).await.unwrap();
        ping(&mut s).await;
        streams.push(s);
    }
    assert_eq!(server.accepts.load(Ordering::SeqCst), 3);
    assert_eq!(client.pooled_connections(), 3);
    // Freed slots are reused.
    streams.truncate(3);
    let mut s = client.connect(request(&server)).await.unwrap();
    ping(&mut s).await;
    assert_eq!(server.accepts.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn dead_connections_are_evicted() {
    let certs = certs();
    let server = server(certs.clone()).await;
    let client = HboneClient::new(certs, client_id(), Arc::new(PlainSocketFactory));
    let mut s = client.connect(request(&server)).await.unwrap();
    ping(&mut s).await;
    drop(s);
    assert_eq!(client.pooled_connections(), 1);

    // Kill the server side of the connection.
    for task in server.conns.lock().unwrap().drain(..) {
        task.abort();
    }
    for _ in 0..100 {
        if client.pooled_connections() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(client.pooled_connections(), 0);
    assert!(client.inner_pool_is_empty());

    let mut s = client.connect(request(&server)).await.unwrap();
    ping(&mut s).await;
    assert_eq!(server.accepts.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn idle_connections_are_released() {
    let certs = certs();
    let server = server(certs.clone()).await;
    let options = HboneClientOptions {
        idle_timeout: Duration::from_millis(100),
        ..Default::default()
    };
    let client =
        HboneClient::with_options(certs, client_id(), Arc::new(PlainSocketFactory), options);
    let mut s = client.connect(request(&server)).await.unwrap();
    // An open stream keeps the connection however long it is idle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    ping(&mut s).await;
    assert_eq!(client.pooled_connections(), 1);
    drop(s);
    for _ in 0..100 {
        if client.inner_pool_is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(client.pooled_connections(), 0);
    assert!(client.inner_pool_is_empty());
    let mut s = client.connect(request(&server)).await.unwrap();
    ping(&mut s).await;
    assert_eq!(server.accepts.load(Ordering::SeqCst), 2);
}

/// A raw h2 client over the store's TLS, to send what HboneClient never
/// would.
async fn raw_h2(certs: &CertStore, addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let cfg = certs.client_config(&client_id(), &server_id()).unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .unwrap();
    let (send, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(conn);
    send
}

async fn status_of(send: &h2::client::SendRequest<Bytes>, req: Request<()>) -> StatusCode {
    let mut send = send.clone().ready().await.unwrap();
    let (resp, _body) = send.send_request(req, false).unwrap();
    resp.await.unwrap().status()
}

#[tokio::test]
async fn non_connect_and_bad_authority_get_400_and_the_connection_stays() {
    let certs = certs();
    let server = server(certs.clone()).await;
    let send = raw_h2(&certs, server.addr).await;

    let get = Request::builder()
        .method(Method::GET)
        .uri("https://10.0.0.2/")
        .body(())
        .unwrap();
    assert_eq!(status_of(&send, get).await, StatusCode::BAD_REQUEST);

    let by_name = Request::builder()
        .method(Method::CONNECT)
        .uri("example.com:80")
        .body(())
        .unwrap();
    assert_eq!(status_of(&send, by_name).await, StatusCode::BAD_REQUEST);

    let good = build_request_for_test(&request(&server)).unwrap();
    assert_eq!(status_of(&send, good).await, StatusCode::OK);
    assert_eq!(server.accepts.load(Ordering::SeqCst), 1);
}

#[test]
fn connect_request_headers() {
    let req = ConnectRequest {
        dst_identity: server_id(),
        hbone_addr: "[fd00::2]:15008".parse().unwrap(),
        target: "[fd00::2]:8080".parse().unwrap(),
        forwarded_for: "[fd00::1]:5555".parse().unwrap(),
        service_host: Some("web.demo.svc.cluster.local".into()),
        baggage: Some("k8s.cluster.name=c1".into()),
        traceparent: None,
    };
    let r = build_request_for_test(&req).unwrap();
    assert_eq!(r.method(), Method::CONNECT);
    assert_eq!(r.uri().authority().unwrap().as_str(), "[fd00::2]:8080");
    assert_eq!(
        r.headers()[FORWARDED],
        "for=\"[fd00::1]:5555\";host=web.demo.svc.cluster.local"
    );
    assert_eq!(r.headers()[BAGGAGE], "k8s.cluster.name=c1");
    assert!(r.headers().get(TRACEPARENT).is_none());

    let bad = ConnectRequest {
        baggage: Some("bad\nvalue".into()),
        ..req
    };
    assert!(matches!(
        build_request_for_test(&bad),
        Err(HboneError::InvalidRequest(_))
    ));
}

/// A server that refuses the client's certificate (issued by a CA it does
/// not trust) answers with a TLS alert; the client's error names that
/// alert, not only the broken pipe h2 saw afterwards.
#[tokio::test]
async fn a_refused_client_certificate_is_reported_with_the_alert_received() {
    let server_ca = CertificateAuthority::self_signed("cluster.local").unwrap();
    let server_certs = CertStore::with_roots_pem(server_ca.root_pem().as_bytes()).unwrap();
    let (chain, key) = server_ca.issue(&server_id(), HOUR).unwrap();
    server_certs
        .insert_pem(chain.as_bytes(), key.as_bytes())
        .unwrap();
    let server = server(Arc::new(server_certs)).await;

    // The client trusts the server, but its own certificate is another CA's.
    let other_ca = CertificateAuthority::self_signed("cluster.local").unwrap();
    let client_certs = CertStore::with_roots_pem(server_ca.root_pem().as_bytes()).unwrap();
    let (chain, key) = other_ca.issue(&client_id(), HOUR).unwrap();
    client_certs
        .insert_pem(chain.as_bytes(), key.as_bytes())
        .unwrap();
    let client = HboneClient::new(
        Arc::new(client_certs),
        client_id(),
        Arc::new(PlainSocketFactory),
    );
    for _ in 0..20 {
        let err = match client.connect(request(&server)).await {
            Ok(_) => panic!("a client certificate from an untrusted CA was accepted"),
            Err(e) => e,
        };
        // rustls finds the issuer by name (both CAs are "cluster.local"),
        // so the signature check fails: decrypt_error.
        let text = err.to_string();
        assert!(
            matches!(
                err,
                HboneError::TlsAlert {
                    alert: rustls::AlertDescription::DecryptError,
                    ..
                }
            ) && text.contains("sent TLS alert DecryptError"),
            "the error does not name the alert received: {text} ({err:?})"
        );
    }
}

/// A TLS peer that completes the handshake and closes at once, without an
/// alert, as a server refusing the certificate's identity after the
/// handshake does: the client's error says so instead of h2's "stream
/// closed because of a broken pipe".
#[tokio::test]
async fn a_peer_closing_right_after_the_handshake_is_reported_as_such() {
    let certs = certs();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = certs.server_config(&server_id()).unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.clone());
            tokio::spawn(async move {
                // Handshake, then refuse: drop the connection, say nothing.
                let _ = acceptor.accept(tcp).await;
            });
        }
    });
    let client = HboneClient::new(certs, client_id(), Arc::new(PlainSocketFactory));
    let req = ConnectRequest {
        dst_identity: server_id(),
        hbone_addr: addr,
        target: "127.0.0.1:8080".parse().unwrap(),
        forwarded_for: "127.0.0.1:40000".parse().unwrap(),
        service_host: None,
        baggage: None,
        traceparent: None,
    };
    for _ in 0..20 {
        let err = match client.connect(req.clone()).await {
            Ok(_) => panic!("a peer that closed at once gave a tunnel"),
            Err(e) => e,
        };
        let text = err.to_string();
        assert!(
            matches!(err, HboneError::ClosedAfterHandshake { .. })
                && text.contains("right after the TLS handshake, without a TLS alert"),
            "the error does not say the peer closed after the handshake: {text} ({err:?})"
        );
    }
}
