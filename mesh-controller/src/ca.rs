//! The CA: signs SPIFFE workload certificates from CSRs
//! (`istio.v1.auth.IstioCertificateService/CreateCertificate`).
//!
//! The signing key is either plugged in from files, as Istio's plug-in CA
//! (`root-cert.pem`, `cert-chain.pem`, and `key.pem` or `ca-key.pem`, with
//! `ca-cert.pem` as the signing certificate when present, else the first
//! certificate of `cert-chain.pem`), or a self-signed root generated at start
//! (saved in the CA folder when one is given, so that restarts keep it).
//! Keys must be PKCS#8 PEM.
//!
//! A node may only obtain the identities of pods scheduled on it.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_identity::Identity;
use mesh_proto::istio::v1::auth::istio_certificate_service_server::IstioCertificateService;
use mesh_proto::istio::v1::auth::{IstioCertificateRequest, IstioCertificateResponse};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CertificateSigningRequestParams,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
    PKCS_ECDSA_P256_SHA256,
};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::bootstrap::Tokens;
use crate::source::Snapshot;

/// Issued certificates start this long before now (clock skew).
const BACKDATE: Duration = Duration::from_secs(5 * 60);
/// Lifetime when the request does not ask for one (Istio's default).
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(24 * 3600);
/// The longest lifetime granted.
pub const MAX_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("CA file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("certificate: {0}")]
    Mint(String),
}

fn mint(e: rcgen::Error) -> CaError {
    CaError::Mint(e.to_string())
}

fn set_validity(params: &mut CertificateParams, from: SystemTime, to: SystemTime) {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + from.duration_since(UNIX_EPOCH).unwrap_or_default();
    params.not_after = epoch + to.duration_since(UNIX_EPOCH).unwrap_or_default();
}

/// Splits a PEM bundle into its certificates (PEM text each).
fn pem_certs(bundle: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut inside = false;
    for line in bundle.lines() {
        if line.starts_with("-----BEGIN CERTIFICATE-----") {
            inside = true;
            cur.clear();
        }
        if inside {
            cur.push_str(line.trim_end());
            cur.push('\n');
        }
        if line.starts_with("-----END CERTIFICATE-----") && inside {
            inside = false;
            out.push(std::mem::take(&mut cur));
        }
    }
    out
}

