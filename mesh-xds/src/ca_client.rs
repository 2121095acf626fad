//! The node's CA client: for every identity of the pods on this node, a
//! fresh P-256 key and a CSR (rcgen) sent to the controller's
//! `IstioCertificateService/CreateCertificate`; the signed chain goes into
//! the [`CertStore`]. Certificates are renewed at half their life; identities
//! no longer used by a local pod are dropped. Failures are retried with
//! backoff and the certificate in hand keeps serving meanwhile.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mesh_proto::istio::v1::auth::istio_certificate_service_client::IstioCertificateServiceClient;
use mesh_proto::istio::v1::auth::IstioCertificateRequest;
use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType, PKCS_ECDSA_P256_SHA256};
use tokio::sync::watch;

use super::client::StateReceiver;
use mesh_identity::{CertStore, Identity, WorkloadCertificate};
use mesh_model::state::ProxyState;

#[derive(Clone, Debug)]
pub struct CaOptions {
    /// `http://host:port` of the controller's gRPC server.
    pub address: String,
    pub node: String,
    pub token: Option<String>,
    /// Requested lifetime.
    pub validity: Duration,
    /// Trust roots (PEM) to install, e.g. the bootstrap folder's
    /// `root-cert.pem`. `None`: the last certificate of each returned chain.
    pub roots_pem: Option<Vec<u8>>,
    /// How often the wanted identities are rechecked.
    pub interval: Duration,
}

impl CaOptions {
    pub fn new(address: impl Into<String>, node: impl Into<String>) -> Self {
        CaOptions {
            address: address.into(),
            node: node.into(),
            token: None,
            validity: Duration::from_secs(24 * 3600),
            roots_pem: None,
            interval: Duration::from_secs(1),
        }
    }
}

#[derive(Debug)]
struct Held {
    renew_at: SystemTime,
}

#[derive(Debug, Default)]
struct Retry {
    next: Option<Instant>,
    delay: Duration,
}

/// Requests one certificate: returns (chain PEMs as sent, key PEM).
pub async fn request_certificate(
    opts: &CaOptions,
    identity: &Identity,
) -> Result<(Vec<String>, String), String> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    let uri = rcgen::Ia5String::try_from(identity.to_uri()).map_err(|e| e.to_string())?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    let csr = params
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(|e| e.to_string())?;
    let endpoint = tonic::transport::Endpoint::from_shared(opts.address.clone())
        .map_err(|e| format!("bad address {}: {e}", opts.address))?
        .connect_timeout(Duration::from_secs(2));
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("connecting to {}: {e}", opts.address))?;
    let mut client = IstioCertificateServiceClient::new(channel);
    let mut req = tonic::Request::new(IstioCertificateRequest {
        csr,
        validity_duration: i64::try_from(opts.validity.as_secs()).unwrap_or(i64::MAX),
        metadata: None,
    });
    if let Some(token) = &opts.token {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| "the bootstrap token is not valid metadata".to_string())?;
        req.metadata_mut().insert("authorization", value);
    }
    let resp = client
        .create_certificate(req)
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    if resp.cert_chain.is_empty() {
        return Err("empty certificate chain".into());
    }
    Ok((resp.cert_chain, key.serialize_pem()))
}

/// Installs a chain returned by the CA (leaf first, root last).
fn install(
    certs: &CertStore,
    opts: &CaOptions,
    chain: &[String],
    key_pem: &str,
) -> Result<WorkloadCertificate, String> {
    // The root is a trust anchor, not part of the presented chain.
    let presented = if chain.len() > 1 {
        &chain[..chain.len() - 1]
    } else {
        chain
    };
    if opts.roots_pem.is_none() && chain.len() > 1 {
        if let Some(root) = chain.last() {
            certs
                .update_roots_pem(root.as_bytes())
                .map_err(|e| format!("trust root: {e}"))?;
        }
    }
    let cert = WorkloadCertificate::from_pem(presented.concat().as_bytes(), key_pem.as_bytes())
        .map_err(|e| e.to_string())?;
    certs.insert(cert.clone()).map_err(|e| e.to_string())?;
    Ok(cert)
}

