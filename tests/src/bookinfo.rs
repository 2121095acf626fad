//! Bookinfo on the testbed, for the L7 end-to-end tests and the waypoint
//! benchmark: namespace `bookinfo` is ambient and uses the waypoint
//! `waypoint`; productpage calls details and reviews, reviews v2 and v3
//! call ratings (as the seeds' walkthroughs have it), each pod running the
//! HTTP sample app (`ambit-probe http`), spread over two nodes.
//!
//! The waypoint runs as its own binary in its own pod (not enrolled:
//! `istio.io/dataplane-mode: none`), speaking HBONE in and out, with the
//! L7 resources a test gives it; a test can restart it with others.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::http_app::HttpLoadReport;
use crate::mesh::{binary, LocalMesh, Service};
use crate::testbed::PodSpec;

pub const NAMESPACE: &str = "bookinfo";
pub const PORT: u16 = 9080;

/// One pod of the application.
#[derive(Clone, Debug)]
pub struct Backend {
    pub pod: String,
    pub app: String,
    pub version: String,
    pub node: String,
    pub fail_every: Option<u64>,
    pub fail_status: u16,
    pub delay_ms: u64,
    pub calls: Vec<String>,
    /// Answer this many bytes instead of JSON (benchmarks).
    pub payload: Option<usize>,
}

impl Backend {
    pub fn new(app: &str, version: &str, node: &str) -> Backend {
        Backend {
            pod: format!("{app}-{version}"),
            app: app.into(),
            version: version.into(),
            node: node.into(),
            fail_every: None,
            fail_status: 503,
            delay_ms: 0,
            calls: Vec::new(),
            payload: None,
        }
    }

    /// Answer `bytes` bytes, no JSON, no log line (benchmarks).
    pub fn answering(mut self, bytes: usize) -> Backend {
        self.payload = Some(bytes);
        self
    }

    /// Answer every `n`th request `status`.
    pub fn failing_every(mut self, n: u64, status: u16) -> Backend {
        self.fail_every = Some(n);
        self.fail_status = status;
        self
    }

    pub fn slow(mut self, ms: u64) -> Backend {
        self.delay_ms = ms;
        self
    }

    pub fn calling(mut self, apps: &[&str]) -> Backend {
        self.calls = apps.iter().map(|a| url(a, &format!("/{a}"))).collect();
        self
    }
}

/// The service VIP of each bookinfo app.
pub fn vip(app: &str) -> Ipv4Addr {
    match app {
        "details" => Ipv4Addr::new(10, 96, 0, 31),
        "ratings" => Ipv4Addr::new(10, 96, 0, 32),
        "reviews" => Ipv4Addr::new(10, 96, 0, 33),
        "productpage" => Ipv4Addr::new(10, 96, 0, 34),
        _ => Ipv4Addr::new(10, 96, 0, 39),
    }
}

/// `http://<vip of app>:9080<path>`.
pub fn url(app: &str, path: &str) -> String {
    format!("http://{}:{PORT}{path}", vip(app))
}

/// The whole application as the seeds walk through it.
pub fn standard() -> Vec<Backend> {
    vec![
        Backend::new("productpage", "v1", "node-a").calling(&["details", "reviews"]),
        Backend::new("details", "v1", "node-b"),
        Backend::new("reviews", "v1", "node-a"),
        Backend::new("reviews", "v2", "node-b").calling(&["ratings"]),
        Backend::new("reviews", "v3", "node-a").calling(&["ratings"]),
        Backend::new("ratings", "v1", "node-b"),
    ]
}

pub struct Bookinfo {
    pub mesh: LocalMesh,
    servers: BTreeMap<String, usize>,
    waypoint: Option<usize>,
    generation: u32,
}

impl Bookinfo {
    /// Nodes `node-a` and `node-b` with mesh-node, the `client` pod on
    /// node-a, the waypoint pod on node-b, and `backends` serving.
    pub fn start(backends: &[Backend]) -> Result<Bookinfo> {
        Self::start_with(backends, &[])
    }

    /// Like [`Self::start`], with extra pods `(node, spec, ambient)`
    /// outside bookinfo (e.g. a direct pair for a benchmark); `ambient`
    /// enrols the pod's namespace.
    pub fn start_with(backends: &[Backend], extra: &[(&str, PodSpec, bool)]) -> Result<Bookinfo> {
        Self::start_mode(backends, extra, false)
    }

