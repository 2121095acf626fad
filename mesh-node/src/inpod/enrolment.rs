//! Pod enrolment: keeping the node's set of captured pods equal to what the
//! config says (pods on this node, in a namespace that opted in).
//!
//! Enrolling a pod opens its three listeners inside its netns, registers the
//! netns and listeners with the kernel programs (a map update and an
//! sk_lookup link — no program is reloaded), and starts the accept loops.
//! Un-enrolling stops them and removes the kernel state.
//!
//! A pod that cannot be enrolled (a port mesh-node needs is taken in its
//! netns, a kernel map is full) is kept in [`EnrolmentStatus`] with its
//! error until it enrols or leaves the config: the admin server answers
//! not-ready naming it, the metrics count it, and the next reconcile (a
//! config change, or the periodic retry while any pod fails) tries again.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, error, info};

use super::delivery_routes::{self, DeliveryRoutesError, InstalledRoutes};
use super::PodNetns;
use crate::ebpf::{EnrolledPod, MeshPrograms, PodEnrolment};
use crate::proxy::{self, ConnectionManager, MeshPorts, Metrics, PodContext};
use mesh_hbone::{HboneClient, SocketFactory};
use mesh_identity::{CertStore, Identity};
use mesh_model::state::ProxyState;

#[derive(Debug, thiserror::Error)]
pub enum EnrolmentError {
    #[error("pod {pod}: no network namespace path in its workload entry")]
    NoNetns { pod: String },
    #[error("pod {pod}: listening on {addr} in its netns: {source}")]
    Listen {
        pod: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
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

/// Why one pod is not enrolled, and since when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnrolmentFailure {
    /// The last attempt's error.
    pub error: String,
    /// Attempts that failed in a row.
    pub attempts: u64,
    pub first_failed_at: SystemTime,
    pub last_failed_at: SystemTime,
}

/// The node's enrolment as the operator sees it (admin server, metrics).
/// Bounded by the pods the config puts on this node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnrolmentStatus {
    /// `namespace/name` of each enrolled pod.
    pub enrolled: Vec<String>,
    /// `namespace/name` of each pod that should be enrolled and is not.
    pub failures: BTreeMap<String, EnrolmentFailure>,
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
    connections: Arc<ConnectionManager>,
    pods: BTreeMap<PodKey, RunningPod>,
    failures: BTreeMap<String, EnrolmentFailure>,
    /// Pods whose enrolment failed, held in the kernel (captured with no
    /// listener, so refused) by netns cookie until they enrol or leave.
    held: BTreeMap<PodKey, u64>,
    status: watch::Sender<EnrolmentStatus>,
}

impl PodEnrolments {
    pub fn new(
        node: &str,
        programs: Arc<Mutex<MeshPrograms>>,
        certs: Arc<CertStore>,
        state: watch::Receiver<Arc<ProxyState>>,
        metrics: Arc<Metrics>,
        connections: Arc<ConnectionManager>,
        status: watch::Sender<EnrolmentStatus>,
    ) -> Self {
        PodEnrolments {
            node: node.to_string(),
            programs,
            certs,
            state,
            metrics,
            connections,
            pods: BTreeMap::new(),
            failures: BTreeMap::new(),
            held: BTreeMap::new(),
            status,
        }
    }

    pub fn enrolled(&self) -> usize {
        self.pods.len()
    }

    /// How many pods should be enrolled and are not.
    pub fn failing(&self) -> usize {
        self.failures.len()
    }

    /// Notes a failed attempt for `pod`; logged as an error when it is new
    /// or its error changed, so a retry loop does not flood the log.
    fn failed(&mut self, pod: String, e: &EnrolmentError) {
        let now = SystemTime::now();
        let error = e.to_string();
        self.metrics.enrolment_failed();
        match self.failures.get_mut(&pod) {
            Some(f) if f.error == error => {
                f.attempts += 1;
                f.last_failed_at = now;
                debug!(%pod, attempts = f.attempts, error = %e, "pod enrolment still fails");
            }
            _ => {
                error!(%pod, error = %e, "pod enrolment failed");
                self.failures.insert(
                    pod,
                    EnrolmentFailure {
                        error,
                        attempts: 1,
                        first_failed_at: now,
                        last_failed_at: now,
                    },
                );
            }
        }
    }

