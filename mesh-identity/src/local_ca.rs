//! A small self-contained CA for the local mode and for tests: mints SPIFFE
//! workload certificates the way Istio's CA shapes them (ECDSA P-256, URI
//! SAN, server and client auth). It stands in until the controller's CA
//! exists.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, Ia5String, IsCa, KeyPair, KeyUsagePurpose, SanType,
    PKCS_ECDSA_P256_SHA256,
};

use super::{Identity, IdentityError};

/// Issued certificates start this long before "now", to absorb clock skew.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// A self-signed root that issues workload certificates.
pub struct LocalCa {
    trust_domain: String,
    cert: Certificate,
    key: KeyPair,
    root_pem: String,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCa")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

fn mint(e: rcgen::Error) -> IdentityError {
    IdentityError::Mint(e.to_string())
}

/// Set notBefore/notAfter from `SystemTime`s (rcgen's date type is the
/// `time` crate's, which rcgen does not re-export: count from its epoch).
fn set_validity(params: &mut CertificateParams, from: SystemTime, to: SystemTime) {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + from.duration_since(UNIX_EPOCH).unwrap_or_default();
    params.not_after = epoch + to.duration_since(UNIX_EPOCH).unwrap_or_default();
}

impl LocalCa {
    /// A fresh CA (new P-256 key, ten-year root) for `trust_domain`.
    pub fn new(trust_domain: &str) -> Result<LocalCa, IdentityError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(mint)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, trust_domain);
        dn.push(DnType::CommonName, "Ambit local CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        set_validity(
            &mut params,
            now - BACKDATE,
            now + Duration::from_secs(10 * 365 * 24 * 3600),
        );
        let cert = params.self_signed(&key).map_err(mint)?;
        let root_pem = cert.pem();
        Ok(LocalCa {
            trust_domain: trust_domain.to_string(),
            cert,
            key,
            root_pem,
        })
    }

    /// Reload a CA saved with [`LocalCa::root_pem`] and [`LocalCa::key_pem`],
    /// so that certificates issued before a restart stay valid.
    pub fn from_pem(
        trust_domain: &str,
        root_pem: &str,
        key_pem: &str,
    ) -> Result<LocalCa, IdentityError> {
        let key = KeyPair::from_pem(key_pem).map_err(mint)?;
        let params = CertificateParams::from_ca_cert_pem(root_pem).map_err(mint)?;
        // Re-signing yields an equivalent issuer (same name, same key); the
        // original PEM remains what peers trust.
        let cert = params.self_signed(&key).map_err(mint)?;
        Ok(LocalCa {
            trust_domain: trust_domain.to_string(),
            cert,
            key,
            root_pem: root_pem.to_string(),
        })
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The root certificate, PEM: what every node trusts.
    pub fn root_pem(&self) -> String {
        self.root_pem.clone()
    }

    /// The CA's private key, PEM (to persist the CA; keep it private).
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// Issue a certificate for `identity`, valid from a few minutes ago for
    /// `validity`. Returns `(cert_chain_pem, key_pem)`; the chain is the leaf
    /// alone (the root is a trust anchor). The identity need not be in this
    /// CA's trust domain (tests use that to mint foreign identities).
    pub fn issue(
        &self,
        identity: &Identity,
        validity: Duration,
    ) -> Result<(String, String), IdentityError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(mint)?;
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
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .map_err(mint)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CertStore, WorkloadCertificate};

    #[test]
    fn issues_certificates_that_carry_the_identity() {
        let ca = LocalCa::new("cluster.local").unwrap();
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
        let ca = LocalCa::new("cluster.local").unwrap();
        let again = LocalCa::from_pem("cluster.local", &ca.root_pem(), &ca.key_pem()).unwrap();
        assert_eq!(again.root_pem(), ca.root_pem());
        assert_eq!(again.trust_domain(), "cluster.local");
    }
}
