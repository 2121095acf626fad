//! Pod enrolment: keeping the node's set of captured pods equal to what the
//! config says (pods on this node, in a namespace that opted in).
//!
//! Enrolling a pod opens its three listeners inside its netns, registers the
//! netns and listeners with the kernel programs (a map update and an
//! sk_lookup link — no program is reloaded), and starts the accept loops.
//! Un-enrolling stops them and removes the kernel state.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info};

use super::delivery_routes::{self, DeliveryRoutesError, InstalledRoutes};
use super::PodNetns;
use crate::ebpf::{EnrolledPod, MeshPrograms, PodEnrolment};
use crate::proxy::{self, MeshPorts, Metrics, PodContext};
use mesh_hbone::{HboneClient, SocketFactory};
use mesh_identity::{CertStore, Identity};
use mesh_model::state::ProxyState;

#[derive(Debug, thiserror::Error)]
pub enum EnrolmentError {
    #[error("pod {pod}: no network namespace path in its workload entry")]
    NoNetns { pod: String },
    #[error("pod {pod}: {source}")]
    Io {
        pod: String,
        #[source]
        source: std::io::Error,
    },
    #[error("pod {pod}: reply routing for delivery: {source}")]
    DeliveryRoutes {
        pod: String,
        #[source]
        source: DeliveryRoutesError,
    },
    #[error("pod {pod}: kernel programs: {source}")]
    Ebpf {
        pod: String,
        #[source]
        source: crate::ebpf::EbpfError,
    },
}

/// Sockets for a pod's outgoing connections are opened in its netns.
struct PodSocketFactory(Arc<PodNetns>);

impl SocketFactory for PodSocketFactory {
    fn tcp_socket(&self, dst: SocketAddr) -> std::io::Result<tokio::net::TcpSocket> {
        self.0.tcp_socket(dst)
    }
}

/// What identifies an enrolled pod; a change of any part re-enrols it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct PodKey {
    namespace: String,
    name: String,
    ip: IpAddr,
    netns: PathBuf,
    identity: String,
}

struct RunningPod {
    kernel: EnrolledPod,
    netns: Arc<PodNetns>,
    routes: InstalledRoutes,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// The node's enrolled pods.
pub struct PodEnrolments {
    node: String,
    programs: Arc<Mutex<MeshPrograms>>,
    certs: Arc<CertStore>,
    state: watch::Receiver<Arc<ProxyState>>,
    metrics: Arc<Metrics>,
    pods: BTreeMap<PodKey, RunningPod>,
}

impl PodEnrolments {
    pub fn new(
        node: &str,
        programs: Arc<Mutex<MeshPrograms>>,
        certs: Arc<CertStore>,
        state: watch::Receiver<Arc<ProxyState>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        PodEnrolments {
            node: node.to_string(),
            programs,
            certs,
            state,
            metrics,
            pods: BTreeMap::new(),
        }
    }

    pub fn enrolled(&self) -> usize {
        self.pods.len()
    }

    /// Brings the enrolled set in line with `state`. Errors for one pod are
    /// logged and do not stop the others.
    pub fn reconcile(&mut self, state: &ProxyState) {
        let mut desired = BTreeMap::new();
        for w in state.local_workloads(&self.node) {
            if !state.is_ambient(w) {
                continue;
            }
            let Some(netns) = w.netns.clone() else {
                error!(error = %EnrolmentError::NoNetns { pod: format!("{}/{}", w.namespace, w.name) }, "cannot enrol");
                continue;
            };
            let identity = state.identity_of(w);
            let key = PodKey {
                namespace: w.namespace.clone(),
                name: w.name.clone(),
                ip: w.ip,
                netns,
                identity: identity.to_string(),
            };
            desired.insert(key, identity);
        }
        let gone: Vec<PodKey> = self
            .pods
            .keys()
            .filter(|k| !desired.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            self.unenrol(&key);
        }
        for (key, identity) in desired {
            if self.pods.contains_key(&key) {
                continue;
            }
            match self.enrol(&key, identity) {
                Ok(running) => {
                    info!(pod = %format!("{}/{}", key.namespace, key.name), ip = %key.ip, identity = %key.identity, "pod enrolled");
                    self.pods.insert(key, running);
                }
                Err(e) => error!(error = %e, "pod enrolment failed"),
            }
        }
    }

