//! Workload identities and the certificates that prove them.
//!
//! - [`Identity`]: a SPIFFE identity (`spiffe://<td>/ns/<ns>/sa/<sa>`).
//! - [`CertStore`]: the trust roots and each local identity's certificate,
//!   replaceable at run time, and the rustls configurations HBONE uses.
//! - [`peer_identity`]: the identity a peer's certificate chain proves.
//! - [`CertificateAuthority`]: the one CA that mints workload certificates
//!   (the controller's, the local mode's and the tests').

pub mod ca;
mod spiffe;
mod store;
mod verify;

pub use ca::CertificateAuthority;
pub use spiffe::{Identity, IdentityError};
pub use store::{
    certs_from_pem, hbone_crypto_provider, key_from_pem, CertStore, WorkloadCertificate, ALPN_H2,
};
pub use verify::peer_identity;

#[cfg(test)]
mod tls_tests;