pub struct CertificateAuthority {
    trust_domain: String,
    issuer: Certificate,
    key: KeyPair,
    /// PEM of the root(s) nodes trust.
    root_pem: String,
    /// PEM certificates between a leaf and the root (signing cert first),
    /// ending with the root: appended to every leaf.
    chain: Vec<String>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<String, CaError> {
    std::fs::read_to_string(path).map_err(|e| CaError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

impl CertificateAuthority {
    /// A new self-signed root (P-256, ten years).
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
        set_validity(
            &mut params,
            now - BACKDATE,
            now + Duration::from_secs(10 * 365 * 24 * 3600),
        );
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

    /// Plug-in CA files from `dir` (see the module doc).
    pub fn from_dir(dir: &Path, trust_domain: &str) -> Result<Self, CaError> {
        let root_pem = read(&dir.join("root-cert.pem"))?;
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
        let chain_path = dir.join("cert-chain.pem");
        let mut chain = if chain_path.exists() {
            pem_certs(&read(&chain_path)?)
        } else {
            Vec::new()
        };
        let signing_pem = if dir.join("ca-cert.pem").exists() {
            let s = read(&dir.join("ca-cert.pem"))?;
            if chain.first().map(|c| c.trim()) != Some(s.trim()) {
                chain.insert(0, s.clone());
            }
            s
        } else if let Some(first) = chain.first() {
            first.clone()
        } else {
            chain.push(root_pem.clone());
            root_pem.clone()
        };
        let roots = pem_certs(&root_pem);
        let Some(root) = roots.first() else {
            return Err(CaError::File {
                path: dir.join("root-cert.pem").display().to_string(),
                reason: "no certificate".into(),
            });
        };
        if chain.last().map(|c| c.trim()) != Some(root.trim()) {
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
        crate::bootstrap::write_private(&dir.join("key.pem"), ca.key.serialize_pem().as_bytes())
            .map_err(io)?;
        std::fs::write(dir.join("cert-chain.pem"), ca.root_pem.as_bytes()).map_err(io)?;
        std::fs::write(dir.join("root-cert.pem"), ca.root_pem.as_bytes()).map_err(io)?;
        Ok(ca)
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The trust root(s), PEM.
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// Checks a PEM CSR (signature included) and returns its SPIFFE identity
    /// and the CSR parameters.
    pub fn csr_identity(
        &self,
        csr_pem: &str,
    ) -> Result<(Identity, CertificateSigningRequestParams), String> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| format!("invalid CSR: {e}"))?;
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
            return Err(format!(
                "the CSR must carry exactly one URI SAN, found {}",
                uris.len()
            ));
        };
        let id: Identity = uri
            .parse()
            .map_err(|e| format!("URI SAN {uri:?} is not a SPIFFE workload identity: {e}"))?;
        if id.trust_domain != self.trust_domain {
            return Err(format!(
                "identity {uri} is not in trust domain {:?}",
                self.trust_domain
            ));
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
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, identity.trust_domain.as_str());
        params.distinguished_name = dn;
        let uri = rcgen::Ia5String::try_from(identity.to_uri()).map_err(mint)?;
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
            .signed_by(&csr.public_key, &self.issuer, &self.key)
            .map_err(mint)?;
        let mut chain = vec![cert.pem()];
        chain.extend(self.chain.iter().cloned());
        Ok(chain)
    }
}

/// The gRPC service.
pub struct CaService {
    ca: Arc<CertificateAuthority>,
    tokens: Arc<Tokens>,
    snapshots: watch::Receiver<Arc<Snapshot>>,
}

impl CaService {
    pub fn new(
        ca: Arc<CertificateAuthority>,
        tokens: Arc<Tokens>,
        snapshots: watch::Receiver<Arc<Snapshot>>,
    ) -> Self {
        CaService {
            ca,
            tokens,
            snapshots,
        }
    }
}

#[tonic::async_trait]
impl IstioCertificateService for CaService {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let node = self.tokens.authenticate(request.metadata())?;
        let req = request.into_inner();
        let (identity, csr) = self
            .ca
            .csr_identity(&req.csr)
            .map_err(Status::invalid_argument)?;
        if let Some(node) = &node {
            let snap = self.snapshots.borrow().clone();
            let allowed = crate::translate::node_identities(&snap, node);
            if !allowed.contains(&(identity.namespace.clone(), identity.service_account.clone())) {
                tracing::warn!(%node, %identity, "CSR refused: no pod with this identity on the node");
                return Err(Status::permission_denied(format!(
                    "node {node} has no pod running as {identity}"
                )));
            }
        }
        let validity = if req.validity_duration > 0 {
            Duration::from_secs(req.validity_duration.unsigned_abs()).min(MAX_VALIDITY)
        } else {
            DEFAULT_VALIDITY
        };
        let chain = self
            .ca
            .sign(&identity, &csr, validity)
            .map_err(|e| Status::internal(e.to_string()))?;
        tracing::info!(node = node.as_deref().unwrap_or("-"), %identity, ?validity, "certificate issued");
        Ok(Response::new(IstioCertificateResponse {
            cert_chain: chain,
        }))
    }
}

/// The metadata key by which a node names itself in Kubernetes mode.
pub const NODE_METADATA: &str = "ambit-node";
/// The TokenReview `extra` key naming the pod a bound token belongs to.
const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";

/// Kubernetes-mode node authentication: a node presents mesh-node's
/// projected service-account token (`authorization: Bearer <token>`) and
/// its node name ([`NODE_METADATA`]). The token is verified by a
/// TokenReview against the API server; it must belong to one of the
/// service accounts mesh-node runs as and be bound to a pod, and that pod
/// must be scheduled on the node named.
pub struct KubeNodeAuthenticator {
    client: kube::Client,
    /// (namespace, service account) mesh-node may run as.
    node_accounts: Vec<(String, String)>,
    /// Audiences the token must carry (empty: the API server's own).
    audiences: Vec<String>,
}

impl std::fmt::Debug for KubeNodeAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeNodeAuthenticator")
            .field("node_accounts", &self.node_accounts)
            .field("audiences", &self.audiences)
            .finish_non_exhaustive()
    }
}