    fn enrol(&self, key: &PodKey, identity: Identity) -> Result<RunningPod, EnrolmentError> {
        let pod = format!("{}/{}", key.namespace, key.name);
        let io = |source| EnrolmentError::Io {
            pod: pod.clone(),
            source,
        };
        let netns = Arc::new(PodNetns::open(&key.netns).map_err(io)?);
        let routes =
            delivery_routes::install(&netns).map_err(|source| EnrolmentError::DeliveryRoutes {
                pod: pod.clone(),
                source,
            })?;
        match self.enrol_in(key, identity, &pod, netns.clone(), routes) {
            Ok(running) => Ok(running),
            Err(e) => {
                if let Err(undo) = delivery_routes::remove(&netns, routes) {
                    error!(pod = %pod, error = %undo, "undoing the reply routing failed");
                }
                Err(e)
            }
        }
    }

    /// The rest of [`Self::enrol`], once the pod's reply routing is in place.
    fn enrol_in(
        &self,
        key: &PodKey,
        identity: Identity,
        pod: &str,
        netns: Arc<PodNetns>,
        routes: InstalledRoutes,
    ) -> Result<RunningPod, EnrolmentError> {
        let io = |source| EnrolmentError::Io {
            pod: pod.to_string(),
            source,
        };
        let (lo, any): (IpAddr, IpAddr) = match key.ip {
            IpAddr::V4(_) => (Ipv4Addr::LOCALHOST.into(), Ipv4Addr::UNSPECIFIED.into()),
            IpAddr::V6(_) => (Ipv6Addr::LOCALHOST.into(), Ipv6Addr::UNSPECIFIED.into()),
        };
        let outbound = netns
            .listen(SocketAddr::new(lo, mesh_common::OUTBOUND_PORT))
            .map_err(io)?;
        let plaintext = netns
            .listen(SocketAddr::new(any, mesh_common::INBOUND_PLAINTEXT_PORT))
            .map_err(io)?;
        let hbone = netns
            .listen(SocketAddr::new(any, mesh_common::HBONE_PORT))
            .map_err(io)?;
        let kernel = self
            .programs
            .lock()
            .map_err(|_| io(std::io::Error::other("eBPF state poisoned")))?
            .enrol(PodEnrolment {
                netns: &netns,
                pod_ip: key.ip,
                inbound_plaintext: &plaintext,
                hbone: &hbone,
            })
            .map_err(|source| EnrolmentError::Ebpf {
                pod: pod.to_string(),
                source,
            })?;
        // Every port opened here is mesh-node's; none may be delivered to.
        let mut mesh_ports = Vec::new();
        for l in [&outbound, &plaintext, &hbone] {
            mesh_ports.push(l.local_addr().map_err(io)?.port());
        }
        let (stop, stop_rx) = watch::channel(false);
        let ctx = Arc::new(PodContext {
            name: key.name.clone(),
            namespace: key.namespace.clone(),
            ip: key.ip,
            mesh_ports: MeshPorts::new(mesh_ports),
            identity: identity.clone(),
            netns: netns.clone(),
            hbone: HboneClient::new(
                self.certs.clone(),
                identity,
                Arc::new(PodSocketFactory(netns.clone())),
            ),
            certs: self.certs.clone(),
            state: self.state.clone(),
            metrics: self.metrics.clone(),
            drain: stop_rx,
        });
        let to_tokio = |l: std::net::TcpListener| tokio::net::TcpListener::from_std(l).map_err(io);
        let tasks = vec![
            tokio::spawn(proxy::outbound::run(ctx.clone(), to_tokio(outbound)?)),
            tokio::spawn(proxy::inbound_passthrough::run(
                ctx.clone(),
                to_tokio(plaintext)?,
            )),
            tokio::spawn(proxy::inbound::run(ctx, to_tokio(hbone)?)),
        ];
        Ok(RunningPod {
            kernel,
            netns,
            routes,
            stop,
            tasks,
        })
    }

    fn unenrol(&mut self, key: &PodKey) {
        let Some(running) = self.pods.remove(key) else {
            return;
        };
        let _ = running.stop.send(true);
        for t in &running.tasks {
            t.abort();
        }
        match self.programs.lock() {
            Ok(mut p) => {
                if let Err(e) = p.unenrol(running.kernel) {
                    error!(pod = %key.name, error = %e, "un-enrolment failed");
                }
            }
            Err(_) => error!("eBPF state poisoned"),
        }
        if let Err(e) = delivery_routes::remove(&running.netns, running.routes) {
            error!(pod = %key.name, error = %e, "removing the reply routing failed");
        }
        info!(pod = %format!("{}/{}", key.namespace, key.name), "pod un-enrolled");
    }

    /// Starts the drain: listeners stop accepting, HBONE connections get a
    /// GOAWAY; connections in flight go on.
    pub fn drain(&mut self) {
        for running in self.pods.values() {
            let _ = running.stop.send(true);
        }
    }
}
