//! The admin server (15000 by default, node-local): readiness (not ready
//! while a pod fails to enrol), metrics in Prometheus text form under
//! Istio's names, the last config error, the pods enrolled and failing
//! (`/enrolment`, read by `meshctl proxy-status --node`), and a dump of
//! what the node holds (`/config_dump`, read by `meshctl
//! proxy-config`). It runs on its own thread and runtime, away from the data
//! path.
//!
//! `GET /config_dump` answers JSON (see [`ConfigDump`]): the workloads, the
//! services with their endpoints, the policies, and the certificates of the
//! node's identities with their expiry. Never private keys.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use serde::Serialize;
use tokio::sync::watch;
use tracing::{error, warn};

use crate::inpod::EnrolmentStatus;
use crate::proxy::{Metrics, METRICS_CONTENT_TYPE};
use mesh_identity::CertStore;
use mesh_model::state::{Protocol, ProxyState};

/// What the admin server serves from.
pub struct AdminSources {
    pub metrics: Arc<Metrics>,
    /// True once the node has enrolled its pods at start, false again when
    /// it drains.
    pub ready: watch::Receiver<bool>,
    pub config_error: watch::Receiver<Option<String>>,
    /// This node's name (which workloads are local).
    pub node: String,
    /// What `/config_dump` shows, with `certs`.
    pub state: watch::Receiver<Arc<ProxyState>>,
    pub certs: Arc<CertStore>,
    /// The pods enrolled and those that fail to enrol (`/enrolment`, and
    /// readiness: a failing pod makes the node not ready).
    pub enrolment: watch::Receiver<EnrolmentStatus>,
}

/// Starts the admin server on `addr` on its own thread.
pub fn spawn(addr: SocketAddr, sources: AdminSources) {
    start(Bind::Addr(addr), sources);
}

/// [`spawn`] on a listener already bound (tests bind `127.0.0.1:0` and read
/// the port first).
pub fn spawn_on(listener: std::net::TcpListener, sources: AdminSources) {
    start(Bind::Listener(listener), sources);
}

enum Bind {
    Addr(SocketAddr),
    Listener(std::net::TcpListener),
}

fn start(bind: Bind, sources: AdminSources) {
    let spawned = std::thread::Builder::new()
        .name("mesh-admin".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    error!(error = %e, "admin runtime");
                    return;
                }
            };
            rt.block_on(serve(bind, Arc::new(sources)));
        });
    if let Err(e) = spawned {
        error!(error = %e, "starting the admin thread");
    }
}

async fn serve(bind: Bind, sources: Arc<AdminSources>) {
    let listener = match bind {
        Bind::Addr(addr) => match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                warn!(%addr, error = %e, "admin server not started");
                return;
            }
        },
        Bind::Listener(l) => {
            let l = l
                .set_nonblocking(true)
                .and_then(|()| tokio::net::TcpListener::from_std(l));
            match l {
                Ok(l) => l,
                Err(e) => {
                    warn!(error = %e, "admin server not started");
                    return;
                }
            }
        }
    };
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let sources = sources.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let body = respond(&req, &sources);
                async move { Ok::<_, Infallible>(body) }
            });
            let io = hyper_util::rt::TokioIo::new(tcp);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await;
        });
    }
}

