//! `xds-bench`: the controller at scale, end to end.
//!
//! Generates a folder (default: 100 nodes x 100 pods, 1,000 services, 2,000
//! AuthorizationPolicies and a STRICT PeerAuthentication in each of 50
//! ambient namespaces), starts the real `mesh-controller` binary on it as a
//! child process, connects one simulated node per node (a lean delta ADS
//! client over real gRPC that subscribes to every type and ACKs every
//! response, holding nothing), and measures:
//!
//! * the initial full sync of every node;
//! * for (a) one pod's labels changed, (b) one AuthorizationPolicy added,
//!   (c) one service's port changed: the time from the file's rename into
//!   the folder to the last affected node's ACK, how many nodes received
//!   something, how many resources and bytes (encoded
//!   `DeltaDiscoveryResponse`s) were pushed;
//! * the controller's CPU seconds (utime + stime) and RSS (VmHWM, VmRSS)
//!   from `/proc/<pid>`.
//!
//! ```text
//! cargo build --release -p mesh-controller --bins
//! target/release/xds-bench --out BENCHMARKS-controller.md
//! ```

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::Parser;
use mesh_proto::envoy::config::core::v3::Node;
use mesh_proto::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use mesh_proto::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use mesh_proto::type_urls;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "xds-bench",
    about = "mesh-controller at scale: sync time, push latency, bytes, CPU, RSS"
)]
struct Args {
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    #[arg(long, default_value_t = 100)]
    pods_per_node: usize,
    #[arg(long, default_value_t = 1000)]
    services: usize,
    /// AuthorizationPolicies (plus one PeerAuthentication per namespace).
    #[arg(long, default_value_t = 2000)]
    policies: usize,
    /// Ambient namespaces.
    #[arg(long, default_value_t = 50)]
    namespaces: usize,
    /// The mesh-controller binary (default: next to this one).
    #[arg(long)]
    controller_bin: Option<PathBuf>,
    /// Write the results as Markdown here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// How long no response may arrive before a change counts as complete.
    #[arg(long, default_value_t = 1500)]
    quiet_ms: u64,
}

// ---------------------------------------------------------------- folder

fn ns_name(k: usize) -> String {
    format!("ns-{k:02}")
}
fn node_name(n: usize) -> String {
    format!("node-{n:03}")
}

/// The layout: pod `j` is on node `j / pods_per_node`, backs service
/// `j % services`, which lives in namespace `service % namespaces`.
struct Layout {
    a: Args,
}

impl Layout {
    fn pods(&self) -> usize {
        self.a.nodes * self.a.pods_per_node
    }
    fn svc_of_pod(&self, j: usize) -> usize {
        j % self.a.services
    }
    fn ns_of_svc(&self, s: usize) -> usize {
        s % self.a.namespaces
    }
    fn node_of_pod(&self, j: usize) -> usize {
        j / self.a.pods_per_node
    }
    /// Nodes running a pod of service `s`.
    fn nodes_of_svc(&self, s: usize) -> BTreeSet<usize> {
        (0..self.pods())
            .filter(|j| self.svc_of_pod(*j) == s)
            .map(|j| self.node_of_pod(j))
            .collect()
    }