    /// `controlled`: the nodes take their config from mesh-controller.
    fn start_mode(
        backends: &[Backend],
        extra: &[(&str, PodSpec, bool)],
        controlled: bool,
    ) -> Result<Bookinfo> {
        let mut mesh = LocalMesh::new(&["node-a", "node-b"])?;
        mesh.namespace(NAMESPACE, true).namespace_label(
            NAMESPACE,
            "istio.io/use-waypoint",
            "waypoint",
        );
        mesh.add_pod("node-a", PodSpec::new("client", NAMESPACE, "client"))?;
        mesh.add_pod(
            "node-b",
            PodSpec::new("waypoint", NAMESPACE, "waypoint")
                .label("istio.io/dataplane-mode", "none")
                .label("gateway.istio.io/managed", "istio.io-mesh-controller"),
        )?;
        for (node, spec, ambient) in extra {
            mesh.namespace(&spec.namespace, *ambient);
            mesh.add_pod(node, spec.clone())?;
        }
        let mut apps: Vec<&str> = Vec::new();
        for b in backends {
            mesh.add_pod(
                &b.node,
                PodSpec::new(&b.pod, NAMESPACE, &format!("bookinfo-{}", b.app))
                    .label("app", &b.app)
                    .label("version", &b.version),
            )?;
            if !apps.contains(&b.app.as_str()) {
                apps.push(&b.app);
            }
        }
        for app in apps {
            mesh.add_service(Service {
                name: app.into(),
                namespace: NAMESPACE.into(),
                vip: vip(app),
                port: PORT,
                target_port: PORT,
                selector: BTreeMap::from([("app".into(), app.into())]),
                labels: BTreeMap::new(),
            });
        }
        if controlled {
            mesh.use_controller()?;
        }
        mesh.start_node("node-a", &[])?;
        mesh.start_node("node-b", &[])?;
        let mut me = Bookinfo {
            mesh,
            servers: BTreeMap::new(),
            waypoint: None,
            generation: 0,
        };
        for b in backends {
            me.spawn_server(b)?;
        }
        Ok(me)
    }

    fn spawn_server(&mut self, b: &Backend) -> Result<()> {
        let mut cmd = Command::new(binary("ambit-probe")?);
        cmd.args(["http", "--name", &b.pod, "--port", &PORT.to_string()]);
        if let Some(n) = b.fail_every {
            cmd.args(["--fail-every", &n.to_string()]);
            cmd.args(["--fail-status", &b.fail_status.to_string()]);
        }
        if b.delay_ms > 0 {
            cmd.args(["--delay-ms", &b.delay_ms.to_string()]);
        }
        for c in &b.calls {
            cmd.args(["--call", c]);
        }
        if let Some(n) = b.payload {
            cmd.args(["--payload", &n.to_string()]);
        }
        let idx = self
            .mesh
            .tb
            .spawn_in_pod(&b.pod, &format!("{}:http", b.pod), cmd)?;
        self.mesh.tb.with_proc(idx, |p| {
            p.wait_for_line("listening", Duration::from_secs(10))
        })??;
        self.servers.insert(b.pod.clone(), idx);
        Ok(())
    }
    /// (Re)starts the waypoint with these L7 resources (YAML documents).
    /// Resources without a namespace are put in `bookinfo`, as
    /// `kubectl apply -n bookinfo` would.
    pub fn start_waypoint(&mut self, l7_yaml: &str) -> Result<()> {
        self.start_waypoint_with(l7_yaml, &[])
    }

