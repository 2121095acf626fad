//! A local mesh on the testbed: mesh-node daemons on the nodes, a config
//! file they watch (workloads, services, policies, certificates), a local CA
//! for the certificates, and helpers to run the sample app in pods.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use mesh_identity::{CertificateAuthority, Identity};
use serde_json::{json, Value};

use crate::curl::Curl;
use crate::probe::SendReport;
use crate::sys::ip_in;
use crate::testbed::{Pod, PodSpec, Testbed};
use crate::wait::within;

pub const TRUST_DOMAIN: &str = "cluster.local";
pub const AMBIENT_LABEL: &str = "istio.io/dataplane-mode";

/// Where the built binaries are: next to the running test or xtask binary
/// (`target/<profile>/`), unless AMBIT_BIN_DIR says otherwise.
pub fn bin_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("AMBIT_BIN_DIR") {
        return Ok(PathBuf::from(d));
    }
    let exe = std::env::current_exe()?;
    let mut dir = exe
        .parent()
        .context("no parent of current exe")?
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    Ok(dir)
}

pub fn binary(name: &str) -> Result<PathBuf> {
    let p = bin_dir()?.join(name);
    if !p.exists() {
        bail!(
            "{} is not built: run `cargo build --release --workspace` (cargo xtask test does)",
            p.display()
        );
    }
    Ok(p)
}

#[derive(Clone, Debug)]
pub struct Service {
    pub name: String,
    pub namespace: String,
    pub vip: std::net::Ipv4Addr,
    pub port: u16,
    pub target_port: u16,
    pub selector: BTreeMap<String, String>,
    /// The Service's own labels, e.g. `istio.io/use-waypoint`.
    pub labels: BTreeMap<String, String>,
}

pub struct LocalMesh {
    pub tb: Testbed,
    pub dir: PathBuf,
    pub ca: CertificateAuthority,
    namespaces: BTreeMap<String, bool>,
    /// Extra namespace labels (file mode), e.g. `istio.io/use-waypoint`.
    namespace_labels: BTreeMap<String, BTreeMap<String, String>>,
    services: Vec<Service>,
    policies: Vec<Value>,
    nodes: BTreeMap<String, usize>,
    /// Extra top-level config written verbatim (e.g. to break the file on purpose).
    pub raw_override: Option<String>,
    /// Set by `use_controller`: config goes through mesh-controller.
    controller: Option<usize>,
}

/// Where mesh-controller listens in controller mode: an address on the wire
/// bridge, reachable from every node's netns.
pub const CONTROLLER_IP: &str = "192.168.77.254";
pub const CONTROLLER_PORT: u16 = 15010;

impl LocalMesh {
    /// A testbed with these nodes (no mesh-node started yet).
    pub fn new(nodes: &[&str]) -> Result<LocalMesh> {
        let mut tb = Testbed::new()?;
        for n in nodes {
            tb.add_node(n)?;
        }
        let dir = std::env::temp_dir().join(&tb.id);
        std::fs::create_dir_all(&dir)?;
        let ca =
            CertificateAuthority::self_signed(TRUST_DOMAIN).context("creating the local CA")?;
        std::fs::write(dir.join("root-cert.pem"), ca.root_pem())?;
        Ok(LocalMesh {
            tb,
            dir,
            ca,
            namespaces: BTreeMap::new(),
            namespace_labels: BTreeMap::new(),
            services: Vec::new(),
            policies: Vec::new(),
            nodes: BTreeMap::new(),
            raw_override: None,
            controller: None,
        })
    }

    /// The smallest useful mesh: namespace `demo` (ambient or not), pod
    /// `client` (sa client) on node-a and pod `srv` (sa server, app=srv) on
    /// node-b, mesh-node running on both and the sample server on srv:8080.
    pub fn client_and_server(ambient: bool, node_a_args: &[&str]) -> Result<LocalMesh> {
        let mut mesh = LocalMesh::new(&["node-a", "node-b"])?;
        mesh.namespace("demo", ambient);
        mesh.add_pod("node-a", PodSpec::new("client", "demo", "client"))?;
        mesh.add_pod(
            "node-b",
            PodSpec::new("srv", "demo", "server").label("app", "srv"),
        )?;
        mesh.start_node("node-a", node_a_args)?;
        mesh.start_node("node-b", &[])?;
        mesh.serve("srv", 8080, false)?;
        Ok(mesh)
    }