/// Keeps `certs` holding a valid certificate for every identity of the pods
/// of `opts.node` in `state`. Returns the last error (`None` when all is
/// well). Within a Tokio runtime; runs until `state`'s sender is dropped.
pub fn spawn_ca(
    opts: CaOptions,
    certs: Arc<CertStore>,
    state: StateReceiver,
) -> watch::Receiver<Option<String>> {
    let node = opts.node.clone();
    let wanted: WantedIdentities = Arc::new(move |s: &ProxyState| {
        s.local_workloads(&node)
            .filter(|w| s.is_ambient(w))
            .map(|w| s.identity_of(w))
            .collect()
    });
    spawn_ca_for(opts, certs, state, wanted)
}

/// Which identities a client needs certificates for, in a state.
pub type WantedIdentities = Arc<dyn Fn(&ProxyState) -> Vec<Identity> + Send + Sync>;

/// [`spawn_ca`] for the identities `wanted` picks (a waypoint: its own).
pub fn spawn_ca_for(
    opts: CaOptions,
    certs: Arc<CertStore>,
    state: StateReceiver,
    wanted: WantedIdentities,
) -> watch::Receiver<Option<String>> {
    let (err_tx, err_rx) = watch::channel(None);
    if let Some(roots) = &opts.roots_pem {
        if let Err(e) = certs.update_roots_pem(roots) {
            err_tx.send_replace(Some(format!("trust roots: {e}")));
        }
    }
    tokio::spawn(run(opts, certs, state, wanted, err_tx));
    err_rx
}

async fn run(
    opts: CaOptions,
    certs: Arc<CertStore>,
    mut state: StateReceiver,
    wanted_of: WantedIdentities,
    err_tx: watch::Sender<Option<String>>,
) {
    let mut held: BTreeMap<Identity, Held> = BTreeMap::new();
    let mut retry: BTreeMap<Identity, Retry> = BTreeMap::new();
    let mut ticker = tokio::time::interval(opts.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let s = state.borrow_and_update().clone();
        let wanted: Vec<Identity> = {
            let mut v: Vec<Identity> = wanted_of(&s);
            v.sort();
            v.dedup();
            v
        };
        // Forget identities no local pod uses any more.
        let gone: Vec<Identity> = held
            .keys()
            .filter(|id| !wanted.contains(id))
            .cloned()
            .collect();
        for id in gone {
            certs.remove(&id);
            held.remove(&id);
            retry.remove(&id);
        }
        let now = SystemTime::now();
        let mut errors = Vec::new();
        for id in wanted {
            let due = held.get(&id).is_none_or(|h| h.renew_at <= now);
            if !due {
                continue;
            }
            let r = retry.entry(id.clone()).or_default();
            if r.next.is_some_and(|t| Instant::now() < t) {
                continue;
            }
            match request_certificate(&opts, &id).await {
                Ok((chain, key)) => match install(&certs, &opts, &chain, &key) {
                    Ok(cert) => {
                        let life = cert
                            .not_after
                            .duration_since(SystemTime::now())
                            .unwrap_or_default();
                        tracing::info!(identity = %id, ?life, "certificate from the CA installed");
                        held.insert(
                            id.clone(),
                            Held {
                                renew_at: SystemTime::now() + life / 2,
                            },
                        );
                        retry.remove(&id);
                    }
                    Err(e) => errors.push(format!("{id}: {e}")),
                },
                Err(e) => {
                    tracing::warn!(identity = %id, "certificate request failed: {e}");
                    errors.push(format!("{id}: {e}"));
                    let r = retry.entry(id.clone()).or_default();
                    r.delay =
                        (r.delay * 2).clamp(Duration::from_millis(200), Duration::from_secs(30));
                    r.next = Some(Instant::now() + r.delay);
                }
            }
        }
        err_tx.send_replace((!errors.is_empty()).then(|| errors.join("\n")));
        tokio::select! {
            _ = ticker.tick() => {}
            changed = state.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}
