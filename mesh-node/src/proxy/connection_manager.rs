//! The open inbound connections and the inputs they were authorized with,
//! so that a policy change reaches connections already open: on every new
//! config, each one is authorized again and those now denied are closed.
//!
//! ztunnel does the same (its connection manager and policy watcher). Two
//! things differ, each for an obvious reason:
//! - PeerAuthentication is re-checked too: a plaintext connection admitted
//!   under PERMISSIVE is cut when its port turns STRICT (ztunnel gets this
//!   by folding STRICT into its authorization policies).
//! - The destination workload is looked up again in the new config, so a
//!   label change that brings it under a DENY applies; only when it has left
//!   the config is the workload as admitted used (its policies still apply,
//!   and its un-enrolment, not a policy, ends its connections).
//!
//! The registry holds live connections only: [`ConnectionGuard`] removes
//! its entry when dropped, and a revoked entry is removed when revoked.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{oneshot, watch};
use tracing::info;

use super::Metrics;
use mesh_identity::Identity;
use mesh_model::rbac::{authorize, peer_authentication_mode, ConnectionInfo, MtlsMode, Reason};
use mesh_model::state::{ProxyState, Workload};

/// How the connection reached the pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// An HBONE tunnel (mTLS): the caller's identity is known.
    Hbone,
    /// Plaintext on 15006: subject to PeerAuthentication as well.
    Plaintext,
}

/// The inputs a connection was admitted with.
#[derive(Clone, Debug)]
pub struct AdmittedConnection {
    pub transport: Transport,
    /// The caller's SPIFFE identity; `None` for plaintext.
    pub src_identity: Option<Identity>,
    pub src_addr: SocketAddr,
    /// The pod's address and the port connected to.
    pub dst_addr: SocketAddr,
    /// The destination as admitted (used if it leaves the config).
    pub dst_workload: Arc<Workload>,
}

/// Why an open connection is no longer allowed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Revoked {
    #[error("{0}")]
    Policy(Reason),
    #[error("plaintext refused: PeerAuthentication STRICT on port {0}")]
    Strict(u16),
}

/// Authorizes `conn` against `state`, as on admission.
pub fn evaluate(state: &ProxyState, conn: &AdmittedConnection) -> Result<(), Revoked> {
    let current = state.workload_by_ip(conn.dst_addr.ip());
    let workload = current.unwrap_or(&conn.dst_workload);
    let port = conn.dst_addr.port();
    if conn.transport == Transport::Plaintext
        && peer_authentication_mode(state, workload, port) == MtlsMode::Strict
    {
        return Err(Revoked::Strict(port));
    }
    let decision = authorize(
        state,
        &ConnectionInfo {
            src_identity: conn.src_identity.clone(),
            src_ip: conn.src_addr.ip(),
            dst_workload: workload,
            dst_port: port,
        },
    );
    if decision.allowed {
        Ok(())
    } else {
        Err(Revoked::Policy(decision.reason))
    }
}

struct Entry {
    conn: Arc<AdmittedConnection>,
    close: oneshot::Sender<Revoked>,
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    open: HashMap<u64, Entry>,
}

/// The node's open inbound connections (all pods).
pub struct ConnectionManager {
    registry: Mutex<Registry>,
    /// The node's config: what a registration checks it was admitted under.
    state: watch::Receiver<Arc<ProxyState>>,
    metrics: Arc<Metrics>,
}