fn respond(req: &Request<hyper::body::Incoming>, s: &AdminSources) -> Response<Full<Bytes>> {
    let mut content_type = "text/plain; charset=utf-8";
    let (status, body) = match req.uri().path() {
        "/healthz/ready" => readiness(*s.ready.borrow(), &s.enrolment.borrow()),
        "/enrolment" => {
            let status = s.enrolment.borrow().clone();
            let dump = enrolment_dump(&s.node, *s.ready.borrow(), &status);
            match serde_json::to_string_pretty(&dump) {
                Ok(j) => {
                    content_type = "application/json";
                    (StatusCode::OK, j + "\n")
                }
                Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
            }
        }
        "/metrics" => {
            content_type = METRICS_CONTENT_TYPE;
            (StatusCode::OK, s.metrics.render())
        }
        "/config_error" => match s.config_error.borrow().as_ref() {
            Some(e) => (StatusCode::OK, format!("{e}\n")),
            None => (StatusCode::OK, "none\n".to_string()),
        },
        "/config_dump" => {
            let state = s.state.borrow().clone();
            let dump = config_dump(&s.node, &state, &s.certs, SystemTime::now());
            match serde_json::to_string_pretty(&dump) {
                Ok(j) => {
                    content_type = "application/json";
                    (StatusCode::OK, j + "\n")
                }
                Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
            }
        }
        _ => (StatusCode::NOT_FOUND, "not found\n".to_string()),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    resp
}

/// `GET /healthz/ready`: 200 once started, unless a pod fails to enrol —
/// then 503 naming each such pod and its error, so that the operator sees
/// it where a node's health is looked at first.
fn readiness(started: bool, enrolment: &EnrolmentStatus) -> (StatusCode, String) {
    if !started {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_string());
    }
    if enrolment.failures.is_empty() {
        return (StatusCode::OK, "ready\n".to_string());
    }
    let mut body = format!(
        "not ready: {} pod(s) failed to enrol\n",
        enrolment.failures.len()
    );
    for (pod, f) in &enrolment.failures {
        body += &format!("{pod}: {} ({} attempts)\n", f.error, f.attempts);
    }
    (StatusCode::SERVICE_UNAVAILABLE, body)
}

/// `GET /enrolment` (read by `meshctl proxy-status --node`).
#[derive(Debug, Serialize)]
pub struct EnrolmentDump {
    pub node: String,
    /// What `/healthz/ready` answers (200).
    pub ready: bool,
    pub enrolled: Vec<String>,
    pub failures: Vec<EnrolmentFailureDump>,
}

#[derive(Debug, Serialize)]
pub struct EnrolmentFailureDump {
    /// `namespace/name`
    pub pod: String,
    pub error: String,
    pub attempts: u64,
    /// RFC 3339, UTC.
    pub first_failed_at: String,
    pub last_failed_at: String,
}

pub fn enrolment_dump(node: &str, started: bool, status: &EnrolmentStatus) -> EnrolmentDump {
    EnrolmentDump {
        node: node.to_string(),
        ready: readiness(started, status).0 == StatusCode::OK,
        enrolled: status.enrolled.clone(),
        failures: status
            .failures
            .iter()
            .map(|(pod, f)| EnrolmentFailureDump {
                pod: pod.clone(),
                error: f.error.clone(),
                attempts: f.attempts,
                first_failed_at: rfc3339(f.first_failed_at),
                last_failed_at: rfc3339(f.last_failed_at),
            })
            .collect(),
    }
}

/// `GET /config_dump`.
#[derive(Debug, Serialize)]
pub struct ConfigDump {
    pub node: String,
    pub trust_domain: String,
    /// When the dump was made (RFC 3339, UTC).
    pub generated_at: String,
    pub workloads: Vec<WorkloadDump>,
    pub services: Vec<ServiceDump>,
    pub policies: Vec<PolicyDump>,
    pub certificates: Vec<CertificateDump>,
    pub trust_roots: usize,
}

#[derive(Debug, Serialize)]
pub struct WorkloadDump {
    pub name: String,
    pub namespace: String,
    pub ip: String,
    pub node: String,
    pub service_account: String,
    /// SPIFFE URI.
    pub identity: String,
    /// In the mesh (`istio.io/dataplane-mode: ambient` on the pod or its namespace).
    pub ambient: bool,
    /// Scheduled on this node and in the mesh: a pod this node enrols.
    pub enrolled_here: bool,
}

#[derive(Debug, Serialize)]
pub struct ServiceDump {
    pub name: String,
    pub namespace: String,
    /// `name.namespace.svc.<cluster domain>`
    pub host: String,
    pub addresses: Vec<String>,
    pub ports: Vec<PortDump>,
    pub endpoints: Vec<EndpointDump>,
}

#[derive(Debug, Serialize)]
pub struct PortDump {
    pub name: Option<String>,
    pub port: u16,
    pub target_port: u16,
    pub protocol: &'static str,
}

#[derive(Debug, Serialize)]
pub struct EndpointDump {
    /// `namespace/name` of the pod.
    pub workload: String,
    pub ip: String,
    pub node: String,
}