impl KubeNodeAuthenticator {
    pub fn new(
        client: kube::Client,
        node_accounts: Vec<(String, String)>,
        audiences: Vec<String>,
    ) -> Self {
        KubeNodeAuthenticator {
            client,
            node_accounts,
            audiences,
        }
    }

    /// The authenticated node of a request (its metadata).
    // tonic's handlers return `Status`; boxing it here would only be unboxed.
    #[allow(clippy::result_large_err)]
    pub async fn authenticate(&self, md: &tonic::metadata::MetadataMap) -> Result<String, Status> {
        let token = md
            .get(crate::bootstrap::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim().to_string())
            .ok_or_else(|| Status::unauthenticated("missing service-account token"))?;
        let node = md
            .get(NODE_METADATA)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Status::unauthenticated(format!("missing {NODE_METADATA} metadata")))?;
        self.node_of(&token, node).await
    }

    /// Verifies `token` (TokenReview) and that the pod it is bound to runs
    /// on `node`; returns `node`.
    #[allow(clippy::result_large_err)]
    pub async fn node_of(&self, token: &str, node: &str) -> Result<String, Status> {
        use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
        use k8s_openapi::api::core::v1::Pod;
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: (!self.audiences.is_empty()).then(|| self.audiences.clone()),
            },
            ..Default::default()
        };
        let reviewed = kube::Api::<TokenReview>::all(self.client.clone())
            .create(&kube::api::PostParams::default(), &review)
            .await
            .map_err(|e| Status::unavailable(format!("TokenReview: {e}")))?;
        let status = reviewed.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Err(Status::unauthenticated(format!(
                "token not authenticated: {}",
                status.error.unwrap_or_default()
            )));
        }
        let user = status.user.unwrap_or_default();
        let username = user.username.unwrap_or_default();
        let account = username
            .strip_prefix("system:serviceaccount:")
            .and_then(|r| r.split_once(':'))
            .map(|(ns, sa)| (ns.to_string(), sa.to_string()));
        let Some((ns, sa)) = account.filter(|a| self.node_accounts.contains(a)) else {
            return Err(Status::permission_denied(format!(
                "{username} is not a mesh-node service account"
            )));
        };
        let pod_name = user
            .extra
            .unwrap_or_default()
            .get(POD_NAME_EXTRA)
            .and_then(|v| v.first().cloned())
            .ok_or_else(|| {
                Status::permission_denied("the token is not bound to a pod (use a projected token)")
            })?;
        let pod = kube::Api::<Pod>::namespaced(self.client.clone(), &ns)
            .get_opt(&pod_name)
            .await
            .map_err(|e| Status::unavailable(format!("reading pod {ns}/{pod_name}: {e}")))?
            .ok_or_else(|| Status::permission_denied(format!("pod {ns}/{pod_name} is gone")))?;
        let on = pod.spec.and_then(|s| s.node_name).unwrap_or_default();
        if on != node {
            tracing::warn!(%node, pod = %format!("{ns}/{pod_name}"), %sa, pod_node = %on, "node claim refused");
            return Err(Status::permission_denied(format!(
                "pod {ns}/{pod_name} runs on {on:?}, not on {node}"
            )));
        }
        Ok(node.to_string())
    }
}
