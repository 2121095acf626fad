//! Reading SPIFFE identities out of certificates, and the server-certificate
//! verifier HBONE clients use: chain to the trust roots, then the URI SAN
//! must be the expected peer identity (SPIFFE certificates carry no DNS name,
//! so the TLS server name is ignored).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{Identity, IdentityError};

/// The identity proven by a certificate chain: the `spiffe://` URI SAN of the
/// leaf (the first certificate). Exactly one such SAN must be present; other
/// URI SANs are ignored.
pub fn peer_identity(certs: &[CertificateDer<'_>]) -> Result<Identity, IdentityError> {
    let leaf = certs
        .first()
        .ok_or_else(|| IdentityError::BadCertificate("empty certificate chain".into()))?;
    let (_, cert) = X509Certificate::from_der(leaf.as_ref())
        .map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| IdentityError::BadCertificate(format!("subjectAltName: {e}")))?
        .ok_or(IdentityError::NoSpiffeSan)?;
    let spiffe: Vec<&str> = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) if uri.starts_with("spiffe://") => Some(*uri),
            _ => None,
        })
        .collect();
    match spiffe.as_slice() {
        [] => Err(IdentityError::NoSpiffeSan),
        [uri] => uri.parse(),
        many => Err(IdentityError::MultipleSpiffeSans(
            many.iter().map(|s| s.to_string()).collect(),
        )),
    }
}

/// The leaf's notAfter.
pub(crate) fn not_after(leaf: &CertificateDer<'_>) -> Result<std::time::SystemTime, IdentityError> {
    let (_, cert) = X509Certificate::from_der(leaf.as_ref())
        .map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
    let secs = cert.validity().not_after.timestamp();
    let secs = u64::try_from(secs)
        .map_err(|_| IdentityError::BadCertificate(format!("notAfter {secs} is before 1970")))?;
    Ok(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

fn other(e: IdentityError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

/// Verifies an HBONE server: its chain must lead to one of `roots`, and its
/// SPIFFE identity must be `expected`.
#[derive(Debug)]
pub(crate) struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    expected: Identity,
    algs: WebPkiSupportedAlgorithms,
}

impl SpiffeServerVerifier {
    pub(crate) fn new(
        roots: Arc<RootCertStore>,
        expected: Identity,
        algs: WebPkiSupportedAlgorithms,
    ) -> Self {
        SpiffeServerVerifier {
            roots,
            expected,
            algs,
        }
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algs.all,
        )?;
        let found = peer_identity(std::slice::from_ref(end_entity)).map_err(other)?;
        if found != self.expected {
            return Err(other(IdentityError::WrongIdentity {
                expected: Box::new(self.expected.clone()),
                found: Box::new(found),
            }));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}