    fn pod(&self, j: usize, extra_label: &str) -> String {
        let s = self.svc_of_pod(j);
        let ns = ns_name(self.ns_of_svc(s));
        let node = node_name(self.node_of_pod(j));
        let ip = format!("10.{}.{}.{}", 64 + (j >> 16), (j >> 8) & 255, j & 255);
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: app-{s}-{j}\n  namespace: {ns}\n  \
             labels: {{app: app-{s}, pod-template-hash: h{s}{extra_label}}}\n  \
             annotations: {{ambit.io/netns: /run/netns/pod-{j}}}\nspec:\n  nodeName: {node}\n  \
             serviceAccountName: sa-{s}\n  containers: [{{name: app, image: app}}]\n\
             status:\n  podIP: {ip}\n  phase: Running\n---\n"
        )
    }

    fn node_file(&self, n: usize, changed_pod: Option<usize>) -> String {
        let p = self.a.pods_per_node;
        (n * p..(n + 1) * p)
            .map(|j| {
                let extra = if Some(j) == changed_pod {
                    ", version: v2"
                } else {
                    ""
                };
                self.pod(j, extra)
            })
            .collect()
    }

    fn services_file(&self, changed: Option<usize>) -> String {
        (0..self.a.services)
            .map(|s| {
                let ns = ns_name(self.ns_of_svc(s));
                let port = if Some(s) == changed { 81 } else { 80 };
                format!(
                    "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{s}, namespace: {ns}}}\n\
                     spec:\n  clusterIP: 10.96.{}.{}\n  selector: {{app: app-{s}}}\n  \
                     ports: [{{name: http, port: {port}, targetPort: 8080, protocol: TCP}}]\n---\n",
                    s >> 8,
                    s & 255
                )
            })
            .collect()
    }

    fn policy(&self, p: usize, name: &str) -> String {
        let s = p % self.a.services;
        let ns = ns_name(self.ns_of_svc(s));
        let caller = (s + 1) % self.a.services;
        let caller_ns = ns_name(self.ns_of_svc(caller));
        // Even: ALLOW from the next service's identity; odd: DENY an IP block.
        let (action, from) = match p % 2 {
            0 => (
                "ALLOW",
                format!(
                    "[{{source: {{principals: [cluster.local/ns/{caller_ns}/sa/sa-{caller}]}}}}]"
                ),
            ),
            _ => ("DENY", "[{source: {ipBlocks: [192.0.2.0/24]}}]".to_string()),
        };
        format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
             metadata: {{name: {name}, namespace: {ns}}}\nspec:\n  \
             selector: {{matchLabels: {{app: app-{s}}}}}\n  action: {action}\n  rules:\n  \
             - from: {from}\n    to: [{{operation: {{ports: [\"8080\"]}}}}]\n---\n"
        )
    }

    fn policies_file(&self, k: usize) -> String {
        let mut out = format!(
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
             metadata: {{name: default, namespace: {}}}\nspec: {{mtls: {{mode: STRICT}}}}\n---\n",
            ns_name(k)
        );
        for p in 0..self.a.policies {
            if self.ns_of_svc(p % self.a.services) == k {
                out.push_str(&self.policy(p, &format!("authz-{p}")));
            }
        }
        out
    }

    fn write_all(&self, dir: &Path) -> anyhow::Result<u64> {
        let mut ns =
            String::from("apiVersion: v1\nkind: Namespace\nmetadata: {name: istio-system}\n---\n");
        for k in 0..self.a.namespaces {
            let _ = write!(
                ns,
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {}\n  \
                 labels: {{istio.io/dataplane-mode: ambient}}\n---\n",
                ns_name(k)
            );
        }
        write_file(dir, "namespaces.yaml", &ns)?;
        write_file(dir, "services.yaml", &self.services_file(None))?;
        for n in 0..self.a.nodes {
            write_file(
                dir,
                &format!("pods-{}.yaml", node_name(n)),
                &self.node_file(n, None),
            )?;
        }
        for k in 0..self.a.namespaces {
            write_file(
                dir,
                &format!("policies-{}.yaml", ns_name(k)),
                &self.policies_file(k),
            )?;
        }
        let mut total = 0;
        for e in std::fs::read_dir(dir)? {
            total += e?.metadata()?.len();
        }
        Ok(total)
    }
}

/// Writes atomically: a hidden temporary file (the folder source skips
/// dot files), then a rename.
fn write_file(dir: &Path, name: &str, text: &str) -> anyhow::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(name)).with_context(|| format!("renaming to {name}"))?;
    Ok(())
}

// ---------------------------------------------------------------- /proc

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of `pid` in seconds.
fn cpu_seconds(pid: &str, ticks: f64) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // Fields after the command name (which may hold spaces): state is the
    // first, utime the 12th, stime the 13th.
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return f64::NAN;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| {
        f.get(i)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (num(11) + num(12)) / ticks
}

/// `VmHWM` and `VmRSS` in MiB.
fn memory_mib(pid: &str) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(f64::NAN)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

// ---------------------------------------------------------------- clients

#[derive(Clone, Debug)]
struct Event {
    node: usize,
    ty: usize,
    /// When the ACK was handed to the stream.
    acked: Instant,
    resources: usize,
    removed: usize,
    bytes: usize,
}

#[derive(Default)]
struct Log {
    events: Vec<Event>,
    errors: Vec<String>,
    max_message: usize,
}

type Shared = Arc<Mutex<Log>>;

fn lock(log: &Shared) -> std::sync::MutexGuard<'_, Log> {
    log.lock().unwrap_or_else(|e| e.into_inner())
}

async fn node_client(addr: String, node: usize, log: Shared) {
    if let Err(e) = node_session(addr, node, &log).await {
        lock(&log).errors.push(format!("{}: {e}", node_name(node)));
    }
}

async fn node_session(addr: String, node: usize, log: &Shared) -> anyhow::Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(addr)?
        .tcp_nodelay(true)
        .connect()
        .await?;
    // Large initial responses: the default 4 MiB decode limit is lifted so
    // the bench reports their size instead of failing (see max_message).
    let mut client = AggregatedDiscoveryServiceClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    let (tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(64);
    for ty in type_urls::ALL {
        tx.send(DeltaDiscoveryRequest {
            node: Some(Node {
                id: node_name(node),
                ..Default::default()
            }),
            type_url: ty.to_string(),
            resource_names_subscribe: vec!["*".into()],
            ..Default::default()
        })
        .await?;
    }
    let mut stream = client
        .delta_aggregated_resources(tonic::Request::new(ReceiverStream::new(rx)))
        .await?
        .into_inner();
    while let Some(resp) = stream.message().await? {
        let bytes = resp.encoded_len();
        let ty = type_urls::ALL
            .iter()
            .position(|t| *t == resp.type_url)
            .unwrap_or(usize::MAX);
        tx.send(DeltaDiscoveryRequest {
            type_url: resp.type_url.clone(),
            response_nonce: resp.nonce.clone(),
            ..Default::default()
        })
        .await?;
        let acked = Instant::now();
        let mut l = lock(log);
        l.max_message = l.max_message.max(bytes);
        l.events.push(Event {
            node,
            ty,
            acked,
            resources: resp.resources.len(),
            removed: resp.removed_resources.len(),
            bytes,
        });
    }
    bail!("the controller closed the stream")
}

// ---------------------------------------------------------------- status

async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
    use http_body_util::BodyExt;
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
    let conn = tokio::spawn(conn);
    let req = http::Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes().to_vec();
    conn.abort();
    Ok((status, body))
}