impl ConnectionManager {
    pub fn new(state: watch::Receiver<Arc<ProxyState>>, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(ConnectionManager {
            registry: Mutex::new(Registry::default()),
            state,
            metrics,
        })
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock leaves the map consistent (every
        // update is a single insert or remove), so poisoning is ignored.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many connections are registered.
    pub fn open(&self) -> usize {
        self.registry().open.len()
    }

    /// Registers a connection authorized under `admitted_under`. If the
    /// config changed since, the connection is checked against the current
    /// one here: registering first and reading the config after closes the
    /// gap in which a change would reach neither the admission nor the
    /// watcher.
    pub fn register(
        self: &Arc<Self>,
        conn: AdmittedConnection,
        admitted_under: &Arc<ProxyState>,
    ) -> Result<ConnectionGuard, Revoked> {
        let conn = Arc::new(conn);
        let (close, closed) = oneshot::channel();
        let id = {
            let mut r = self.registry();
            let id = r.next_id;
            r.next_id = r.next_id.wrapping_add(1);
            r.open.insert(
                id,
                Entry {
                    conn: conn.clone(),
                    close,
                },
            );
            id
        };
        let guard = ConnectionGuard {
            manager: self.clone(),
            id,
            closed,
        };
        let current = self.state.borrow().clone();
        if !Arc::ptr_eq(&current, admitted_under) {
            evaluate(&current, &conn)?;
        }
        Ok(guard)
    }

    /// Authorizes every open connection against `state` and closes those it
    /// denies; returns how many were closed.
    pub fn revoke_denied(&self, state: &ProxyState) -> usize {
        // Evaluated outside the lock: registrations and closes on the data
        // path do not wait for a sweep over every connection.
        let snapshot: Vec<(u64, Arc<AdmittedConnection>)> = self
            .registry()
            .open
            .iter()
            .map(|(id, e)| (*id, e.conn.clone()))
            .collect();
        let denied: Vec<(u64, Revoked)> = snapshot
            .iter()
            .filter_map(|(id, conn)| evaluate(state, conn).err().map(|r| (*id, r)))
            .collect();
        let mut closed = 0;
        for (id, reason) in denied {
            // Gone already if it ended meanwhile.
            let Some(entry) = self.registry().open.remove(&id) else {
                continue;
            };
            let c = &entry.conn;
            info!(
                transport = ?c.transport,
                src.identity = %c.src_identity.as_ref().map(ToString::to_string).unwrap_or_else(|| "-".into()),
                src.addr = %c.src_addr,
                dst.addr = %c.dst_addr,
                dst.workload = %c.dst_workload.key(),
                reason = %reason,
                "open connection closed: no longer allowed after a config change"
            );
            self.metrics.closed_by_policy();
            // The connection may be ending on its own: nothing to tell then.
            let _ = entry.close.send(reason);
            closed += 1;
        }
        closed
    }

    /// Re-authorizes the open connections on every config change, until the
    /// config's sender is gone.
    pub async fn watch_config(self: Arc<Self>, mut changes: watch::Receiver<Arc<ProxyState>>) {
        while changes.changed().await.is_ok() {
            let state = changes.borrow_and_update().clone();
            self.revoke_denied(&state);
        }
    }
}

/// Held for the life of a registered connection; deregisters on drop.
pub struct ConnectionGuard {
    manager: Arc<ConnectionManager>,
    id: u64,
    closed: oneshot::Receiver<Revoked>,
}

impl ConnectionGuard {
    /// Resolves when a config change revokes the connection (never
    /// otherwise): race it against the relay.
    pub async fn revoked(&mut self) -> Revoked {
        match (&mut self.closed).await {
            Ok(reason) => reason,
            // The sender lives in the registry until revoked or dropped with
            // this guard, so this is not reached; wait forever if it is.
            Err(_) => std::future::pending().await,
        }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.manager.registry().open.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
namespaces:
- {name: demo, labels: {istio.io/dataplane-mode: ambient}}
workloads:
- {name: client, namespace: demo, serviceAccount: client, node: node-a, ip: 10.0.0.1, labels: {app: client}}
- {name: srv, namespace: demo, serviceAccount: server, node: node-b, ip: 10.0.0.2, labels: {app: srv}}
"#;

    const DENY_CLIENT: &str = r#"
policies:
- apiVersion: security.istio.io/v1
  kind: AuthorizationPolicy
  metadata: {name: deny-client, namespace: demo}
  spec:
    selector: {matchLabels: {app: srv}}
    action: DENY
    rules: [{from: [{source: {principals: [cluster.local/ns/demo/sa/client]}}]}]
"#;

    const STRICT: &str = r#"
policies:
- apiVersion: security.istio.io/v1
  kind: PeerAuthentication
  metadata: {name: strict, namespace: demo}
  spec: {mtls: {mode: STRICT}}
"#;

    fn state(extra: &str) -> Arc<ProxyState> {
        Arc::new(mesh_model::config::parse_state(&format!("{BASE}{extra}")).unwrap())
    }

    fn conn(state: &ProxyState, transport: Transport, from: &str) -> AdmittedConnection {
        let dst: SocketAddr = "10.0.0.2:8080".parse().unwrap();
        AdmittedConnection {
            transport,
            src_identity: (transport == Transport::Hbone)
                .then(|| Identity::new("cluster.local", "demo", from)),
            src_addr: "10.0.0.1:40000".parse().unwrap(),
            dst_addr: dst,
            dst_workload: state.workload_arc_by_ip(dst.ip()).unwrap(),
        }
    }

    #[tokio::test]
    async fn a_deny_closes_the_connections_it_matches_and_only_those() {
        let s0 = state("");
        let (tx, rx) = watch::channel(s0.clone());
        let metrics = Arc::new(Metrics::default());
        let m = ConnectionManager::new(rx.clone(), metrics.clone());
        tokio::spawn(m.clone().watch_config(rx));
        let mut client = m
            .register(conn(&s0, Transport::Hbone, "client"), &s0)
            .unwrap();
        let mut other = m
            .register(conn(&s0, Transport::Hbone, "other"), &s0)
            .unwrap();
        assert_eq!(m.open(), 2);

        tx.send_replace(state(DENY_CLIENT));
        let reason = tokio::time::timeout(std::time::Duration::from_secs(1), client.revoked())
            .await
            .expect("the denied connection was not closed");
        assert_eq!(
            reason,
            Revoked::Policy(Reason::DeniedBy("demo/deny-client".into()))
        );
        let kept =
            tokio::time::timeout(std::time::Duration::from_millis(100), other.revoked()).await;
        assert!(
            kept.is_err(),
            "a connection the DENY does not match was closed"
        );
        assert!(metrics
            .render()
            .contains("ambit_connections_closed_by_policy_total 1\n"));
        // Revoked entries leave the registry, and guards remove theirs.
        assert_eq!(m.open(), 1);
        drop(client);
        drop(other);
        assert_eq!(m.open(), 0);
    }

    #[test]
    fn strict_closes_plaintext_but_not_mtls() {
        let s0 = state("");
        let (tx, rx) = watch::channel(s0.clone());
        let m = ConnectionManager::new(rx, Arc::new(Metrics::default()));
        let mut plain = m
            .register(conn(&s0, Transport::Plaintext, "-"), &s0)
            .unwrap();
        let _mtls = m
            .register(conn(&s0, Transport::Hbone, "client"), &s0)
            .unwrap();
        let strict = state(STRICT);
        tx.send_replace(strict.clone());
        assert_eq!(m.revoke_denied(&strict), 1);
        assert_eq!(plain.closed.try_recv(), Ok(Revoked::Strict(8080)));
        assert_eq!(m.open(), 1);
    }

    /// A change between admission and registration is caught at
    /// registration: the watcher may have swept before the entry existed.
    #[test]
    fn registering_under_a_stale_config_checks_the_current_one() {
        let s0 = state("");
        let (tx, rx) = watch::channel(s0.clone());
        let m = ConnectionManager::new(rx, Arc::new(Metrics::default()));
        tx.send_replace(state(DENY_CLIENT));
        let refused = m.register(conn(&s0, Transport::Hbone, "client"), &s0);
        assert!(matches!(refused, Err(Revoked::Policy(Reason::DeniedBy(_)))));
        assert_eq!(m.open(), 0, "a refused registration stays registered");
    }

    #[test]
    fn a_workload_that_left_the_config_is_judged_as_admitted() {
        let s0 = state("");
        let c = conn(&s0, Transport::Hbone, "client");
        let gone = Arc::new(
            mesh_model::config::parse_state(&format!(
                "namespaces:\n- {{name: demo}}\n{}",
                DENY_CLIENT
            ))
            .unwrap(),
        );
        assert!(matches!(
            evaluate(&gone, &c),
            Err(Revoked::Policy(Reason::DeniedBy(_)))
        ));
        assert_eq!(evaluate(&state(""), &c), Ok(()));
    }
}