#[derive(Debug, Serialize)]
pub struct PolicyDump {
    /// `AuthorizationPolicy` or `PeerAuthentication`.
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    /// AuthorizationPolicy: `ALLOW`, `DENY`, `AUDIT`; PeerAuthentication:
    /// the mode (`STRICT`, `PERMISSIVE`, `DISABLE`, `UNSET`).
    pub action: String,
    /// `None`: the whole namespace (the whole mesh in the root namespace).
    pub selector: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Serialize)]
pub struct CertificateDump {
    /// SPIFFE URI.
    pub identity: String,
    /// The leaf's notAfter (RFC 3339, UTC).
    pub not_after: String,
    /// Seconds until notAfter at `generated_at` (negative once expired).
    pub seconds_remaining: i64,
    /// Certificates in the chain (leaf first).
    pub chain_length: usize,
}

/// What `state` and `certs` hold, as `node` sees it, at `now`.
pub fn config_dump(
    node: &str,
    state: &ProxyState,
    certs: &CertStore,
    now: SystemTime,
) -> ConfigDump {
    let workloads = state
        .workloads()
        .iter()
        .map(|w| {
            let ambient = state.is_ambient(w);
            WorkloadDump {
                name: w.name.clone(),
                namespace: w.namespace.clone(),
                ip: w.ip.to_string(),
                node: w.node.clone(),
                service_account: w.service_account.clone(),
                identity: state.identity_of(w).to_string(),
                ambient,
                enrolled_here: ambient && w.node == node,
            }
        })
        .collect();
    let services = state
        .services()
        .iter()
        .map(|s| ServiceDump {
            name: s.name.clone(),
            namespace: s.namespace.clone(),
            host: s.hostname.clone(),
            addresses: s.addresses.iter().map(|a| a.to_string()).collect(),
            ports: s
                .ports
                .iter()
                .map(|p| PortDump {
                    name: p.name.clone(),
                    port: p.port,
                    target_port: p.target_port,
                    protocol: match p.protocol {
                        Protocol::Tcp => "TCP",
                        Protocol::Udp => "UDP",
                        Protocol::Sctp => "SCTP",
                    },
                })
                .collect(),
            endpoints: s
                .endpoints()
                .iter()
                .map(|w| EndpointDump {
                    workload: w.key(),
                    ip: w.ip.to_string(),
                    node: w.node.clone(),
                })
                .collect(),
        })
        .collect();
    let mut policies: Vec<PolicyDump> = state
        .peer_authentications()
        .iter()
        .map(|p| PolicyDump {
            kind: "PeerAuthentication",
            namespace: p.namespace().to_string(),
            name: p.name().to_string(),
            action: p
                .mode()
                .map(|m| m.to_string())
                .unwrap_or_else(|| "UNSET".into()),
            selector: p.selector().cloned(),
        })
        .collect();
    policies.extend(state.authorization_policies().iter().map(|p| PolicyDump {
        kind: "AuthorizationPolicy",
        namespace: p.namespace().to_string(),
        name: p.name().to_string(),
        action: p.action().to_string(),
        selector: p.selector().cloned(),
    }));
    let certificates = certs
        .identities()
        .iter()
        .filter_map(|id| certs.get(id))
        .map(|c| CertificateDump {
            identity: c.identity.to_string(),
            not_after: rfc3339(c.not_after),
            seconds_remaining: seconds_between(now, c.not_after),
            chain_length: c.chain.len(),
        })
        .collect();
    ConfigDump {
        node: node.to_string(),
        trust_domain: state.trust_domain().to_string(),
        generated_at: rfc3339(now),
        workloads,
        services,
        policies,
        certificates,
        trust_roots: certs.root_count(),
    }
}

fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// `to - from` in whole seconds (negative when `to` is earlier).
fn seconds_between(from: SystemTime, to: SystemTime) -> i64 {
    unix_seconds(to).saturating_sub(unix_seconds(from))
}