/// (nodes connected with every type ACKed at its last sent nonce, NACKs).
async fn syncz(addr: SocketAddr) -> anyhow::Result<(usize, usize)> {
    let (status, body) = http_get(addr, "/debug/syncz").await?;
    if status != 200 {
        bail!("/debug/syncz: HTTP {status}");
    }
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    let mut synced = 0;
    let mut nacks = 0;
    for c in v.as_array().into_iter().flatten() {
        let types = c["types"].as_object();
        let all = types.is_some_and(|t| {
            t.len() == type_urls::ALL.len()
                && t.values()
                    .all(|s| s["acked_nonce"] == s["sent_nonce"] && s["sent_nonce"] != "")
        });
        if c["connected"] == true && all {
            synced += 1;
        }
        nacks += types
            .into_iter()
            .flat_map(|t| t.values())
            .filter(|s| !s["last_nack"].is_null())
            .count();
    }
    Ok((synced, nacks))
}

// ---------------------------------------------------------------- bench

struct Controller {
    child: Child,
    pid: String,
    log: PathBuf,
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Controller {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

struct ChangeResult {
    name: &'static str,
    expected_nodes: usize,
    nodes: usize,
    first_push_ms: f64,
    all_acked_ms: f64,
    responses: usize,
    resources: usize,
    removed: usize,
    bytes: usize,
    types: BTreeSet<&'static str>,
    cpu_s: f64,
    synced_after: usize,
}

fn short(ty: usize) -> &'static str {
    type_urls::ALL
        .get(ty)
        .and_then(|t| t.rsplit('.').next())
        .unwrap_or("?")
}

/// What every measurement needs.
struct Ctx<'a> {
    log: &'a Shared,
    ctl: &'a Controller,
    status_addr: SocketAddr,
    args: &'a Args,
    ticks: f64,
}