    /// True if a small payload from `from` to pod `to` on `port` comes back intact.
    pub fn reaches(&self, from: &str, to: &str, port: u16) -> bool {
        let Ok(pod) = self.tb.pod(to) else {
            return false;
        };
        matches!(self.send(from, SocketAddr::from((pod.ip, port)), 64, "p"), Ok(r) if r.intact)
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("mesh.yaml")
    }

    /// A namespace; `ambient` = labelled istio.io/dataplane-mode=ambient.
    pub fn namespace(&mut self, name: &str, ambient: bool) -> &mut Self {
        self.namespaces.insert(name.to_string(), ambient);
        self
    }

    /// An extra label on a namespace (written in file mode), e.g.
    /// `istio.io/use-waypoint: waypoint`.
    pub fn namespace_label(&mut self, name: &str, key: &str, value: &str) -> &mut Self {
        self.namespaces.entry(name.to_string()).or_insert(false);
        self.namespace_labels
            .entry(name.to_string())
            .or_default()
            .insert(key.to_string(), value.to_string());
        self
    }

    pub fn add_pod(&mut self, node: &str, spec: PodSpec) -> Result<Pod> {
        self.namespaces
            .entry(spec.namespace.clone())
            .or_insert(false);
        let pod = self.tb.add_pod(node, spec)?;
        let id = Identity::new(TRUST_DOMAIN, &pod.namespace, &pod.service_account);
        let cert = self
            .dir
            .join(format!("{}.{}.pem", pod.namespace, pod.service_account));
        if !cert.exists() {
            let (chain, key) = self
                .ca
                .issue(&id, Duration::from_secs(24 * 3600))
                .context("issuing a certificate")?;
            std::fs::write(&cert, chain)?;
            std::fs::write(cert.with_extension("key"), key)?;
        }
        Ok(pod)
    }

    pub fn add_service(&mut self, svc: Service) {
        self.services.push(svc);
    }

    /// Replaces the policies (Istio resources, as YAML documents).
    pub fn set_policies_yaml(&mut self, docs: &str) -> Result<()> {
        let mut out = Vec::new();
        for d in serde_yaml::Deserializer::from_str(docs) {
            let v: Value = serde::Deserialize::deserialize(d).context("policy YAML")?;
            if !v.is_null() {
                out.push(v);
            }
        }
        self.policies = out;
        Ok(())
    }

    pub fn config_value(&self) -> Value {
        let namespaces: Vec<Value> = self
            .namespaces
            .iter()
            .map(|(n, ambient)| {
                let mut labels = self.namespace_labels.get(n).cloned().unwrap_or_default();
                if *ambient {
                    labels.insert(AMBIENT_LABEL.to_string(), "ambient".to_string());
                }
                if labels.is_empty() {
                    json!({"name": n})
                } else {
                    json!({"name": n, "labels": labels})
                }
            })
            .collect();
        let workloads: Vec<Value> = self
            .tb
            .pods()
            .iter()
            .map(|p| {
                json!({
                    "name": p.name, "namespace": p.namespace, "serviceAccount": p.service_account,
                    "node": p.node, "ip": p.ip.to_string(),
                    "netns": p.netns_path().display().to_string(), "labels": p.labels,
                })
            })
            .collect();
        let services: Vec<Value> = self
            .services
            .iter()
            .map(|s| {
                let mut svc = json!({
                    "name": s.name, "namespace": s.namespace, "addresses": [s.vip.to_string()],
                    "ports": [{"name": "tcp", "port": s.port, "targetPort": s.target_port, "protocol": "TCP"}],
                    "selector": s.selector,
                });
                if !s.labels.is_empty() {
                    svc["labels"] = json!(s.labels);
                }
                svc
            })
            .collect();
        let mut ids: Vec<(String, String)> = self
            .tb
            .pods()
            .iter()
            .map(|p| (p.namespace.clone(), p.service_account.clone()))
            .collect();
        ids.sort();
        ids.dedup();
        let identities: Vec<Value> = ids
            .iter()
            .map(|(ns, sa)| {
                let cert = self.dir.join(format!("{ns}.{sa}.pem"));
                json!({
                    "identity": Identity::new(TRUST_DOMAIN, ns, sa).to_string(),
                    "certChain": cert.display().to_string(),
                    "key": cert.with_extension("key").display().to_string(),
                })
            })
            .collect();
        json!({
            "trustDomain": TRUST_DOMAIN,
            "certificates": {
                "roots": self.dir.join("root-cert.pem").display().to_string(),
                "identities": identities,
            },
            "namespaces": namespaces,
            "workloads": workloads,
            "services": services,
            "policies": self.policies,
        })
    }