    fn publish(&self) {
        self.metrics.set_enrolments_failing(self.failures.len());
        let status = EnrolmentStatus {
            enrolled: self
                .pods
                .keys()
                .map(|k| format!("{}/{}", k.namespace, k.name))
                .collect(),
            failures: self.failures.clone(),
        };
        self.status.send_if_modified(|s| {
            let changed = *s != status;
            *s = status;
            changed
        });
    }

    /// Brings the enrolled set in line with `state`. Errors for one pod are
    /// kept (see [`EnrolmentStatus`]) and do not stop the others.
    pub fn reconcile(&mut self, state: &ProxyState) {
        let mut desired = BTreeMap::new();
        let mut wanted = std::collections::BTreeSet::new();
        let mut unenrollable = Vec::new();
        for w in state.local_workloads(&self.node) {
            if !state.is_ambient(w) {
                continue;
            }
            wanted.insert(w.key());
            let Some(netns) = w.netns.clone() else {
                unenrollable.push((w.key(), EnrolmentError::NoNetns { pod: w.key() }));
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
        let released: Vec<PodKey> = self
            .held
            .keys()
            .filter(|k| !desired.contains_key(*k))
            .cloned()
            .collect();
        for key in released {
            self.release(&key);
        }
        // A pod that left the config (or this node) fails no more.
        self.failures.retain(|pod, _| wanted.contains(pod));
        for (pod, e) in unenrollable {
            self.failed(pod, &e);
        }
        for (key, identity) in desired {
            if self.pods.contains_key(&key) {
                continue;
            }
            let pod = format!("{}/{}", key.namespace, key.name);
            match self.enrol(&key, identity) {
                Ok(running) => {
                    info!(pod = %pod, ip = %key.ip, identity = %key.identity, "pod enrolled");
                    self.failures.remove(&pod);
                    // The kernel adopted the held pod with the enrolment.
                    self.held.remove(&key);
                    self.pods.insert(key, running);
                }
                Err(e) => {
                    self.failed(pod, &e);
                    self.hold(&key);
                }
            }
        }
        self.publish();
    }

    /// Fails a pod whose enrolment failed closed: captured with no listener,
    /// its connections are refused rather than unmeshed (issue 9, item 4).
    /// Without a netns there is nothing to hold (nor to capture).
    fn hold(&mut self, key: &PodKey) {
        let netns = match PodNetns::open(&key.netns) {
            Ok(n) => n,
            Err(e) => {
                error!(pod = %format!("{}/{}", key.namespace, key.name), error = %e, "cannot hold a pod whose enrolment failed");
                return;
            }
        };
        let held = match self.programs.lock() {
            Ok(mut p) => p.hold(&netns, key.ip),
            Err(_) => {
                error!("eBPF state poisoned");
                return;
            }
        };
        match held {
            Ok(()) => {
                self.held.insert(key.clone(), netns.cookie());
            }
            Err(e) => {
                error!(pod = %format!("{}/{}", key.namespace, key.name), error = %e, "cannot hold a pod whose enrolment failed")
            }
        }
    }

    /// Lets a held pod go: it left the config, this node or the mesh.
    fn release(&mut self, key: &PodKey) {
        let Some(cookie) = self.held.remove(key) else {
            return;
        };
        match self.programs.lock() {
            Ok(mut p) => {
                if let Err(e) = p.release(cookie) {
                    error!(pod = %key.name, error = %e, "releasing a held pod failed");
                }
            }
            Err(_) => error!("eBPF state poisoned"),
        }
        info!(pod = %format!("{}/{}", key.namespace, key.name), "held pod released");
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
        netns.enable_listener_migration().map_err(io)?;
        let (lo, any): (IpAddr, IpAddr) = match key.ip {
            IpAddr::V4(_) => (Ipv4Addr::LOCALHOST.into(), Ipv4Addr::UNSPECIFIED.into()),
            IpAddr::V6(_) => (Ipv6Addr::LOCALHOST.into(), Ipv6Addr::UNSPECIFIED.into()),
        };
        let listen = |addr: SocketAddr| {
            netns.listen(addr).map_err(|source| EnrolmentError::Listen {
                pod: pod.to_string(),
                addr,
                source,
            })
        };
        let outbound = listen(SocketAddr::new(lo, mesh_common::OUTBOUND_PORT))?;
        let plaintext = listen(SocketAddr::new(any, mesh_common::INBOUND_PLAINTEXT_PORT))?;
        let hbone = listen(SocketAddr::new(any, mesh_common::HBONE_PORT))?;
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
            connections: self.connections.clone(),
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
