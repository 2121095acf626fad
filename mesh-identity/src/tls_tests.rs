//! Handshakes between configurations from `CertStore`, over tokio duplex
//! pipes, with certificates from `CertificateAuthority`.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::*;

const HOUR: Duration = Duration::from_secs(3600);

fn client_id() -> Identity {
    Identity::new("cluster.local", "demo", "client")
}

fn server_id() -> Identity {
    Identity::new("cluster.local", "demo", "server")
}

/// A store trusting `ca` holding certificates from `ca` for `ids`.
fn store(ca: &CertificateAuthority, ids: &[&Identity]) -> CertStore {
    let store = CertStore::with_roots_pem(ca.root_pem().as_bytes()).unwrap();
    for id in ids {
        let (chain, key) = ca.issue(id, HOUR).unwrap();
        assert_eq!(
            &store.insert_pem(chain.as_bytes(), key.as_bytes()).unwrap(),
            *id
        );
    }
    store
}

struct Outcome {
    client: Result<Identity, String>,
    server: Result<Identity, String>,
}

/// Handshake, exchange a byte each way, and report what each side saw of
/// the other.
async fn handshake(
    client_cfg: Arc<rustls::ClientConfig>,
    server_cfg: Arc<rustls::ServerConfig>,
) -> Outcome {
    let (c, s) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn(async move {
        let mut tls = TlsAcceptor::from(server_cfg)
            .accept(s)
            .await
            .map_err(|e| e.to_string())?;
        let mut b = [0u8; 1];
        tls.read_exact(&mut b).await.map_err(|e| e.to_string())?;
        tls.write_all(&b).await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        let (_, conn) = tls.get_ref();
        assert_eq!(conn.alpn_protocol(), Some(ALPN_H2));
        assert_eq!(
            conn.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
        peer_identity(conn.peer_certificates().unwrap_or_default()).map_err(|e| e.to_string())
    });
    let client = async {
        let name = ServerName::try_from("ignored.invalid").unwrap();
        let mut tls = TlsConnector::from(client_cfg)
            .connect(name, c)
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(b"x").await.map_err(|e| e.to_string())?;
        let mut b = [0u8; 1];
        tls.read_exact(&mut b).await.map_err(|e| e.to_string())?;
        let (_, conn) = tls.get_ref();
        peer_identity(conn.peer_certificates().unwrap_or_default()).map_err(|e| e.to_string())
    };
    let client = client.await;
    let server = match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(joined) => joined.unwrap(),
        Err(_) => Err("server timed out".into()),
    };
    Outcome { client, server }
}

#[tokio::test]
async fn mutual_tls_succeeds_and_each_side_sees_the_other() {
    let ca = CertificateAuthority::self_signed("cluster.local").unwrap();
    let certs = store(&ca, &[&client_id(), &server_id()]);
    let out = handshake(
        certs.client_config(&client_id(), &server_id()).unwrap(),
        certs.server_config(&server_id()).unwrap(),
    )
    .await;
    assert_eq!(out.client.unwrap(), server_id());
    assert_eq!(out.server.unwrap(), client_id());

    // And the other way round.
    let out = handshake(
        certs.client_config(&server_id(), &client_id()).unwrap(),
        certs.server_config(&client_id()).unwrap(),
    )
    .await;
    assert_eq!(out.client.unwrap(), client_id());
    assert_eq!(out.server.unwrap(), server_id());
}

#[tokio::test]
async fn server_with_unexpected_identity_is_rejected() {
    let ca = CertificateAuthority::self_signed("cluster.local").unwrap();
    let other = Identity::new("cluster.local", "demo", "impostor");
    let certs = store(&ca, &[&client_id(), &server_id()]);
    let out = handshake(
        certs.client_config(&client_id(), &other).unwrap(),
        certs.server_config(&server_id()).unwrap(),
    )
    .await;
    let err = out.client.unwrap_err();
    assert!(
        err.contains("WrongIdentity") && err.contains("impostor"),
        "{err}"
    );
    assert!(out.server.is_err());
}

#[tokio::test]
async fn server_from_untrusted_root_is_rejected() {
    let ca = CertificateAuthority::self_signed("cluster.local").unwrap();
    let rogue = CertificateAuthority::self_signed("cluster.local").unwrap();
    let certs = store(&ca, &[&client_id()]);
    let rogue_certs = store(&rogue, &[&server_id()]);
    // The rogue server trusts our CA, so only the client's check can fail.
    rogue_certs
        .update_roots_pem(ca.root_pem().as_bytes())
        .unwrap();
    let out = handshake(
        certs.client_config(&client_id(), &server_id()).unwrap(),
        rogue_certs.server_config(&server_id()).unwrap(),
    )
    .await;
    let err = out.client.unwrap_err();
    // Same issuer name, other key: BadSignature; other name: UnknownIssuer.
    assert!(
        err.contains("BadSignature") || err.contains("UnknownIssuer"),
        "{err}"
    );
    assert!(out.server.is_err());
}

#[tokio::test]
async fn client_from_untrusted_root_is_rejected() {
    let ca = CertificateAuthority::self_signed("cluster.local").unwrap();
    let rogue = CertificateAuthority::self_signed("cluster.local").unwrap();
    let certs = store(&ca, &[&server_id()]);
    let rogue_certs = store(&rogue, &[&client_id()]);
    rogue_certs
        .update_roots_pem(ca.root_pem().as_bytes())
        .unwrap();
    let out = handshake(
        rogue_certs
            .client_config(&client_id(), &server_id())
            .unwrap(),
        certs.server_config(&server_id()).unwrap(),
    )
    .await;
    let err = out.server.unwrap_err();
    // Same issuer name, other key: BadSignature; other name: UnknownIssuer.
    assert!(
        err.contains("BadSignature") || err.contains("UnknownIssuer"),
        "{err}"
    );
    assert!(out.client.is_err());
}