    /// Like [`Self::start_waypoint`], with extra waypoint arguments.
    pub fn start_waypoint_with(&mut self, l7_yaml: &str, args: &[&str]) -> Result<()> {
        self.stop_waypoint()?;
        self.generation += 1;
        let mut docs = vec![serde_yaml::to_string(&self.mesh.config_value())?];
        docs.extend(in_namespace(l7_yaml, NAMESPACE)?);
        let path = self
            .mesh
            .dir()
            .join(format!("waypoint-{}.yaml", self.generation));
        std::fs::write(&path, docs.join("---\n"))?;
        let mut cmd = Command::new(binary("waypoint")?);
        cmd.arg("--config")
            .arg(&path)
            .args(["--name", "waypoint"])
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("AMBIT_LOG").unwrap_or_else(|_| "info".into()),
            );
        let idx = self.mesh.tb.spawn_in_pod("waypoint", "waypoint", cmd)?;
        self.mesh
            .tb
            .with_proc(idx, |p| {
                p.wait_for_line("waypoint ready", Duration::from_secs(10))
            })?
            .context("the waypoint did not start")?;
        self.waypoint = Some(idx);
        Ok(())
    }

    pub fn stop_waypoint(&mut self) -> Result<()> {
        if let Some(idx) = self.waypoint.take() {
            self.mesh.tb.with_proc(idx, |p| {
                p.signal(libc::SIGTERM);
                if p.wait_timeout(Duration::from_secs(10)).is_none() {
                    p.kill();
                }
            })?;
        }
        Ok(())
    }

    /// The waypoint's process id.
    pub fn waypoint_pid(&self) -> Result<u32> {
        let Some(idx) = self.waypoint else {
            bail!("the waypoint is not running");
        };
        self.mesh.tb.with_proc(idx, |p| p.pid())
    }

    /// Starts the HTTP app in any pod (e.g. an extra pod of [`Self::start_with`]).
    pub fn serve_http(&mut self, pod: &str, b: &Backend) -> Result<()> {
        let mut b = b.clone();
        b.pod = pod.to_string();
        self.spawn_server(&b)
    }

    /// Runs the load client in any pod.
    pub fn load_from(&self, pod: &str, url: &str, args: &[&str]) -> Result<HttpLoadReport> {
        let mut cmd = Command::new(binary("ambit-probe")?);
        cmd.args(["http-load", "--url", url]).args(args);
        let out = self
            .mesh
            .tb
            .run_in_pod(pod, cmd, Duration::from_secs(300))?;
        let line = out.lines().last().unwrap_or("");
        serde_json::from_str(line).with_context(|| format!("load report: {out}"))
    }

    /// The waypoint's output so far.
    pub fn waypoint_log(&self) -> Result<Vec<String>> {
        let Some(idx) = self.waypoint else {
            bail!("the waypoint is not running");
        };
        self.mesh.tb.with_proc(idx, |p| p.lines())
    }

    /// Runs the load client in the `client` pod.
    pub fn load(
        &self,
        url: &str,
        requests: u64,
        concurrency: usize,
        headers: &[&str],
    ) -> Result<HttpLoadReport> {
        self.load_args(
            url,
            headers,
            &[
                "--requests",
                &requests.to_string(),
                "--concurrency",
                &concurrency.to_string(),
                "--keep-bodies",
                "5",
            ],
        )
    }

    /// Runs `ambit-probe http-load --url <url> <args>` in the client pod.
    pub fn load_args(&self, url: &str, headers: &[&str], args: &[&str]) -> Result<HttpLoadReport> {
        let mut all: Vec<&str> = args.to_vec();
        for h in headers {
            all.extend(["-H", h]);
        }
        self.load_from("client", url, &all)
    }

    /// The request lines `pod`'s server printed so far.
    pub fn server_log(&self, pod: &str) -> Result<Vec<String>> {
        let idx = *self
            .servers
            .get(pod)
            .with_context(|| format!("no server {pod}"))?;
        self.mesh.tb.with_proc(idx, |p| {
            p.lines()
                .into_iter()
                .filter(|l| l.starts_with("request "))
                .collect()
        })
    }

    /// How many requests reached `pod`'s server so far.
    pub fn requests_seen(&self, pod: &str) -> Result<usize> {
        Ok(self.server_log(pod)?.len())
    }
}

// ---- Controller mode: the waypoint in xDS mode ----

/// The controller folder's file holding the L7 resources.
pub const L7_FILE: &str = "l7.yaml";

/// The L7 YAML documents with `bookinfo` as the namespace of those that
/// name none (as `kubectl apply -n bookinfo` would).
pub fn in_bookinfo(l7_yaml: &str) -> Result<String> {
    Ok(in_namespace(l7_yaml, NAMESPACE)?
        .iter()
        .map(|d| format!("---\n{d}"))
        .collect())
}

/// The YAML documents of `l7_yaml`, each giving `namespace` to a resource
/// that names none (as `kubectl apply -n <namespace>` would).
pub fn in_namespace(l7_yaml: &str, namespace: &str) -> Result<Vec<String>> {
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(l7_yaml) {
        let mut v: serde_yaml::Value = serde::Deserialize::deserialize(doc)?;
        if v.is_null() {
            continue;
        }
        if let Some(meta) = v.get_mut("metadata").and_then(|m| m.as_mapping_mut()) {
            let key = serde_yaml::Value::from("namespace");
            if !meta.contains_key(&key) {
                meta.insert(key, namespace.into());
            }
        }
        docs.push(serde_yaml::to_string(&v)?);
    }
    Ok(docs)
}