async fn measure_change(
    cx: &Ctx<'_>,
    name: &'static str,
    expected: &BTreeSet<usize>,
    apply: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<ChangeResult> {
    let Ctx {
        log,
        ctl,
        status_addr,
        args,
        ticks,
    } = *cx;
    let start_idx = lock(log).events.len();
    let cpu0 = cpu_seconds(&ctl.pid, ticks);
    apply()?;
    let t0 = Instant::now();
    let quiet = Duration::from_millis(args.quiet_ms);
    let deadline = t0 + Duration::from_secs(60);
    loop {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let l = lock(log);
        let new = &l.events[start_idx..];
        let seen: BTreeSet<usize> = new.iter().map(|e| e.node).collect();
        let last = new.last().map(|e| e.acked).unwrap_or(t0);
        if expected.is_subset(&seen) && !new.is_empty() && last.elapsed() >= quiet {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "{name}: {} of {} expected nodes received the change within 60 s\ncontroller log:\n{}",
                expected.intersection(&seen).count(),
                expected.len(),
                ctl.log_tail()
            );
        }
    }
    let cpu1 = cpu_seconds(&ctl.pid, ticks);
    let (synced_after, _) = syncz(status_addr).await.unwrap_or((0, 0));
    let l = lock(log);
    let new = &l.events[start_idx..];
    let ms = |i: Instant| i.duration_since(t0).as_secs_f64() * 1000.0;
    Ok(ChangeResult {
        name,
        expected_nodes: expected.len(),
        nodes: new.iter().map(|e| e.node).collect::<BTreeSet<_>>().len(),
        first_push_ms: new
            .iter()
            .map(|e| ms(e.acked))
            .fold(f64::INFINITY, f64::min),
        all_acked_ms: new.iter().map(|e| ms(e.acked)).fold(0.0, f64::max),
        responses: new.len(),
        resources: new.iter().map(|e| e.resources).sum(),
        removed: new.iter().map(|e| e.removed).sum(),
        bytes: new.iter().map(|e| e.bytes).sum(),
        types: new.iter().map(|e| short(e.ty)).collect(),
        cpu_s: cpu1 - cpu0,
        synced_after,
    })
}

fn mib(b: usize) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpus} x {cpu}, Linux {}", kernel.trim())
}

/// The 1-minute load average: other work on the machine skews the times.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.nodes == 0
        || args.pods_per_node == 0
        || args.services == 0
        || args.namespaces == 0
        || args.services < args.namespaces
    {
        bail!("nodes, pods-per-node, services and namespaces must be > 0, services >= namespaces");
    }
    let ctl_bin = match &args.controller_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .ok_or_else(|| anyhow!("no parent folder of this executable"))?
            .join("mesh-controller"),
    };
    if !ctl_bin.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p mesh-controller --bins) or pass --controller-bin",
            ctl_bin.display()
        );
    }
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(bench(args, ctl_bin))
}

