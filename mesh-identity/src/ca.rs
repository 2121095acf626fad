//! The one certificate-minting CA: it signs SPIFFE workload certificates
//! the way Istio's CA shapes them (ECDSA P-256, one URI SAN, server and
//! client auth), from a CSR (the controller's
//! `IstioCertificateService/CreateCertificate`) or with a fresh key (tests
//! and the local mode).
//!
//! The signing key is either plugged in from files, as Istio's plug-in CA
//! (`root-cert.pem`, `cert-chain.pem`, and `key.pem` or `ca-key.pem`, with
//! `ca-cert.pem` as the signing certificate when present, else the first
//! certificate of `cert-chain.pem`), or a self-signed root generated at start
//! (saved in the CA folder when one is given, so that restarts keep it).
//! Keys must be PKCS#8 PEM.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CertificateSigningRequestParams,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, Ia5String, IsCa, KeyPair, KeyUsagePurpose,
    SanType, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::CertificateDer;

use crate::{certs_from_pem, Identity};

/// Issued certificates start this long before now (clock skew).
const BACKDATE: Duration = Duration::from_secs(5 * 60);
/// A self-signed root's lifetime.
const ROOT_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Lifetime when a request does not ask for one (Istio's default).
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(24 * 3600);
/// The longest lifetime granted to a CSR.
pub const MAX_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("CA file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("certificate: {0}")]
    Mint(String),
}

/// Why a CSR is refused (the caller answers "invalid argument").
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CsrError {
    #[error("invalid CSR: {0}")]
    Invalid(String),
    #[error("the CSR must carry exactly one URI SAN, found {0}")]
    UriSanCount(usize),
    #[error("URI SAN {uri:?} is not a SPIFFE workload identity: {reason}")]
    NotSpiffe { uri: String, reason: String },
    #[error("identity {uri} is not in trust domain {trust_domain:?}")]
    ForeignTrustDomain { uri: String, trust_domain: String },
}

fn mint(e: rcgen::Error) -> CaError {
    CaError::Mint(e.to_string())
}

/// Set notBefore/notAfter from `SystemTime`s (rcgen's date type is the
/// `time` crate's, which rcgen does not re-export: count from its epoch).
fn set_validity(params: &mut CertificateParams, from: SystemTime, to: SystemTime) {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + from.duration_since(UNIX_EPOCH).unwrap_or_default();
    params.not_after = epoch + to.duration_since(UNIX_EPOCH).unwrap_or_default();
}

/// PEM text of one DER certificate, as rcgen writes it (LF line endings).
fn cert_pem(der: &CertificateDer<'_>) -> String {
    let block = pem::Pem::new("CERTIFICATE", der.as_ref());
    pem::encode_config(
        &block,
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// The certificates of a PEM bundle, each as PEM text, in order.
fn pem_certs(bundle: &str, path: &Path) -> Result<Vec<String>, CaError> {
    let what = path.display().to_string();
    let certs = certs_from_pem(bundle.as_bytes(), &what).map_err(|e| CaError::File {
        path: what,
        reason: e.to_string(),
    })?;
    Ok(certs.iter().map(cert_pem).collect())
}

fn read(path: &Path) -> Result<String, CaError> {
    std::fs::read_to_string(path).map_err(|e| CaError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Writes a file readable by its owner only (keys, tokens), atomically.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// A signing certificate and key that issue workload certificates.
pub struct CertificateAuthority {
    trust_domain: String,
    issuer: Certificate,
    key: KeyPair,
    /// PEM of the root(s) nodes trust.
    root_pem: String,
    /// PEM certificates between a leaf and the root (signing cert first),
    /// ending with the root: appended to every leaf signed from a CSR.
    chain: Vec<String>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// A new self-signed root (P-256, ten years) for `trust_domain`.
    pub fn self_signed(trust_domain: &str) -> Result<Self, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(mint)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, trust_domain);
        dn.push(DnType::CommonName, "Ambit root CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        set_validity(&mut params, now - BACKDATE, now + ROOT_VALIDITY);
        let issuer = params.self_signed(&key).map_err(mint)?;
        let root_pem = issuer.pem();
        Ok(CertificateAuthority {
            trust_domain: trust_domain.to_string(),
            issuer,
            key,
            chain: vec![root_pem.clone()],
            root_pem,
        })
    }

    /// Reload a self-signed CA saved with [`Self::root_pem`] and
    /// [`Self::key_pem`], so that certificates issued before a restart stay
    /// valid.
    pub fn from_pem(trust_domain: &str, root_pem: &str, key_pem: &str) -> Result<Self, CaError> {
        let key = KeyPair::from_pem(key_pem).map_err(mint)?;
        let params = CertificateParams::from_ca_cert_pem(root_pem).map_err(mint)?;
        // Re-signing yields an equivalent issuer (same name, same key); the
        // original PEM remains what peers trust.
        let issuer = params.self_signed(&key).map_err(mint)?;
        Ok(CertificateAuthority {
            trust_domain: trust_domain.to_string(),
            issuer,
            key,
            chain: vec![root_pem.to_string()],
            root_pem: root_pem.to_string(),
        })
    }

    /// Plug-in CA files from `dir` (see the module doc).
    pub fn from_dir(dir: &Path, trust_domain: &str) -> Result<Self, CaError> {
        let root_path = dir.join("root-cert.pem");
        let root_pem = read(&root_path)?;
        let key_path = if dir.join("ca-key.pem").exists() {
            dir.join("ca-key.pem")
        } else {
            dir.join("key.pem")
        };
        let key_pem = read(&key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| CaError::File {
            path: key_path.display().to_string(),
            reason: format!("{e} (a PKCS#8 PEM key is expected)"),
        })?;
        let roots = pem_certs(&root_pem, &root_path)?;
        let Some(root) = roots.first() else {
            return Err(CaError::File {
                path: root_path.display().to_string(),
                reason: "no certificate".into(),
            });
        };
        let chain_path = dir.join("cert-chain.pem");
        let mut chain = if chain_path.exists() {
            pem_certs(&read(&chain_path)?, &chain_path)?
        } else {
            Vec::new()
        };
        let signing_path = dir.join("ca-cert.pem");
        let signing_pem = if signing_path.exists() {
            let signing = pem_certs(&read(&signing_path)?, &signing_path)?;
            let Some(first) = signing.into_iter().next() else {
                return Err(CaError::File {
                    path: signing_path.display().to_string(),
                    reason: "no certificate".into(),
                });
            };
            if chain.first() != Some(&first) {
                chain.insert(0, first.clone());
            }
            first
        } else if let Some(first) = chain.first() {
            first.clone()
        } else {
            root.clone()
        };
        if chain.last() != Some(root) {
            chain.push(root.clone());
        }
        let params = CertificateParams::from_ca_cert_pem(&signing_pem).map_err(mint)?;
        // Re-signing yields an equivalent issuer (same name, same key): only
        // its name and key are used to sign.
        let issuer = params.self_signed(&key).map_err(mint)?;
        Ok(CertificateAuthority {
            trust_domain: trust_domain.to_string(),
            issuer,
            key,
            root_pem,
            chain,
        })
    }

    /// Plug-in files from `dir` when `root-cert.pem` is there; otherwise a
    /// new self-signed root, saved into `dir` (as `root-cert.pem`,
    /// `cert-chain.pem`, `key.pem`) so that a restart reuses it.
    pub fn load_or_create(dir: Option<&Path>, trust_domain: &str) -> Result<Self, CaError> {
        let Some(dir) = dir else {
            return Self::self_signed(trust_domain);
        };
        if dir.join("root-cert.pem").exists() {
            return Self::from_dir(dir, trust_domain);
        }
        let ca = Self::self_signed(trust_domain)?;
        let io = |e: std::io::Error| CaError::File {
            path: dir.display().to_string(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        write_private(&dir.join("key.pem"), ca.key_pem().as_bytes()).map_err(io)?;
        std::fs::write(dir.join("cert-chain.pem"), ca.root_pem.as_bytes()).map_err(io)?;
        std::fs::write(dir.join("root-cert.pem"), ca.root_pem.as_bytes()).map_err(io)?;
        Ok(ca)
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The trust root(s), PEM: what every node trusts.
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// The signing key, PEM (to persist the CA; keep it private).
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// Checks a PEM CSR (signature included) and returns its SPIFFE identity
    /// and the CSR parameters.
    pub fn csr_identity(
        &self,
        csr_pem: &str,
    ) -> Result<(Identity, CertificateSigningRequestParams), CsrError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| CsrError::Invalid(e.to_string()))?;
        let uris: Vec<&str> = csr
            .params
            .subject_alt_names
            .iter()
            .filter_map(|s| match s {
                SanType::URI(u) => Some(u.as_str()),
                _ => None,
            })
            .collect();
        let [uri] = uris.as_slice() else {
            return Err(CsrError::UriSanCount(uris.len()));
        };
        let id: Identity = uri
            .parse()
            .map_err(|e: crate::IdentityError| CsrError::NotSpiffe {
                uri: uri.to_string(),
                reason: e.to_string(),
            })?;
        if id.trust_domain != self.trust_domain {
            return Err(CsrError::ForeignTrustDomain {
                uri: uri.to_string(),
                trust_domain: self.trust_domain.clone(),
            });
        }
        Ok((id, csr))
    }

    /// Signs a certificate for `identity` with the CSR's public key. Returns
    /// the chain, leaf first and root last.
    pub fn sign(
        &self,
        identity: &Identity,
        csr: &CertificateSigningRequestParams,
        validity: Duration,
    ) -> Result<Vec<String>, CaError> {
        let cert = leaf_params(identity, validity)?
            .signed_by(&csr.public_key, &self.issuer, &self.key)
            .map_err(mint)?;
        let mut chain = vec![cert.pem()];
        chain.extend(self.chain.iter().cloned());
        Ok(chain)
    }

    /// Issues a certificate for `identity` with a fresh P-256 key, valid
    /// from a few minutes ago for `validity`. Returns `(cert_chain_pem,
    /// key_pem)`; the chain is the leaf alone (the root is a trust anchor).
    /// The identity need not be in this CA's trust domain (tests use that
    /// to mint foreign identities).
    pub fn issue(
        &self,
        identity: &Identity,
        validity: Duration,
    ) -> Result<(String, String), CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(mint)?;
        let cert = leaf_params(identity, validity)?
            .signed_by(&key, &self.issuer, &self.key)
            .map_err(mint)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// A workload leaf for `identity`: its URI SAN, not a CA, server and client
/// auth, valid from a few minutes ago for `validity`.
fn leaf_params(identity: &Identity, validity: Duration) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, identity.trust_domain.as_str());
    params.distinguished_name = dn;
    let uri = Ia5String::try_from(identity.to_uri()).map_err(mint)?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let now = SystemTime::now();
    set_validity(&mut params, now - BACKDATE, now + validity);
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CertStore, WorkloadCertificate};

    #[test]
    fn issues_certificates_that_carry_the_identity() {
        let ca = CertificateAuthority::self_signed("cluster.local").unwrap();
        let id = Identity::new("cluster.local", "demo", "client");
        let (chain, key) = ca.issue(&id, Duration::from_secs(3600)).unwrap();
        let cert = WorkloadCertificate::from_pem(chain.as_bytes(), key.as_bytes()).unwrap();
        assert_eq!(cert.identity, id);
        let left = cert.not_after.duration_since(SystemTime::now()).unwrap();
        assert!(left > Duration::from_secs(3500) && left <= Duration::from_secs(3600));
        let store = CertStore::with_roots_pem(ca.root_pem().as_bytes()).unwrap();
        store.insert(cert).unwrap();
        store.server_config(&id).unwrap();
    }

    #[test]
    fn reloads_from_pem() {
        let ca = CertificateAuthority::self_signed("cluster.local").unwrap();
        let again =
            CertificateAuthority::from_pem("cluster.local", ca.root_pem(), &ca.key_pem()).unwrap();
        assert_eq!(again.root_pem(), ca.root_pem());
        assert_eq!(again.trust_domain(), "cluster.local");
    }

    fn refusal(ca: &CertificateAuthority, csr: &str) -> CsrError {
        match ca.csr_identity(csr) {
            Ok((id, _)) => panic!("CSR for {id} accepted"),
            Err(e) => e,
        }
    }

    fn csr_for(uris: &[&str]) -> (KeyPair, String) {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = uris
            .iter()
            .map(|u| SanType::URI(Ia5String::try_from(*u).unwrap()))
            .collect();
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        (key, csr)
    }

    #[test]
    fn signs_a_csr_with_the_chain_to_the_root() {
        let ca = CertificateAuthority::self_signed("cluster.local").unwrap();
        let (key, csr) = csr_for(&["spiffe://cluster.local/ns/demo/sa/client"]);
        let (id, params) = ca.csr_identity(&csr).unwrap();
        assert_eq!(id, Identity::new("cluster.local", "demo", "client"));
        let chain = ca.sign(&id, &params, DEFAULT_VALIDITY).unwrap();
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[1], ca.root_pem());
        let cert = WorkloadCertificate::from_pem(
            chain.concat().as_bytes(),
            key.serialize_pem().as_bytes(),
        )
        .unwrap();
        assert_eq!(cert.identity, id);
        let store = CertStore::with_roots_pem(ca.root_pem().as_bytes()).unwrap();
        store.insert(cert).unwrap();
    }

    #[test]
    fn refuses_csrs_without_one_identity_of_the_trust_domain() {
        let ca = CertificateAuthority::self_signed("cluster.local").unwrap();
        let (_, none) = csr_for(&[]);
        assert_eq!(refusal(&ca, &none), CsrError::UriSanCount(0));
        let (_, foreign) = csr_for(&["spiffe://other.domain/ns/demo/sa/client"]);
        assert!(matches!(
            refusal(&ca, &foreign),
            CsrError::ForeignTrustDomain { .. }
        ));
        let (_, bad) = csr_for(&["spiffe://cluster.local/not/a/workload"]);
        assert!(matches!(refusal(&ca, &bad), CsrError::NotSpiffe { .. }));
        assert!(matches!(refusal(&ca, "not a csr"), CsrError::Invalid(_)));
    }

    #[test]
    fn persists_its_root_and_reloads_plug_in_files() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::load_or_create(Some(dir.path()), "cluster.local").unwrap();
        let again =
            CertificateAuthority::load_or_create(Some(dir.path()), "cluster.local").unwrap();
        assert_eq!(again.root_pem(), ca.root_pem());
        assert_eq!(again.chain, vec![ca.root_pem().to_string()]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the CA key is private");
    }
}