    /// Writes what the nodes should know: the controller's folder in
    /// controller mode, else mesh-node's own config file.
    pub fn write_config(&self) -> Result<()> {
        if self.controller.is_some() {
            return self.write_folder();
        }
        self.write_file()
    }

    /// The controller's folder: Kubernetes-shaped Namespaces, Pods (the netns
    /// path in an annotation, as a CNI would hand it over), Services, and the
    /// Istio resources as written.
    pub fn folder(&self) -> PathBuf {
        self.dir.join("k8s")
    }

    fn write_folder(&self) -> Result<()> {
        let mut docs: Vec<Value> = Vec::new();
        for (n, ambient) in &self.namespaces {
            let mut ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}});
            // The extra labels too (`istio.io/use-waypoint` declares a waypoint).
            let mut labels = self.namespace_labels.get(n).cloned().unwrap_or_default();
            if *ambient {
                labels.insert(AMBIENT_LABEL.to_string(), "ambient".to_string());
            }
            if !labels.is_empty() {
                ns["metadata"]["labels"] = json!(labels);
            }
            docs.push(ns);
        }
        for p in self.tb.pods() {
            docs.push(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": p.name, "namespace": p.namespace, "labels": p.labels,
                    "annotations": {"ambit.io/netns": p.netns_path().display().to_string()}},
                "spec": {"nodeName": p.node, "serviceAccountName": p.service_account},
                "status": {"podIP": p.ip.to_string()},
            }));
        }
        for s in &self.services {
            let mut svc = json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": s.name, "namespace": s.namespace},
                "spec": {"clusterIP": s.vip.to_string(), "selector": s.selector,
                    "ports": [{"name": "tcp", "port": s.port, "targetPort": s.target_port, "protocol": "TCP"}]},
            });
            if !s.labels.is_empty() {
                svc["metadata"]["labels"] = json!(s.labels);
            }
            docs.push(svc);
        }
        docs.extend(self.policies.iter().cloned());
        let mut text = String::new();
        for d in &docs {
            text.push_str("---\n");
            text.push_str(&serde_yaml::to_string(d)?);
        }
        if let Some(raw) = &self.raw_override {
            text = raw.clone();
        }
        let dir = self.folder();
        std::fs::create_dir_all(&dir)?;
        let tmp = self.dir.join(".mesh-k8s.yaml.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, dir.join("mesh.yaml"))?;
        Ok(())
    }

    /// Runs mesh-controller (folder source, CA, xDS) on the wire; nodes
    /// started afterwards get their config and certificates from it.
    pub fn use_controller(&mut self) -> Result<()> {
        ip_in(
            &self.tb.wire_netns,
            &["addr", "add", &format!("{CONTROLLER_IP}/24"), "dev", "br0"],
        )?;
        // Routes back to the pods: waypoints run in pods and talk to the
        // controller from their pod address, as in a cluster.
        for n in self.tb.nodes() {
            ip_in(
                &self.tb.wire_netns,
                &[
                    "route",
                    "add",
                    &format!("10.10.{}.0/24", n.index),
                    "via",
                    &n.wire_ip.to_string(),
                ],
            )?;
        }
        self.controller = Some(usize::MAX);
        self.write_folder()?;
        self.start_controller()
    }

    /// Starts (or restarts) the controller process.
    pub fn start_controller(&mut self) -> Result<()> {
        let mut cmd = Command::new(binary("mesh-controller")?);
        cmd.arg("--folder")
            .arg(self.folder())
            .args(["--listen", &format!("{CONTROLLER_IP}:{CONTROLLER_PORT}")])
            .args([
                "--status-listen",
                &format!("{CONTROLLER_IP}:{CONTROLLER_STATUS_PORT}"),
            ])
            .arg("--ca-dir")
            .arg(self.dir.join("ca"))
            .arg("--bootstrap-dir")
            .arg(self.dir.join("bootstrap"))
            .env(
                "RUST_LOG",
                std::env::var("AMBIT_LOG").unwrap_or_else(|_| "info".into()),
            );
        let wire = self.tb.wire_netns.clone();
        let idx = self.tb.spawn("mesh-controller", cmd, Some(&wire), None)?;
        self.tb.with_proc(idx, |p| {
            p.wait_for_line("mesh-controller serving", Duration::from_secs(20))
        })??;
        self.controller = Some(idx);
        Ok(())
    }

    /// Kills the controller (SIGKILL, as a crash would).
    pub fn kill_controller(&mut self) -> Result<()> {
        let idx = self.controller.context("no controller")?;
        self.tb.with_proc(idx, |p| p.kill())
    }

    /// Lines the controller has logged.
    pub fn controller_log(&self) -> Result<Vec<String>> {
        let idx = self.controller.context("no controller")?;
        self.tb.with_proc(idx, |p| p.lines())
    }

    /// Writes mesh-node's own config file atomically (the watcher never
    /// sees half a file).
    fn write_file(&self) -> Result<()> {
        let text = match &self.raw_override {
            Some(raw) => raw.clone(),
            None => serde_yaml::to_string(&self.config_value())?,
        };
        let tmp = self.dir.join(".mesh.yaml.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, self.config_path())?;
        Ok(())
    }

    /// Starts mesh-node on `node` and waits until it reports ready.
    pub fn start_node(&mut self, node: &str, extra_args: &[&str]) -> Result<()> {
        self.write_config()?;
        let n = self.tb.node(node)?.clone();
        let mut cmd = Command::new(binary("mesh-node")?);
        if self.controller.is_some() {
            let boot = self.dir.join("bootstrap");
            cmd.args([
                "--xds-address",
                &format!("http://{CONTROLLER_IP}:{CONTROLLER_PORT}"),
            ])
            .arg("--bootstrap-token")
            .arg(boot.join(format!("{node}.token")))
            .arg("--xds-roots")
            .arg(boot.join("root-cert.pem"));
        } else {
            cmd.arg("--config").arg(self.config_path());
        }
        cmd.args(["--node", node, "--cgroup"])
            .arg(&n.cgroup)
            .arg("--pin-dir")
            .arg(self.tb.pin_dir(node))
            .args(extra_args)
            // Extra flags for every mesh-node, e.g. AMBIT_NODE_ARGS=--fast-path.
            .args(
                std::env::var("AMBIT_NODE_ARGS")
                    .unwrap_or_default()
                    .split_whitespace(),
            )
            .env(
                "RUST_LOG",
                std::env::var("AMBIT_LOG").unwrap_or_else(|_| "info".into()),
            );
        let idx = self
            .tb
            .spawn_in_node(node, &format!("mesh-node@{node}"), cmd, None)?;
        self.nodes.insert(node.to_string(), idx);
        self.tb.with_proc(idx, |p| {
            p.wait_for_line("mesh-node ready", Duration::from_secs(20))
        })??;
        Ok(())
    }

    /// The process index of a node's mesh-node.
    pub fn node_proc(&self, node: &str) -> Result<usize> {
        self.nodes
            .get(node)
            .copied()
            .with_context(|| format!("mesh-node not started on {node}"))
    }

    /// Lines mesh-node on `node` has logged.
    pub fn node_log(&self, node: &str) -> Result<Vec<String>> {
        let idx = self.node_proc(node)?;
        self.tb.with_proc(idx, |p| p.lines())
    }

    /// Starts the sample server in `pod` on `port` and waits until it listens.
    pub fn serve(&self, pod: &str, port: u16, sink: bool) -> Result<usize> {
        self.serve_at(pod, Ipv4Addr::UNSPECIFIED.into(), port, sink)
    }

    /// Starts the sample server in `pod` on `bind:port` only (e.g. 127.0.0.1
    /// or the pod's IP) and waits until it listens.
    pub fn serve_at(&self, pod: &str, bind: IpAddr, port: u16, sink: bool) -> Result<usize> {
        let mut cmd = Command::new(binary("ambit-probe")?);
        cmd.args(["serve", "--name", pod, "--port", &port.to_string()]);
        cmd.args(["--bind", &bind.to_string()]);
        if sink {
            cmd.arg("--sink");
        }
        let idx = self.tb.spawn_in_pod(pod, &format!("{pod}:{port}"), cmd)?;
        self.tb.with_proc(idx, |p| {
            p.wait_for_line("listening", Duration::from_secs(10))
        })??;
        Ok(idx)
    }

    /// Sends `bytes` from `pod` to `to` and returns the probe's report.
    pub fn send(&self, pod: &str, to: SocketAddr, bytes: u64, marker: &str) -> Result<SendReport> {
        let mut cmd = Command::new(binary("ambit-probe")?);
        cmd.args([
            "send",
            "--to",
            &to.to_string(),
            "--bytes",
            &bytes.to_string(),
            "--marker",
            marker,
            "--timeout-secs",
            "20",
        ]);
        let out = self.tb.run_in_pod(pod, cmd, Duration::from_secs(120))?;
        serde_json::from_str(out.trim()).with_context(|| format!("probe printed {out:?}"))
    }

    /// Waits up to `timeout` for a node's log to contain `needle`.
    pub fn wait_node_log(&self, node: &str, needle: &str, timeout: Duration) -> Result<String> {
        let idx = self.node_proc(node)?;
        self.tb
            .with_proc(idx, |p| p.wait_for_line(needle, timeout))?
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

// ---- Controller mode: waypoints in xDS mode (see `start_waypoint_xds`) ----

/// The controller's status address (`/debug/syncz`, `/debug/config_error`).
pub const CONTROLLER_STATUS_PORT: u16 = 15014;

impl LocalMesh {
    /// Writes `text` as `<folder>/<name>` atomically (written beside, then
    /// renamed: the controller never reads half a file) and returns the
    /// instant of the rename, from which propagation is measured.
    pub fn write_folder_file(&self, name: &str, text: &str) -> Result<std::time::Instant> {
        let dir = self.folder();
        std::fs::create_dir_all(&dir)?;
        let tmp = self.dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, dir.join(name))?;
        Ok(std::time::Instant::now())
    }

    /// `GET <path>` on the controller's status server, from node-a's netns
    /// (the controller listens on the wire).
    pub fn controller_status(&self, path: &str) -> Result<String> {
        let node = self.tb.nodes().first().context("no node")?.name.clone();
        Curl::new(format!(
            "http://{CONTROLLER_IP}:{CONTROLLER_STATUS_PORT}{path}"
        ))
        .max_time(Duration::from_secs(5))
        .in_node(&self.tb, &node)
        .map(|r| r.body)
    }

    /// The bootstrap token file the controller issues to waypoint `ns/pod`.
    pub fn waypoint_token(&self, pod: &str, ns: &str) -> PathBuf {
        // The node id `waypoint~<ns>~<name>` (mesh_proto::waypoint_id).
        self.dir
            .join("bootstrap")
            .join(format!("waypoint~{ns}~{pod}.token"))
    }

    /// Starts the waypoint binary in xDS mode in pod `pod` of namespace
    /// `ns` (declared by `istio.io/use-waypoint: <pod>` on `ns`), with the
    /// token the controller wrote, and waits until it serves.
    pub fn start_waypoint_xds(&mut self, pod: &str, ns: &str, args: &[&str]) -> Result<usize> {
        if self.controller.is_none() {
            bail!("start_waypoint_xds needs the controller (use_controller)");
        }
        let token = self.waypoint_token(pod, ns);
        // The controller issues it once it has read the namespace and the pod.
        if within(Duration::from_secs(10), || token.exists()).is_none() {
            bail!("the controller wrote no token {}", token.display());
        }
        let boot = self.dir.join("bootstrap");
        let mut cmd = Command::new(binary("waypoint")?);
        cmd.args([
            "--xds-address",
            &format!("http://{CONTROLLER_IP}:{CONTROLLER_PORT}"),
        ])
        .arg("--bootstrap-token")
        .arg(&token)
        .arg("--xds-roots")
        .arg(boot.join("root-cert.pem"))
        .args(["--name", pod, "--namespace", ns])
        .args(args)
        .env(
            "RUST_LOG",
            std::env::var("AMBIT_LOG").unwrap_or_else(|_| "info".into()),
        );
        let idx = self.tb.spawn_in_pod(pod, &format!("waypoint@{pod}"), cmd)?;
        self.tb
            .with_proc(idx, |p| {
                p.wait_for_line("waypoint ready", Duration::from_secs(20))
            })?
            .context("the waypoint (xDS mode) did not start")?;
        Ok(idx)
    }
}

impl Drop for LocalMesh {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