async fn bench(args: Args, ctl_bin: PathBuf) -> anyhow::Result<()> {
    let load_at_start = load_average();
    let layout = Layout { a: args.clone() };
    let work = std::env::temp_dir().join(format!("xds-bench-{}", std::process::id()));
    let folder = work.join("folder");
    std::fs::create_dir_all(&folder)?;
    let _cleanup = RemoveOnDrop(work.clone());
    let t = Instant::now();
    let folder_bytes = layout.write_all(&folder)?;
    println!(
        "folder: {} pods on {} nodes, {} services, {} AuthorizationPolicies + {} PeerAuthentications in {} namespaces: {:.1} MiB of YAML (written in {:.1} s)",
        layout.pods(),
        args.nodes,
        args.services,
        args.policies,
        args.namespaces,
        args.namespaces,
        mib(folder_bytes as usize),
        t.elapsed().as_secs_f64()
    );

    let (grpc_port, status_port) = (free_port()?, free_port()?);
    let grpc: SocketAddr = ([127, 0, 0, 1], grpc_port).into();
    let status_addr: SocketAddr = ([127, 0, 0, 1], status_port).into();
    let log_path = work.join("controller.log");
    let log_file = std::fs::File::create(&log_path)?;
    let t_start = Instant::now();
    let child = Command::new(&ctl_bin)
        .arg("--folder")
        .arg(&folder)
        .arg("--listen")
        .arg(grpc.to_string())
        .arg("--status-listen")
        .arg(status_addr.to_string())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .spawn()
        .with_context(|| format!("starting {}", ctl_bin.display()))?;
    let ctl = Controller {
        pid: child.id().to_string(),
        child,
        log: log_path,
    };
    let ticks = clock_ticks();
    loop {
        if let Ok((200, _)) = http_get(status_addr, "/healthz/ready").await {
            break;
        }
        if t_start.elapsed() > Duration::from_secs(120) {
            bail!("the controller did not start:\n{}", ctl.log_tail());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let startup = t_start.elapsed();
    let cpu_startup = cpu_seconds(&ctl.pid, ticks);
    let (rss_startup, _) = memory_mib(&ctl.pid);
    println!(
        "controller ready in {:.2} s (load + validate the folder), {:.2} CPU s, RSS {:.0} MiB",
        startup.as_secs_f64(),
        cpu_startup,
        rss_startup
    );

    // Initial sync: every node connects at once.
    let log: Shared = Arc::new(Mutex::new(Log::default()));
    let t0 = Instant::now();
    for n in 0..args.nodes {
        tokio::spawn(node_client(format!("http://{grpc}"), n, log.clone()));
    }
    let want = args.nodes * type_urls::ALL.len();
    loop {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let l = lock(&log);
        if !l.errors.is_empty() {
            bail!("clients failed: {:?}\n{}", l.errors, ctl.log_tail());
        }
        let seen: BTreeSet<(usize, usize)> = l.events.iter().map(|e| (e.node, e.ty)).collect();
        if seen.len() >= want {
            break;
        }
        if t0.elapsed() > Duration::from_secs(300) {
            bail!(
                "initial sync incomplete after 300 s ({} of {want} node/type pairs)",
                seen.len()
            );
        }
    }
    let (initial_ms, initial_bytes, initial_resources, initial_max) = {
        let l = lock(&log);
        let last = l.events.iter().map(|e| e.acked).max().unwrap_or(t0);
        (
            last.duration_since(t0).as_secs_f64() * 1000.0,
            l.events.iter().map(|e| e.bytes).sum::<usize>(),
            l.events.iter().map(|e| e.resources).sum::<usize>(),
            l.max_message,
        )
    };
    let cpu_initial = cpu_seconds(&ctl.pid, ticks) - cpu_startup;
    let (hwm_initial, _) = memory_mib(&ctl.pid);
    println!(
        "initial sync of {} nodes: {:.0} ms, {} resources, {:.1} MiB pushed (largest response {:.2} MiB), controller {:.2} CPU s, peak RSS {:.0} MiB",
        args.nodes,
        initial_ms,
        initial_resources,
        mib(initial_bytes),
        mib(initial_max),
        cpu_initial,
        hwm_initial
    );

    // Idle: the folder poll alone.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (synced_idle, _) = syncz(status_addr).await?;
    let c0 = cpu_seconds(&ctl.pid, ticks);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_cpu = (cpu_seconds(&ctl.pid, ticks) - c0) / 5.0;
    println!(
        "idle: {:.1}% of a CPU (folder polled every 100 ms); /debug/syncz: {synced_idle}/{} nodes synced",
        idle_cpu * 100.0,
        args.nodes
    );

    let all: BTreeSet<usize> = (0..args.nodes).collect();
    let cx = Ctx {
        log: &log,
        ctl: &ctl,
        status_addr,
        args: &args,
        ticks,
    };
    let mut results = Vec::new();

    // (a) One pod's labels: pod 0 gains `version: v2`. Every node holds the
    // ambient pods of every node.
    let pod_node = layout.node_of_pod(0);
    let f = folder.clone();
    let node_text = layout.node_file(pod_node, Some(0));
    results.push(
        measure_change(&cx, "(a) one pod's labels changed", &all, || {
            write_file(
                &f,
                &format!("pods-{}.yaml", node_name(pod_node)),
                &node_text,
            )
        })
        .await?,
    );

    // (b) One AuthorizationPolicy added, selecting the pods of service 7:
    // only the nodes running one of them.
    let svc = 7 % args.services;
    let policy_text = layout.policy(svc, "bench-added");
    let f = folder.clone();
    results.push(
        measure_change(
            &cx,
            "(b) one AuthorizationPolicy added",
            &layout.nodes_of_svc(svc),
            || write_file(&f, "policy-added.yaml", &policy_text),
        )
        .await?,
    );

    // (c) One service's port: 80 -> 81. Every node holds every service of
    // the ambient namespaces.
    let svc = 3 % args.services;
    let services_text = layout.services_file(Some(svc));
    let f = folder.clone();
    results.push(
        measure_change(&cx, "(c) one service's port changed", &all, || {
            write_file(&f, "services.yaml", &services_text)
        })
        .await?,
    );

    let cpu_total = cpu_seconds(&ctl.pid, ticks);
    let (hwm, rss) = memory_mib(&ctl.pid);
    let (synced, nacks) = syncz(status_addr).await?;
    let errors = lock(&log).errors.clone();
    let bench_cpu = cpu_seconds("self", ticks);

    // ------------------------------------------------------------ report
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Scale: {} nodes x {} pods = {} pods, {} services, {} AuthorizationPolicies + {} PeerAuthentications, {} ambient namespaces ({:.1} MiB of YAML in {} files).\n",
        args.nodes,
        args.pods_per_node,
        layout.pods(),
        args.services,
        args.policies,
        args.namespaces,
        args.namespaces,
        mib(folder_bytes as usize),
        args.nodes + args.namespaces + 2
    );
    let _ = writeln!(md, "| phase | time | nodes reached | responses | resources sent (removed) | bytes pushed | controller CPU |");
    let _ = writeln!(md, "|---|---|---|---|---|---|---|");
    let _ = writeln!(
        md,
        "| startup (load + validate the folder) | {:.2} s | - | - | - | - | {:.2} s |",
        startup.as_secs_f64(),
        cpu_startup
    );
    let _ = writeln!(
        md,
        "| initial sync, all nodes at once | {:.0} ms to the last ACK | {} | {} | {} | {:.1} MiB (largest response {:.2} MiB) | {:.2} s |",
        initial_ms,
        args.nodes,
        want,
        initial_resources,
        mib(initial_bytes),
        mib(initial_max),
        cpu_initial
    );
    for r in &results {
        let _ = writeln!(
            md,
            "| {} | {:.0} ms to the last ACK (first push {:.0} ms) | {} of {} expected | {} ({}) | {} ({}) | {} B ({:.0} B per node) | {:.2} s |",
            r.name,
            r.all_acked_ms,
            r.first_push_ms,
            r.nodes,
            r.expected_nodes,
            r.responses,
            r.types.iter().copied().collect::<Vec<_>>().join(", "),
            r.resources,
            r.removed,
            r.bytes,
            r.bytes as f64 / r.nodes.max(1) as f64,
            r.cpu_s
        );
    }
    let _ = writeln!(md);
    let _ = writeln!(
        md,
        "Controller: peak RSS (VmHWM) {hwm:.0} MiB (after the initial sync {hwm_initial:.0} MiB, after startup {rss_startup:.0} MiB), RSS at the end {rss:.0} MiB; \
         {cpu_total:.2} CPU s in total; idle {:.1}% of a CPU (the folder poll). \
         After the run /debug/syncz shows {synced}/{} nodes connected with every type ACKed, {nacks} NACKs; client errors: {}.",
        idle_cpu * 100.0,
        args.nodes,
        if errors.is_empty() { "none".to_string() } else { errors.join("; ") }
    );
    let _ = writeln!(
        md,
        "Per change, `time` is from the rename of the changed file into the folder to the moment the last node that received something sent its ACK; it includes the folder source's poll (100 ms, and a change applies once two polls agree), re-reading and validating the whole folder, and translating for every connected node. \
         CPU per change is the controller's utime+stime over the change's window, which includes {:.1} s of quiet time at the idle rate. \
         The nodes' CPU is not counted (this bench process, {bench_cpu:.1} CPU s in all, decodes and ACKs but holds nothing).",
        args.quiet_ms as f64 / 1000.0
    );
    let _ = writeln!(
        md,
        "\nMachine: {}; 1-minute load average {load_at_start} at the start, {} at the end (the controller, the simulated nodes and anything else running share these CPUs).",
        machine(),
        load_average()
    );
    println!("\n{md}");
    for r in &results {
        if r.synced_after != args.nodes {
            println!(
                "note: after {}, /debug/syncz showed {}/{} nodes fully ACKed",
                r.name, r.synced_after, args.nodes
            );
        }
    }

    if let Some(out) = &args.out {
        let cmd = format!(
            "cargo build --release -p mesh-controller --bins && target/release/xds-bench --nodes {} --pods-per-node {} --services {} --policies {} --namespaces {} --out {}",
            args.nodes,
            args.pods_per_node,
            args.services,
            args.policies,
            args.namespaces,
            out.display()
        );
        let doc = format!(
            "## Controller at scale\n\n\
             `mesh-controller` (release build, its own process) serving one simulated node per node over real delta ADS (gRPC on loopback); each simulated node subscribes to every type and ACKs every response. \
             Targets (issue): under 1 s from a change to every affected node ACKing, under 200 MB RSS, an incremental change sending only what changed.\n\n\
             ```sh\n{cmd}\n```\n\n{md}"
        );
        std::fs::write(out, doc).with_context(|| format!("writing {}", out.display()))?;
        println!("wrote {}", out.display());
    }
    drop(ctl);
    Ok(())
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
