//! HBONE end to end on loopback: an `HboneClient` and `serve_connection`
//! with certificates from `CertificateAuthority`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use mesh_hbone::{
    serve_connection, ConnectRequest, HboneClient, HboneError, HboneStream, InboundTunnel,
    PlainSocketFactory,
};
use mesh_identity::{CertStore, CertificateAuthority, Identity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

const HOUR: Duration = Duration::from_secs(3600);
const TIMEOUT: Duration = Duration::from_secs(30);

fn client_id() -> Identity {
    Identity::new("cluster.local", "demo", "client")
}

fn server_id() -> Identity {
    Identity::new("cluster.local", "demo", "server")
}

fn store(ca: &CertificateAuthority, ids: &[Identity]) -> Arc<CertStore> {
    let store = CertStore::with_roots_pem(ca.root_pem().as_bytes()).unwrap();
    for id in ids {
        let (chain, key) = ca.issue(id, HOUR).unwrap();
        store.insert_pem(chain.as_bytes(), key.as_bytes()).unwrap();
    }
    Arc::new(store)
}

#[derive(Clone, Copy)]
enum Behaviour {
    /// Echo everything back, then half-close.
    Echo,
    /// Read to EOF, then answer "pong:<n bytes read>" and half-close.
    ReadThenAnswer,
    /// Refuse with this status.
    Reject(StatusCode),
}

/// What the server saw of one tunnel.
#[derive(Debug)]
struct Seen {
    peer: Identity,
    target: SocketAddr,
    forwarded: Option<String>,
    baggage: Option<String>,
    traceparent: Option<String>,
    stream_peer: Option<Identity>,
}

struct Server {
    addr: SocketAddr,
    accepts: Arc<AtomicUsize>,
    seen: mpsc::UnboundedReceiver<Seen>,
    /// Result of each `serve_connection`, in order of completion.
    done: mpsc::UnboundedReceiver<Result<(), HboneError>>,
    drain: watch::Sender<bool>,
}

async fn start_server(certs: Arc<CertStore>, id: Identity, behaviour: Behaviour) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepts = Arc::new(AtomicUsize::new(0));
    let (seen_tx, seen) = mpsc::unbounded_channel();
    let (done_tx, done) = mpsc::unbounded_channel();
    let (drain, drain_rx) = watch::channel(false);
    let counter = accepts.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            // Look the config up per connection, as a node would.
            let tls = certs.server_config(&id).unwrap();
            let seen_tx = seen_tx.clone();
            let done_tx = done_tx.clone();
            let drain_rx = drain_rx.clone();
            tokio::spawn(async move {
                let result = serve_connection(tcp, tls, drain_rx, move |tunnel| {
                    handle(tunnel, behaviour, seen_tx.clone())
                })
                .await;
                let _ = done_tx.send(result);
            });
        }
    });
    Server {
        addr,
        accepts,
        seen,
        done,
        drain,
    }
}

fn handle(tunnel: InboundTunnel, behaviour: Behaviour, seen: mpsc::UnboundedSender<Seen>) {
    let mut record = Seen {
        peer: tunnel.peer.clone(),
        target: tunnel.target,
        forwarded: tunnel.forwarded.clone(),
        baggage: tunnel.baggage.clone(),
        traceparent: tunnel.traceparent.clone(),
        stream_peer: None,
    };
    tokio::spawn(async move {
        let stream = match behaviour {
            Behaviour::Reject(status) => {
                tunnel.reject(status);
                let _ = seen.send(record);
                return;
            }
            _ => tunnel.accept().unwrap(),
        };
        record.stream_peer = Some(stream.peer_identity().clone());
        assert_eq!(stream.target(), record.target);
        assert_eq!(stream.headers().forwarded, record.forwarded);
        let _ = seen.send(record);
        match behaviour {
            Behaviour::Echo => {
                // Tests that drop their end early reset the stream; the
                // copy then fails, which is fine.
                let (mut r, mut w) = tokio::io::split(stream);
                if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                    let _ = w.shutdown().await;
                }
            }
            Behaviour::ReadThenAnswer => {
                let mut stream = stream;
                let mut got = Vec::new();
                stream.read_to_end(&mut got).await.unwrap();
                stream
                    .write_all(format!("pong:{}", got.len()).as_bytes())
                    .await
                    .unwrap();
                stream.shutdown().await.unwrap();
            }
            Behaviour::Reject(_) => unreachable!(),
        }
    });
}

fn request(server: &Server, dst: Identity, target_port: u16) -> ConnectRequest {
    ConnectRequest {
        dst_identity: dst,
        hbone_addr: server.addr,
        target: SocketAddr::from(([10, 1, 2, 3], target_port)),
        forwarded_for: SocketAddr::from(([10, 9, 8, 7], 40000)),
        service_host: Some("web.demo.svc.cluster.local".into()),
        baggage: Some("k8s.cluster.name=c1,k8s.namespace.name=demo".into()),
        traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
    }
}

