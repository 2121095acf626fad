//! The trust roots and the certificates of the local identities, and the
//! rustls configurations HBONE builds from them.
//!
//! Everything is replaceable at run time. Configurations are built lazily,
//! cached per identity, and dropped from the cache whenever an input changes;
//! connections already established keep the configuration (and session) they
//! were made with, so a reload never drops them.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::SystemTime;

use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::verify::{not_after, peer_identity, SpiffeServerVerifier};
use super::{Identity, IdentityError};

/// ALPN protocol HBONE negotiates on both sides.
pub const ALPN_H2: &[u8] = b"h2";

/// The certificate chain and private key of one local identity.
pub struct WorkloadCertificate {
    pub identity: Identity,
    /// Leaf first, then any intermediates.
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// The leaf's notAfter.
    pub not_after: SystemTime,
}

impl Clone for WorkloadCertificate {
    fn clone(&self) -> Self {
        WorkloadCertificate {
            identity: self.identity.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            not_after: self.not_after,
        }
    }
}

impl fmt::Debug for WorkloadCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkloadCertificate")
            .field("identity", &self.identity.to_string())
            .field("chain_len", &self.chain.len())
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl WorkloadCertificate {
    /// From DER: the identity comes from the leaf's URI SAN, `not_after` from
    /// its validity.
    pub fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, IdentityError> {
        let identity = peer_identity(&chain)?;
        let not_after = not_after(&chain[0])?;
        Ok(WorkloadCertificate {
            identity,
            chain,
            key,
            not_after,
        })
    }

    /// From a PEM chain (leaf first) and a PEM private key (PKCS#8, SEC1 or
    /// PKCS#1).
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, IdentityError> {
        let chain = certs_from_pem(chain_pem, "certificate chain")?;
        let key = key_from_pem(key_pem, "private key")?;
        Self::from_der(chain, key)
    }

    pub fn from_pem_files(
        chain_path: impl AsRef<Path>,
        key_path: impl AsRef<Path>,
    ) -> Result<Self, IdentityError> {
        let chain_pem = read(chain_path.as_ref())?;
        let key_pem = read(key_path.as_ref())?;
        let chain = certs_from_pem(&chain_pem, &chain_path.as_ref().display().to_string())?;
        let key = key_from_pem(&key_pem, &key_path.as_ref().display().to_string())?;
        Self::from_der(chain, key)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, IdentityError> {
    std::fs::read(path).map_err(|e| IdentityError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Every certificate in a PEM blob; at least one.
pub fn certs_from_pem(
    pem: &[u8],
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| IdentityError::Pem {
            what: what.to_string(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(IdentityError::NoCertificateInPem(what.to_string()));
    }
    Ok(certs)
}

/// The first private key in a PEM blob.
pub fn key_from_pem(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, IdentityError> {
    rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|e| IdentityError::Pem {
            what: what.to_string(),
            reason: e.to_string(),
        })?
        .ok_or_else(|| IdentityError::NoPrivateKey(what.to_string()))
}

/// The crypto provider HBONE uses: ring, TLS 1.3 AES-GCM suites only.
pub fn hbone_crypto_provider() -> CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![
        rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
        rustls::crypto::ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
    ];
    provider
}

#[derive(Default)]
struct State {
    roots: Option<Arc<RootCertStore>>,
    certs: HashMap<Identity, Arc<WorkloadCertificate>>,
    servers: HashMap<Identity, Arc<ServerConfig>>,
    clients: HashMap<(Identity, Identity), Arc<ClientConfig>>,
    /// Bumped on every change, so that a config built from old inputs is not
    /// cached after a concurrent change.
    generation: u64,
}

/// Trust roots plus the certificate of each local identity.
pub struct CertStore {
    provider: Arc<CryptoProvider>,
    state: RwLock<State>,
}

impl Default for CertStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.read();
        f.debug_struct("CertStore")
            .field("roots", &state.roots.as_ref().map(|r| r.len()).unwrap_or(0))
            .field(
                "identities",
                &state
                    .certs
                    .keys()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl CertStore {
    /// An empty store: no roots, no identities.
    pub fn new() -> Self {
        CertStore {
            provider: Arc::new(hbone_crypto_provider()),
            state: RwLock::new(State::default()),
        }
    }

    /// A store trusting the roots in `roots_pem`.
    pub fn with_roots_pem(roots_pem: &[u8]) -> Result<Self, IdentityError> {
        let store = Self::new();
        store.update_roots_pem(roots_pem)?;
        Ok(store)
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Replace the trust roots (one or more). Returns how many were loaded.
    /// All cached configurations are invalidated.
    pub fn update_roots(
        &self,
        roots: Vec<CertificateDer<'static>>,
    ) -> Result<usize, IdentityError> {
        if roots.is_empty() {
            return Err(IdentityError::NoTrustRoots);
        }
        let mut store = RootCertStore::empty();
        for root in roots {
            store
                .add(root)
                .map_err(|e| IdentityError::BadTrustRoot(e.to_string()))?;
        }
        let n = store.len();
        let mut state = self.write();
        state.roots = Some(Arc::new(store));
        state.servers.clear();
        state.clients.clear();
        state.generation += 1;
        Ok(n)
    }

    /// Replace the trust roots with the certificates in a PEM blob.
    pub fn update_roots_pem(&self, roots_pem: &[u8]) -> Result<usize, IdentityError> {
        self.update_roots(certs_from_pem(roots_pem, "trust roots")?)
    }

    /// Replace the trust roots with the certificates in a PEM file.
    pub fn load_roots_file(&self, path: impl AsRef<Path>) -> Result<usize, IdentityError> {
        let pem = read(path.as_ref())?;
        self.update_roots(certs_from_pem(&pem, &path.as_ref().display().to_string())?)
    }

    /// Add or replace the certificate of `cert.identity`. The chain's leaf
    /// must carry that identity and the key must match it. Returns the
    /// certificate it replaced.
    pub fn insert(
        &self,
        cert: WorkloadCertificate,
    ) -> Result<Option<Arc<WorkloadCertificate>>, IdentityError> {
        let found = peer_identity(&cert.chain)?;
        if found != cert.identity {
            return Err(IdentityError::WrongIdentity {
                expected: Box::new(cert.identity),
                found: Box::new(found),
            });
        }
        CertifiedKey::from_der(cert.chain.clone(), cert.key.clone_key(), &self.provider).map_err(
            |e| IdentityError::TlsConfig {
                identity: cert.identity.clone(),
                reason: e.to_string(),
            },
        )?;
        let id = cert.identity.clone();
        let mut state = self.write();
        let old = state.certs.insert(id.clone(), Arc::new(cert));
        invalidate(&mut state, &id);
        Ok(old)
    }

    /// Parse and insert a PEM chain and key; returns the identity.
    pub fn insert_pem(&self, chain_pem: &[u8], key_pem: &[u8]) -> Result<Identity, IdentityError> {
        let cert = WorkloadCertificate::from_pem(chain_pem, key_pem)?;
        let id = cert.identity.clone();
        self.insert(cert)?;
        Ok(id)
    }

    /// Load and insert a PEM chain file and key file; returns the identity.
    pub fn load_files(
        &self,
        chain_path: impl AsRef<Path>,
        key_path: impl AsRef<Path>,
    ) -> Result<Identity, IdentityError> {
        let cert = WorkloadCertificate::from_pem_files(chain_path, key_path)?;
        let id = cert.identity.clone();
        self.insert(cert)?;
        Ok(id)
    }

    /// Forget a local identity.
    pub fn remove(&self, identity: &Identity) -> Option<Arc<WorkloadCertificate>> {
        let mut state = self.write();
        let old = state.certs.remove(identity);
        if old.is_some() {
            invalidate(&mut state, identity);
        }
        old
    }

    pub fn get(&self, identity: &Identity) -> Option<Arc<WorkloadCertificate>> {
        self.read().certs.get(identity).cloned()
    }

    /// The local identities with a certificate, sorted.
    pub fn identities(&self) -> Vec<Identity> {
        let mut ids: Vec<Identity> = self.read().certs.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// How many trust roots are loaded.
    pub fn root_count(&self) -> usize {
        self.read().roots.as_ref().map(|r| r.len()).unwrap_or(0)
    }

    fn inputs(
        &self,
        local: &Identity,
    ) -> Result<(Arc<RootCertStore>, Arc<WorkloadCertificate>, u64), IdentityError> {
        let state = self.read();
        let roots = state.roots.clone().ok_or(IdentityError::NoTrustRoots)?;
        let cert = state
            .certs
            .get(local)
            .cloned()
            .ok_or_else(|| IdentityError::NoCertificate(local.clone()))?;
        Ok((roots, cert, state.generation))
    }

    /// The HBONE server configuration for `local`: TLS 1.3 only, ALPN h2,
    /// presents `local`'s chain, requires a client certificate chaining to
    /// the trust roots.
    pub fn server_config(&self, local: &Identity) -> Result<Arc<ServerConfig>, IdentityError> {
        if let Some(cfg) = self.read().servers.get(local) {
            return Ok(cfg.clone());
        }
        let (roots, cert, generation) = self.inputs(local)?;
        let tls_err = |e: &dyn fmt::Display| IdentityError::TlsConfig {
            identity: local.clone(),
            reason: e.to_string(),
        };
        let verifier = WebPkiClientVerifier::builder_with_provider(roots, self.provider.clone())
            .build()
            .map_err(|e| tls_err(&e))?;
        let mut cfg = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| tls_err(&e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(cert.chain.clone(), cert.key.clone_key())
            .map_err(|e| tls_err(&e))?;
        cfg.alpn_protocols = vec![ALPN_H2.to_vec()];
        let cfg = Arc::new(cfg);
        let mut state = self.write();
        if state.generation == generation {
            state.servers.insert(local.clone(), cfg.clone());
        }
        Ok(cfg)
    }

    /// The HBONE client configuration for `local` talking to `expected_peer`:
    /// TLS 1.3 only, ALPN h2, presents `local`'s chain, and accepts only a
    /// server chain that leads to the trust roots and whose URI SAN is
    /// `expected_peer` (the TLS server name is ignored). Session resumption
    /// is off so that every connection verifies its peer afresh.
    pub fn client_config(
        &self,
        local: &Identity,
        expected_peer: &Identity,
    ) -> Result<Arc<ClientConfig>, IdentityError> {
        let key = (local.clone(), expected_peer.clone());
        if let Some(cfg) = self.read().clients.get(&key) {
            return Ok(cfg.clone());
        }
        let (roots, cert, generation) = self.inputs(local)?;
        let tls_err = |e: &dyn fmt::Display| IdentityError::TlsConfig {
            identity: local.clone(),
            reason: e.to_string(),
        };
        let verifier = Arc::new(SpiffeServerVerifier::new(
            roots,
            expected_peer.clone(),
            self.provider.signature_verification_algorithms,
        ));
        let mut cfg = ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| tls_err(&e))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(cert.chain.clone(), cert.key.clone_key())
            .map_err(|e| tls_err(&e))?;
        cfg.alpn_protocols = vec![ALPN_H2.to_vec()];
        cfg.resumption = Resumption::disabled();
        let cfg = Arc::new(cfg);
        let mut state = self.write();
        if state.generation == generation {
            state.clients.insert(key, cfg.clone());
        }
        Ok(cfg)
    }
}

fn invalidate(state: &mut State, local: &Identity) {
    state.servers.remove(local);
    state.clients.retain(|(l, _), _| l != local);
    state.generation += 1;
}