impl Bookinfo {
    /// Like [`Self::start`], with mesh-controller: the nodes (and, once
    /// [`Self::start_waypoint_xds`] runs, the waypoint) get their config
    /// from it over xDS; the L7 resources go in its folder
    /// ([`Self::apply_l7`]).
    pub fn start_controlled(backends: &[Backend]) -> Result<Bookinfo> {
        Self::start_mode(backends, &[], true)
    }

    /// Replaces the L7 resources in the controller's folder; returns the
    /// instant the file was renamed into place.
    pub fn apply_l7(&self, l7_yaml: &str) -> Result<std::time::Instant> {
        self.apply_l7_raw(&in_bookinfo(l7_yaml)?)
    }

    /// Writes the folder's L7 file verbatim (e.g. a resource the controller
    /// must refuse).
    pub fn apply_l7_raw(&self, text: &str) -> Result<std::time::Instant> {
        self.mesh.write_folder_file(L7_FILE, text)
    }

    /// (Re)starts the waypoint in xDS mode: its config from the controller.
    pub fn start_waypoint_xds(&mut self, args: &[&str]) -> Result<()> {
        self.stop_waypoint()?;
        let idx = self.mesh.start_waypoint_xds("waypoint", NAMESPACE, args)?;
        self.waypoint = Some(idx);
        Ok(())
    }
}

/// `|observed - expected| <= k·σ` for a binomial(n, p) count: the bound the
/// split and abort tests hold the proxy to.
pub fn within_sigmas(observed: u64, n: u64, p: f64, k: f64) -> bool {
    let expected = n as f64 * p;
    let sigma = (n as f64 * p * (1.0 - p)).sqrt();
    (observed as f64 - expected).abs() <= k * sigma
}

// ---- ingress gateway (tests/tests/e2e_ingress.rs) ----------------------
//
// The ingress gateway pod as Istio installs it (`istio-ingressgateway` in
// `istio-system`, labels `istio: ingressgateway`), not enrolled: the
// gateway speaks HBONE itself with its own identity, as the waypoint does.

pub const INGRESS_POD: &str = "istio-ingressgateway";
pub const INGRESS_NAMESPACE: &str = "istio-system";

/// The ingress gateway pod, for [`Bookinfo::start_with`] (not ambient).
pub fn ingress_pod() -> PodSpec {
    PodSpec::new(INGRESS_POD, INGRESS_NAMESPACE, "istio-ingressgateway")
        .label("istio", "ingressgateway")
        .label("app", "istio-ingressgateway")
        .label("istio.io/dataplane-mode", "none")
}

impl Bookinfo {
    /// Starts `waypoint --role gateway` in the ingress pod with these L7
    /// resources (those without a namespace put in `default_namespace`, as
    /// `kubectl apply -n` would) and TLS Secrets from `credentials`; waits
    /// until all its listeners are up and returns its process index.
    pub fn start_ingress(
        &self,
        l7_yaml: &str,
        default_namespace: &str,
        credentials: &std::path::Path,
        args: &[&str],
    ) -> Result<usize> {
        let mut docs = vec![serde_yaml::to_string(&self.mesh.config_value())?];
        docs.extend(in_namespace(l7_yaml, default_namespace)?);
        let path = self.mesh.dir().join("ingress.yaml");
        std::fs::write(&path, docs.join("---\n"))?;
        let mut cmd = Command::new(binary("waypoint")?);
        cmd.args(["--role", "gateway", "--config"])
            .arg(&path)
            .args(["--name", INGRESS_POD, "--namespace", INGRESS_NAMESPACE])
            .arg("--credentials")
            .arg(credentials)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("AMBIT_LOG").unwrap_or_else(|_| "info".into()),
            );
        let idx = self.mesh.tb.spawn_in_pod(INGRESS_POD, "ingress", cmd)?;
        self.mesh
            .tb
            .with_proc(idx, |p| {
                p.wait_for_line("gateway ready", Duration::from_secs(10))
            })?
            .context("the ingress gateway did not start")?;
        Ok(idx)
    }
}