#[tokio::test]
async fn client_without_certificate_is_rejected() {
    let ca = CertificateAuthority::self_signed("cluster.local").unwrap();
    let certs = store(&ca, &[&server_id()]);
    let mut roots = rustls::RootCertStore::empty();
    for root in certs_from_pem(ca.root_pem().as_bytes(), "root").unwrap() {
        roots.add(root).unwrap();
    }
    let provider = hbone_crypto_provider();
    let verifier = verify::SpiffeServerVerifier::new(
        Arc::new(roots),
        server_id(),
        provider.signature_verification_algorithms,
    );
    let mut anonymous = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    anonymous.alpn_protocols = vec![ALPN_H2.to_vec()];
    let out = handshake(
        Arc::new(anonymous),
        certs.server_config(&server_id()).unwrap(),
    )
    .await;
    let err = out.server.unwrap_err();
    assert!(err.contains("no certificates"), "{err}");
    assert!(out.client.is_err());
}

#[test]
fn missing_identity_and_roots_are_named() {
    let ca = CertificateAuthority::self_signed("cluster.local").unwrap();
    let empty = CertStore::new();
    assert_eq!(
        empty.server_config(&server_id()).unwrap_err(),
        IdentityError::NoTrustRoots
    );
    let certs = store(&ca, &[]);
    let err = certs.server_config(&server_id()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no certificate for identity spiffe://cluster.local/ns/demo/sa/server"
    );
}

#[test]
fn configs_are_cached_and_invalidated_on_change() {
    let ca = CertificateAuthority::self_signed("cluster.local").unwrap();
    let certs = store(&ca, &[&server_id(), &client_id()]);
    let a = certs.server_config(&server_id()).unwrap();
    assert!(Arc::ptr_eq(&a, &certs.server_config(&server_id()).unwrap()));
    let c = certs.client_config(&client_id(), &server_id()).unwrap();
    assert!(Arc::ptr_eq(
        &c,
        &certs.client_config(&client_id(), &server_id()).unwrap()
    ));

    // Rotating the server's certificate rebuilds only the server's configs.
    let (chain, key) = ca.issue(&server_id(), HOUR).unwrap();
    certs.insert_pem(chain.as_bytes(), key.as_bytes()).unwrap();
    assert!(!Arc::ptr_eq(
        &a,
        &certs.server_config(&server_id()).unwrap()
    ));
    assert!(Arc::ptr_eq(
        &c,
        &certs.client_config(&client_id(), &server_id()).unwrap()
    ));

    // New roots rebuild everything.
    certs.update_roots_pem(ca.root_pem().as_bytes()).unwrap();
    assert!(!Arc::ptr_eq(
        &c,
        &certs.client_config(&client_id(), &server_id()).unwrap()
    ));

    assert!(certs.remove(&server_id()).is_some());
    assert!(matches!(
        certs.server_config(&server_id()),
        Err(IdentityError::NoCertificate(_))
    ));
    assert_eq!(certs.identities(), vec![client_id()]);
}

#[test]
fn insert_checks_identity_and_key() {
    let ca = CertificateAuthority::self_signed("cluster.local").unwrap();
    let certs = store(&ca, &[]);
    let (chain, key) = ca.issue(&server_id(), HOUR).unwrap();
    let (_, other_key) = ca.issue(&client_id(), HOUR).unwrap();

    let mut cert = WorkloadCertificate::from_pem(chain.as_bytes(), key.as_bytes()).unwrap();
    cert.identity = client_id();
    assert!(matches!(
        certs.insert(cert),
        Err(IdentityError::WrongIdentity { .. })
    ));

    let mismatched = WorkloadCertificate::from_pem(chain.as_bytes(), other_key.as_bytes()).unwrap();
    assert!(matches!(
        certs.insert(mismatched),
        Err(IdentityError::TlsConfig { .. })
    ));

    assert!(matches!(
        WorkloadCertificate::from_pem(b"garbage", key.as_bytes()),
        Err(IdentityError::NoCertificateInPem(_))
    ));
    assert!(matches!(
        WorkloadCertificate::from_pem(chain.as_bytes(), b""),
        Err(IdentityError::NoPrivateKey(_))
    ));
}

#[test]
fn loads_from_files() {
    let ca = CertificateAuthority::self_signed("cluster.local").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (chain, key) = ca.issue(&server_id(), HOUR).unwrap();
    std::fs::write(dir.path().join("root.pem"), ca.root_pem()).unwrap();
    std::fs::write(dir.path().join("cert.pem"), chain).unwrap();
    std::fs::write(dir.path().join("key.pem"), key).unwrap();
    let certs = CertStore::new();
    assert_eq!(
        certs.load_roots_file(dir.path().join("root.pem")).unwrap(),
        1
    );
    let id = certs
        .load_files(dir.path().join("cert.pem"), dir.path().join("key.pem"))
        .unwrap();
    assert_eq!(id, server_id());
    assert!(matches!(
        certs.load_roots_file(dir.path().join("missing.pem")),
        Err(IdentityError::Read { .. })
    ));
}
