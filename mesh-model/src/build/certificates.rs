//! The certificate files of the local identities. Only the local file mode
//! names them (the controller's CA issues certificates instead); they are
//! part of the builder's input so that the state has one constructor.

use std::path::PathBuf;

use mesh_identity::Identity;
use serde::{Deserialize, Serialize};

use crate::problems::Problems;
use crate::state::{CertificatePaths, IdentityCertPaths};

/// The `certificates` section, as written (paths not yet checked).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CertificatesSpec {
    /// PEM bundle of the trusted roots.
    pub roots: String,
    #[serde(default)]
    pub identities: Vec<IdentityCertSpec>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdentityCertSpec {
    /// `spiffe://<td>/ns/<ns>/sa/<sa>`
    pub identity: String,
    /// PEM: leaf first, then intermediates.
    pub cert_chain: String,
    /// PEM private key.
    pub key: String,
}

pub(super) fn compile_certificates(
    c: &CertificatesSpec,
    trust_domain: &str,
    p: &mut Problems,
) -> CertificatePaths {
    let entry = "certificates";
    if c.roots.trim().is_empty() {
        p.err(
            entry,
            "roots",
            "must name the PEM bundle of the trusted roots",
        );
    }
    let mut identities: Vec<IdentityCertPaths> = Vec::new();
    for (i, ic) in c.identities.iter().enumerate() {
        let field = format!("identities[{i}]");
        let id = match ic.identity.parse::<Identity>() {
            Ok(id) => Some(id),
            Err(e) => {
                p.err(entry, format!("{field}.identity"), e.to_string());
                None
            }
        };
        if ic.cert_chain.trim().is_empty() {
            p.err(entry, format!("{field}.certChain"), "must not be empty");
        }
        if ic.key.trim().is_empty() {
            p.err(entry, format!("{field}.key"), "must not be empty");
        }
        let Some(id) = id else { continue };
        if id.trust_domain != trust_domain {
            p.warn(
                entry,
                format!("{field}.identity {id} is not in the trust domain {trust_domain:?}"),
            );
        }
        if let Some(j) = identities.iter().position(|o| o.identity == id) {
            p.err(
                entry,
                format!("{field}.identity"),
                format!("{id} is listed twice (also identities[{j}])"),
            );
            continue;
        }
        identities.push(IdentityCertPaths {
            identity: id,
            cert_chain: PathBuf::from(&ic.cert_chain),
            key: PathBuf::from(&ic.key),
        });
    }
    CertificatePaths {
        roots: PathBuf::from(&c.roots),
        identities,
    }
}
