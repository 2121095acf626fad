//! SPIFFE identities as Istio writes them: `spiffe://<td>/ns/<ns>/sa/<sa>`.

use std::fmt;
use std::str::FromStr;

/// A workload identity. Istio's principal form (`<td>/ns/<ns>/sa/<sa>`, no
/// scheme) is what AuthorizationPolicy `principals` match against.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("identity {0:?} does not start with spiffe://")]
    NotSpiffe(String),
    #[error("identity {0:?} is not of the form spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>")]
    Malformed(String),
    // Certificate and TLS configuration errors (see `identity::CertStore`).
    // They carry rendered messages so that the enum stays `Eq`.
    #[error("no certificate for identity {0}")]
    NoCertificate(Identity),
    #[error("no trust roots loaded")]
    NoTrustRoots,
    #[error("reading {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("invalid PEM in {what}: {reason}")]
    Pem { what: String, reason: String },
    #[error("no certificate found in {0}")]
    NoCertificateInPem(String),
    #[error("no private key found in {0}")]
    NoPrivateKey(String),
    #[error("trust root rejected: {0}")]
    BadTrustRoot(String),
    #[error("certificate could not be parsed: {0}")]
    BadCertificate(String),
    #[error("certificate has no spiffe:// URI SAN")]
    NoSpiffeSan,
    #[error("certificate has more than one spiffe:// URI SAN: {0:?}")]
    MultipleSpiffeSans(Vec<String>),
    #[error("certificate is for {found}, expected {expected}")]
    WrongIdentity {
        expected: Box<Identity>,
        found: Box<Identity>,
    },
    #[error("building the TLS configuration for {identity}: {reason}")]
    TlsConfig { identity: Identity, reason: String },
}

impl Identity {
    pub fn new(trust_domain: &str, namespace: &str, service_account: &str) -> Self {
        Identity {
            trust_domain: trust_domain.to_string(),
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
        }
    }

    /// The principal as AuthorizationPolicy writes it (no `spiffe://`).
    pub fn principal(&self) -> String {
        format!(
            "{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }

    pub fn to_uri(&self) -> String {
        format!("spiffe://{}", self.principal())
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl FromStr for Identity {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix("spiffe://")
            .ok_or_else(|| IdentityError::NotSpiffe(s.to_string()))?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            [td, "ns", ns, "sa", sa] if !td.is_empty() && !ns.is_empty() && !sa.is_empty() => {
                Ok(Identity::new(td, ns, sa))
            }
            _ => Err(IdentityError::Malformed(s.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_uri() {
        let id: Identity = "spiffe://cluster.local/ns/demo/sa/client".parse().unwrap();
        assert_eq!(id, Identity::new("cluster.local", "demo", "client"));
        assert_eq!(id.to_uri(), "spiffe://cluster.local/ns/demo/sa/client");
        assert_eq!(id.principal(), "cluster.local/ns/demo/sa/client");
    }

    #[test]
    fn rejects_malformed() {
        assert!(matches!(
            "https://x/ns/a/sa/b".parse::<Identity>(),
            Err(IdentityError::NotSpiffe(_))
        ));
        for bad in [
            "spiffe://td/ns/a",
            "spiffe://td/ns//sa/b",
            "spiffe://td/sa/a/ns/b",
            "spiffe:///ns/a/sa/b",
        ] {
            assert!(
                matches!(bad.parse::<Identity>(), Err(IdentityError::Malformed(_))),
                "{bad}"
            );
        }
    }
}