/// `YYYY-MM-DDTHH:MM:SSZ` (UTC, whole seconds).
pub fn rfc3339(t: SystemTime) -> String {
    match jiff::Timestamp::from_second(unix_seconds(t)) {
        Ok(ts) => ts.to_string(),
        // Beyond year 9999: not a time a certificate or a clock shows.
        Err(_) => "9999-12-31T23:59:59Z".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use mesh_identity::{CertificateAuthority, Identity};

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
        let before = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(rfc3339(before), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn a_pod_failing_to_enrol_makes_the_node_not_ready_and_is_named() {
        let mut status = EnrolmentStatus {
            enrolled: vec!["demo/srv".into()],
            ..Default::default()
        };
        assert_eq!(readiness(true, &status).0, StatusCode::OK);
        assert_eq!(readiness(false, &status).0, StatusCode::SERVICE_UNAVAILABLE);
        status.failures.insert(
            "demo/blocked".into(),
            crate::inpod::EnrolmentFailure {
                error: "pod demo/blocked: listening on 127.0.0.1:15001 in its netns: in use".into(),
                attempts: 2,
                first_failed_at: UNIX_EPOCH,
                last_failed_at: UNIX_EPOCH,
            },
        );
        let (code, body) = readiness(true, &status);
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            body.contains("demo/blocked: pod demo/blocked: listening on 127.0.0.1:15001"),
            "{body}"
        );
        let dump = enrolment_dump("node-b", true, &status);
        assert!(!dump.ready);
        assert_eq!(dump.failures[0].pod, "demo/blocked");
        assert_eq!(dump.failures[0].first_failed_at, "1970-01-01T00:00:00Z");
    }

    #[test]
    fn dumps_workloads_services_policies_and_certificates() {
        let state = mesh_model::config::parse_state(
            r#"
namespaces:
- {name: demo, labels: {istio.io/dataplane-mode: ambient}}
workloads:
- {name: client, namespace: demo, serviceAccount: client, node: node-a, ip: 10.0.0.1, labels: {app: client}}
- {name: server, namespace: demo, serviceAccount: server, node: node-b, ip: 10.0.0.2, labels: {app: server}}
services:
- {name: server, namespace: demo, addresses: [10.96.0.10], ports: [{port: 80, targetPort: 8080}], selector: {app: server}}
policies:
- apiVersion: security.istio.io/v1
  kind: PeerAuthentication
  metadata: {name: default, namespace: demo}
  spec: {mtls: {mode: STRICT}}
- apiVersion: security.istio.io/v1
  kind: AuthorizationPolicy
  metadata: {name: allow, namespace: demo}
  spec:
    selector: {matchLabels: {app: server}}
    action: ALLOW
    rules: [{from: [{source: {principals: [cluster.local/ns/demo/sa/client]}}]}]
"#,
        )
        .unwrap();
        let ca = CertificateAuthority::self_signed("cluster.local").unwrap();
        let certs = CertStore::with_roots_pem(ca.root_pem().as_bytes()).unwrap();
        let id = Identity::new("cluster.local", "demo", "client");
        let (chain, key) = ca.issue(&id, Duration::from_secs(3600)).unwrap();
        certs.insert_pem(chain.as_bytes(), key.as_bytes()).unwrap();

        let d = config_dump("node-a", &state, &certs, SystemTime::now());
        assert_eq!(d.workloads.len(), 2);
        assert!(d.workloads[0].enrolled_here);
        assert!(!d.workloads[1].enrolled_here);
        assert_eq!(
            d.workloads[0].identity,
            "spiffe://cluster.local/ns/demo/sa/client"
        );
        assert_eq!(d.services[0].host, "server.demo.svc.cluster.local");
        assert_eq!(d.services[0].ports[0].target_port, 8080);
        assert_eq!(d.services[0].endpoints[0].workload, "demo/server");
        assert_eq!(d.policies.len(), 2);
        assert_eq!(d.policies[0].action, "STRICT");
        assert_eq!(d.policies[1].action, "ALLOW");
        assert_eq!(d.certificates.len(), 1);
        let left = d.certificates[0].seconds_remaining;
        assert!((3500..=3600).contains(&left), "{left}");
        assert_eq!(d.trust_roots, 1);
        let json = serde_json::to_string(&d).unwrap();
        assert!(!json.contains("PRIVATE KEY"));
    }
}
