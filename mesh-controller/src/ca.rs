//! The CA's gRPC service (`istio.v1.auth.IstioCertificateService/CreateCertificate`)
//! and Kubernetes-mode node authentication. The CA itself, which signs the
//! CSRs, is [`mesh_identity::ca::CertificateAuthority`].
//!
//! A node may only obtain the identities of pods scheduled on it.

use std::sync::Arc;
use std::time::Duration;

use mesh_identity::ca::{CertificateAuthority, DEFAULT_VALIDITY, MAX_VALIDITY};
use mesh_proto::istio::v1::auth::istio_certificate_service_server::IstioCertificateService;
use mesh_proto::istio::v1::auth::{IstioCertificateRequest, IstioCertificateResponse};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::bootstrap::Tokens;
use crate::source::Snapshot;

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
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
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