fn client(certs: Arc<CertStore>) -> HboneClient {
    HboneClient::new(certs, client_id(), Arc::new(PlainSocketFactory))
}

/// Send `payload`, half-close, and read everything back concurrently.
async fn round_trip(stream: HboneStream, payload: Vec<u8>) -> Vec<u8> {
    let (mut r, mut w) = tokio::io::split(stream);
    let writer = tokio::spawn(async move {
        w.write_all(&payload).await.unwrap();
        w.shutdown().await.unwrap();
        w
    });
    let mut got = Vec::new();
    r.read_to_end(&mut got).await.unwrap();
    writer.await.unwrap();
    got
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(TIMEOUT, f).await.expect("timed out")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_byte_and_16_mib_echo_intact() {
    within(async {
        let ca = CertificateAuthority::self_signed("cluster.local").unwrap();
        let certs = store(&ca, &[client_id(), server_id()]);
        let server = start_server(certs.clone(), server_id(), Behaviour::Echo).await;
        let client = client(certs);

        let stream = client.connect(request(&server, server_id(), 8080)).await.unwrap();
        assert_eq!(stream.peer_identity(), &server_id());
        assert_eq!(round_trip(stream, vec![0x5a]).await, vec![0x5a]);

        let payload: Vec<u8> = (0..16 * 1024 * 1024u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
            .collect();
        let stream = client.connect(request(&server, server_id(), 8080)).await.unwrap();
        let start = Instant::now();
        let got = round_trip(stream, payload.clone()).await;
        let elapsed = start.elapsed();
        assert_eq!(got.len(), payload.len());
        assert!(got == payload, "16 MiB echo corrupted");
        eprintln!(
            "16 MiB echoed through HBONE in {elapsed:?} ({:.0} MiB/s each way; debug build, not asserted)",
            16.0 / elapsed.as_secs_f64()
        );
    })
    .await
}

#[tokio::test]
async fn server_sees_identity_target_and_headers() {
    within(async {
        let ca = CertificateAuthority::self_signed("cluster.local").unwrap();
        let certs = store(&ca, &[client_id(), server_id()]);
        let mut server = start_server(certs.clone(), server_id(), Behaviour::Echo).await;
        let client = client(certs);

        let stream = client
            .connect(request(&server, server_id(), 9090))
            .await
            .unwrap();
        assert_eq!(stream.target(), SocketAddr::from(([10, 1, 2, 3], 9090)));
        let seen = server.seen.recv().await.unwrap();
        assert_eq!(seen.peer, client_id());
        assert_eq!(seen.stream_peer, Some(client_id()));
        assert_eq!(seen.target, SocketAddr::from(([10, 1, 2, 3], 9090)));
        assert_eq!(
            seen.forwarded.as_deref(),
            Some("for=\"10.9.8.7:40000\";host=web.demo.svc.cluster.local")
        );
        assert_eq!(
            seen.baggage.as_deref(),
            Some("k8s.cluster.name=c1,k8s.namespace.name=demo")
        );
        assert_eq!(
            seen.traceparent.as_deref(),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
        drop(stream);

        // Without a service: `for` only, no optional headers.
        let mut req = request(&server, server_id(), 9091);
        req.service_host = None;
        req.baggage = None;
        req.traceparent = None;
        let _stream = client.connect(req).await.unwrap();
        let seen = server.seen.recv().await.unwrap();
        assert_eq!(seen.forwarded.as_deref(), Some("for=\"10.9.8.7:40000\""));
        assert_eq!(seen.baggage, None);
        assert_eq!(seen.traceparent, None);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connects_to_the_same_peer_share_one_connection() {
    within(async {
        let ca = CertificateAuthority::self_signed("cluster.local").unwrap();
        let certs = store(&ca, &[client_id(), server_id()]);
        let server = start_server(certs.clone(), server_id(), Behaviour::Echo).await;
        let client = client(certs);

        // Concurrent first connects share one handshake...
        let mut tasks = Vec::new();
        for i in 0..8u16 {
            let client = client.clone();
            let req = request(&server, server_id(), 8000 + i);
            tasks.push(tokio::spawn(async move { client.connect(req).await }));
        }
        let mut streams = Vec::new();
        for t in tasks {
            streams.push(t.await.unwrap().unwrap());
        }
        // ...and later ones reuse it, while streams are open and after.
        let a = client
            .connect(request(&server, server_id(), 80))
            .await
            .unwrap();
        let b = client
            .connect(request(&server, server_id(), 81))
            .await
            .unwrap();
        assert_eq!(round_trip(a, b"a".to_vec()).await, b"a");
        assert_eq!(round_trip(b, b"b".to_vec()).await, b"b");
        drop(streams);
        let c = client
            .connect(request(&server, server_id(), 82))
            .await
            .unwrap();
        assert_eq!(round_trip(c, b"c".to_vec()).await, b"c");

        assert_eq!(server.accepts.load(Ordering::SeqCst), 1);
        assert_eq!(client.pooled_connections(), 1);
    })
    .await
}

#[tokio::test]
async fn wrong_expected_identity_fails() {
    within(async {
        let ca = CertificateAuthority::self_signed("cluster.local").unwrap();
        let certs = store(&ca, &[client_id(), server_id()]);
        let server = start_server(certs.clone(), server_id(), Behaviour::Echo).await;
        let client = client(certs);

        let other = Identity::new("cluster.local", "demo", "not-the-server");
        let err = client
            .connect(request(&server, other, 80))
            .await
            .unwrap_err();
        assert!(matches!(err, HboneError::Tls { .. }), "{err}");
        assert!(err.to_string().contains("WrongIdentity"), "{err}");
        assert_eq!(client.pooled_connections(), 0);
    })
    .await
}

#[tokio::test]
async fn client_certificate_from_another_ca_fails() {
    within(async {
        let ca = CertificateAuthority::self_signed("cluster.local").unwrap();
        let rogue = CertificateAuthority::self_signed("cluster.local").unwrap();
        let server_certs = store(&ca, &[server_id()]);
        let mut server = start_server(server_certs, server_id(), Behaviour::Echo).await;
        // The client trusts the real root but holds a rogue certificate.
        let client_certs = store(&rogue, &[client_id()]);
        client_certs
            .update_roots_pem(ca.root_pem().as_bytes())
            .unwrap();
        let client = client(client_certs);

        let result = client.connect(request(&server, server_id(), 80)).await;
        assert!(result.is_err());
        let served = server.done.recv().await.unwrap();
        assert!(matches!(served, Err(HboneError::Tls { .. })), "{served:?}");
        assert!(server.seen.try_recv().is_err());
    })
    .await
}

#[tokio::test]
async fn half_close_lets_the_server_answer_after_eof() {
    within(async {
        let ca = CertificateAuthority::self_signed("cluster.local").unwrap();
        let certs = store(&ca, &[client_id(), server_id()]);
        let server = start_server(certs.clone(), server_id(), Behaviour::ReadThenAnswer).await;
        let client = client(certs);

        let mut stream = client
            .connect(request(&server, server_id(), 80))
            .await
            .unwrap();
        stream.write_all(b"ping").await.unwrap();
        stream.shutdown().await.unwrap();
        // Writing after shutdown is an error; reading still works.
        assert!(stream.write_all(b"more").await.is_err());
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert_eq!(answer, "pong:4");
    })
    .await
}

#[tokio::test]
async fn rejection_carries_the_status() {
    within(async {
        let ca = CertificateAuthority::self_signed("cluster.local").unwrap();
        let certs = store(&ca, &[client_id(), server_id()]);
        let server = start_server(
            certs.clone(),
            server_id(),
            Behaviour::Reject(StatusCode::UNAUTHORIZED),
        )
        .await;
        let client = client(certs);
        let err = client
            .connect(request(&server, server_id(), 80))
            .await
            .unwrap_err();
        assert!(
            matches!(err, HboneError::Rejected(StatusCode::UNAUTHORIZED)),
            "{err}"
        );
        // The connection survives a rejected stream.
        let err = client
            .connect(request(&server, server_id(), 81))
            .await
            .unwrap_err();
        assert!(matches!(err, HboneError::Rejected(_)), "{err}");
        assert_eq!(server.accepts.load(Ordering::SeqCst), 1);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drain_lets_open_streams_finish_and_new_ones_use_a_new_connection() {
    within(async {
        let ca = CertificateAuthority::self_signed("cluster.local").unwrap();
        let certs = store(&ca, &[client_id(), server_id()]);
        let mut server = start_server(certs.clone(), server_id(), Behaviour::Echo).await;
        let client = client(certs);

        let mut old = client
            .connect(request(&server, server_id(), 80))
            .await
            .unwrap();
        old.write_all(b"before").await.unwrap();
        let mut buf = [0u8; 6];
        old.read_exact(&mut buf).await.unwrap();

        server.drain.send(true).unwrap();
        // Give the GOAWAY time to arrive.
        tokio::time::sleep(Duration::from_millis(200)).await;

        // The open stream still works.
        assert_eq!(round_trip(old, b"after".to_vec()).await, b"after");
        // The drained connection ends once its stream is done.
        let served = server.done.recv().await.unwrap();
        assert!(served.is_ok(), "{served:?}");

        // A new tunnel goes over a new connection (to a server that is no
        // longer draining, like a restarted one).
        server.drain.send(false).unwrap();
        let fresh = client
            .connect(request(&server, server_id(), 81))
            .await
            .unwrap();
        assert_eq!(round_trip(fresh, b"new".to_vec()).await, b"new");
        assert_eq!(server.accepts.load(Ordering::SeqCst), 2);
    })
    .await
}
