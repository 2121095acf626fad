//! The namespace testbed: nodes and pods made of network namespaces, veth
//! pairs, routes and cgroup2 directories, on one machine.
//!
//! Layout (addresses are private to the testbed's own namespaces, so many
//! testbeds can run at once without clashing; names carry a unique prefix):
//!
//! ```text
//!  <id>-wire  netns: bridge br0 (the "network between nodes"; capture here)
//!     │ veth per node
//!  <id>-<node> netns: eth0 192.168.77.<n>/24, forwards, /32 route per pod,
//!     │               10.10.<m>.0/24 via the other nodes
//!     │ veth per pod (node side holds the gateway 10.10.<n>.1/32)
//!  <id>-<pod>  netns: eth0 10.10.<n>.<k>/32, default via 10.10.<n>.1
//! ```
//!
//! Cgroups: `<cgroup2>/<id>/<node>/` is the node's cgroup (mesh-node attaches
//! its programs there); each pod gets `<node cgroup>/pod-<name>/`.
//!
//! Dropping the testbed (also during a panic's unwinding) kills every
//! process it started and removes every namespace and cgroup it made.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::sys::{self, cgroup2_mount, enter_in_child, ip, ip_in};
use crate::wait::eventually;

/// The prefix of every namespace and cgroup a testbed makes; `sweep_stale`
/// removes those left by processes that no longer exist.
pub const PREFIX: &str = "ambt";

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub index: u8,
    pub netns: String,
    pub wire_ip: Ipv4Addr,
    pub cgroup: PathBuf,
    pods: u8,
}

#[derive(Clone, Debug)]
pub struct Pod {
    pub name: String,
    pub node: String,
    pub namespace: String,
    pub service_account: String,
    pub labels: BTreeMap<String, String>,
    pub netns: String,
    pub ip: Ipv4Addr,
    pub cgroup: PathBuf,
}

impl Pod {
    pub fn netns_path(&self) -> PathBuf {
        sys::netns_path(&self.netns)
    }
}

/// What to create for a pod.
#[derive(Clone, Debug)]
pub struct PodSpec {
    pub name: String,
    pub namespace: String,
    pub service_account: String,
    pub labels: BTreeMap<String, String>,
}

impl PodSpec {
    pub fn new(name: &str, namespace: &str, service_account: &str) -> Self {
        PodSpec {
            name: name.into(),
            namespace: namespace.into(),
            service_account: service_account.into(),
            labels: BTreeMap::new(),
        }
    }

    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.insert(k.into(), v.into());
        self
    }
}

/// A process started in the testbed; its output lines are kept for assertions.
pub struct Proc {
    pub name: String,
    child: Child,
    output: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// All lines printed so far (stdout and stderr interleaved by arrival).
    pub fn lines(&self) -> Vec<String> {
        self.output.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Waits until a printed line contains `needle`, up to `timeout`.
    pub fn wait_for_line(&self, needle: &str, timeout: Duration) -> Result<String> {
        match eventually(timeout, || {
            self.lines().into_iter().find(|l| l.contains(needle))
        }) {
            Some((line, _)) => Ok(line),
            None => bail!(
                "{}: no line containing {needle:?} within {timeout:?}; output:\n{}",
                self.name,
                self.lines().join("\n")
            ),
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends a signal (e.g. SIGTERM for a graceful drain).
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid; no memory is shared.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, sig);
        }
    }

    /// Waits for exit up to `timeout`; returns the exit status if it exited.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        eventually(timeout, || self.child.try_wait().ok().flatten()).map(|(st, _)| st)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Testbed {
    pub id: String,
    pub wire_netns: String,
    pub cgroup: PathBuf,
    nodes: Vec<Node>,
    pods: Vec<Pod>,
    netns_made: Vec<String>,
    procs: Mutex<Vec<Proc>>,
    /// Echo process output to stderr as it arrives (set AMBIT_TEST_VERBOSE=1).
    verbose: bool,
}

impl Testbed {
    /// Creates the wire between nodes. Needs root; fails loudly without it.
    pub fn new() -> Result<Testbed> {
        sys::require_root()?;
        sweep_stale();
        let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let id = format!("{PREFIX}{}x{n}", std::process::id());
        let cgroup = cgroup2_mount()?.join(&id);
        let mut tb = Testbed {
            wire_netns: format!("{id}-wire"),
            id,
            cgroup,
            nodes: Vec::new(),
            pods: Vec::new(),
            netns_made: Vec::new(),
            procs: Mutex::new(Vec::new()),
            verbose: std::env::var_os("AMBIT_TEST_VERBOSE").is_some(),
        };
        std::fs::create_dir(&tb.cgroup)
            .with_context(|| format!("creating cgroup {}", tb.cgroup.display()))?;
        let wire = tb.wire_netns.clone();
        tb.make_netns(&wire)?;
        ip_in(&wire, &["link", "add", "br0", "type", "bridge"])?;
        ip_in(&wire, &["link", "set", "br0", "up"])?;
        Ok(tb)
    }

    fn make_netns(&mut self, name: &str) -> Result<()> {
        ip(&["netns", "add", name])?;
        self.netns_made.push(name.to_string());
        ip_in(name, &["link", "set", "lo", "up"])?;
        Ok(())
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }

    pub fn node(&self, name: &str) -> Result<&Node> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .with_context(|| format!("no node {name} in the testbed"))
    }

    pub fn pod(&self, name: &str) -> Result<&Pod> {
        self.pods
            .iter()
            .find(|p| p.name == name)
            .with_context(|| format!("no pod {name} in the testbed"))
    }

    /// Adds a node: a netns on the wire, forwarding, a cgroup.
    pub fn add_node(&mut self, name: &str) -> Result<Node> {
        let index = u8::try_from(self.nodes.len() + 1).context("too many nodes")?;
        let netns = format!("{}-{name}", self.id);
        self.make_netns(&netns)?;
        let wire_ip = Ipv4Addr::new(192, 168, 77, index);
        let peer = format!("n{index}");
        ip(&[
            "link",
            "add",
            "eth0",
            "netns",
            &netns,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
            "netns",
            &self.wire_netns,
        ])?;
        ip_in(&self.wire_netns, &["link", "set", &peer, "master", "br0"])?;
        ip_in(&self.wire_netns, &["link", "set", &peer, "up"])?;
        ip_in(
            &netns,
            &["addr", "add", &format!("{wire_ip}/24"), "dev", "eth0"],
        )?;
        ip_in(&netns, &["link", "set", "eth0", "up"])?;
        sys::run_in_netns(&netns, "sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
        // Routes both ways between this node's pods and every other node's.
        for other in &self.nodes {
            ip_in(
                &netns,
                &[
                    "route",
                    "add",
                    &pod_cidr(other.index),
                    "via",
                    &other.wire_ip.to_string(),
                ],
            )?;
            ip_in(
                &other.netns,
                &[
                    "route",
                    "add",
                    &pod_cidr(index),
                    "via",
                    &wire_ip.to_string(),
                ],
            )?;
        }
        let cgroup = self.cgroup.join(name);
        std::fs::create_dir(&cgroup)
            .with_context(|| format!("creating cgroup {}", cgroup.display()))?;
        let node = Node {
            name: name.to_string(),
            index,
            netns,
            wire_ip,
            cgroup,
            pods: 0,
        };
        self.nodes.push(node.clone());
        Ok(node)
    }

    /// Adds a pod on `node`: its netns, a veth to the node, an address and
    /// routes, and a cgroup under the node's.
    pub fn add_pod(&mut self, node: &str, spec: PodSpec) -> Result<Pod> {
        let id = self.id.clone();
        let n = self
            .nodes
            .iter_mut()
            .find(|n| n.name == node)
            .with_context(|| format!("no node {node} in the testbed"))?;
        n.pods += 1;
        let k = n.pods;
        let (node_index, node_netns, node_cgroup) = (n.index, n.netns.clone(), n.cgroup.clone());
        let pod_ip = Ipv4Addr::new(10, 10, node_index, k + 1);
        let gw = Ipv4Addr::new(10, 10, node_index, 1);
        let netns = format!("{id}-{}", spec.name);
        self.make_netns(&netns)?;
        let host_if = format!("p{k}");
        ip(&[
            "link",
            "add",
            "eth0",
            "netns",
            &netns,
            "type",
            "veth",
            "peer",
            "name",
            &host_if,
            "netns",
            &node_netns,
        ])?;
        ip_in(
            &node_netns,
            &["addr", "add", &format!("{gw}/32"), "dev", &host_if],
        )?;
        ip_in(&node_netns, &["link", "set", &host_if, "up"])?;
        ip_in(
            &node_netns,
            &["route", "add", &format!("{pod_ip}/32"), "dev", &host_if],
        )?;
        ip_in(
            &netns,
            &["addr", "add", &format!("{pod_ip}/32"), "dev", "eth0"],
        )?;
        ip_in(&netns, &["link", "set", "eth0", "up"])?;
        ip_in(
            &netns,
            &["route", "add", &format!("{gw}/32"), "dev", "eth0"],
        )?;
        ip_in(&netns, &["route", "add", "default", "via", &gw.to_string()])?;
        let cgroup = node_cgroup.join(format!("pod-{}", spec.name));
        std::fs::create_dir(&cgroup)
            .with_context(|| format!("creating cgroup {}", cgroup.display()))?;
        let pod = Pod {
            name: spec.name,
            node: node.to_string(),
            namespace: spec.namespace,
            service_account: spec.service_account,
            labels: spec.labels,
            netns,
            ip: pod_ip,
            cgroup,
        };
        self.pods.push(pod.clone());
        Ok(pod)
    }

    /// Starts `cmd` inside `pod` (its netns and cgroup). The process lives
    /// until the testbed is dropped, or until the returned index is killed.
    pub fn spawn_in_pod(&self, pod: &str, name: &str, cmd: Command) -> Result<usize> {
        let pod = self.pod(pod)?.clone();
        self.spawn(name, cmd, Some(&pod.netns), Some(&pod.cgroup))
    }

    /// Starts `cmd` in a node's netns, optionally in a cgroup.
    pub fn spawn_in_node(
        &self,
        node: &str,
        name: &str,
        cmd: Command,
        cgroup: Option<&Path>,
    ) -> Result<usize> {
        let node = self.node(node)?.clone();
        self.spawn(name, cmd, Some(&node.netns), cgroup)
    }

    /// Starts `cmd` in a netns and cgroup; returns its index for `with_proc`.
    pub fn spawn(
        &self,
        name: &str,
        mut cmd: Command,
        netns: Option<&str>,
        cgroup: Option<&Path>,
    ) -> Result<usize> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let held = enter_in_child(&mut cmd, netns, cgroup)?;
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        drop(held);
        let output = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let output = output.clone();
            let tag = name.to_string();
            let verbose = self.verbose;
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if verbose {
                        eprintln!("[{tag}] {line}");
                    }
                    if let Ok(mut o) = output.lock() {
                        o.push(line);
                    }
                }
            });
        }
        let mut procs = self.procs.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        procs.push(Proc {
            name: name.to_string(),
            child,
            output,
        });
        Ok(procs.len() - 1)
    }

    /// Runs `f` on a started process.
    pub fn with_proc<T>(&self, index: usize, f: impl FnOnce(&mut Proc) -> T) -> Result<T> {
        let mut procs = self.procs.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        let p = procs
            .get_mut(index)
            .with_context(|| format!("no process #{index}"))?;
        Ok(f(p))
    }

    /// Runs `cmd` to completion inside `pod` and returns its stdout; fails
    /// with its stderr if it exits non-zero or outlives `timeout`.
    pub fn run_in_pod(&self, pod: &str, mut cmd: Command, timeout: Duration) -> Result<String> {
        let pod = self.pod(pod)?.clone();
        run_bounded(&mut cmd, Some(&pod.netns), Some(&pod.cgroup), timeout)
    }

    /// Like `run_in_pod` but in a node's netns (outside any pod cgroup).
    pub fn run_in_node(&self, node: &str, mut cmd: Command, timeout: Duration) -> Result<String> {
        let node = self.node(node)?.clone();
        run_bounded(&mut cmd, Some(&node.netns), None, timeout)
    }
}

/// Runs a command to completion with a time limit.
pub fn run_bounded(
    cmd: &mut Command,
    netns: Option<&str>,
    cgroup: Option<&Path>,
    timeout: Duration,
) -> Result<String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let held = enter_in_child(cmd, netns, cgroup)?;
    let child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    drop(held);
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(timeout) {
        Ok(out) => out.context("waiting for command")?,
        Err(_) => {
            // SAFETY: kill(2) on the child we started.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
            bail!("{cmd:?} did not finish within {timeout:?}");
        }
    };
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn pod_cidr(node_index: u8) -> String {
    format!("10.10.{node_index}.0/24")
}

/// Where test meshes pin mesh-node's kernel state (one directory per node
/// and testbed, named after the testbed so stale ones can be swept).
pub const PIN_ROOT: &str = "/sys/fs/bpf/ambit";

impl Testbed {
    /// The `--pin-dir` of `node`'s mesh-node.
    pub fn pin_dir(&self, node: &str) -> PathBuf {
        Path::new(PIN_ROOT).join(format!("{}-{node}", self.id))
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if let Ok(mut procs) = self.procs.lock() {
            // Reverse order: clients before servers before mesh-node.
            while let Some(mut p) = procs.pop() {
                p.kill();
            }
        }
        // mesh-node leaves capture in place on purpose; the testbed removes it.
        for n in &self.nodes {
            let _ = std::fs::remove_dir_all(self.pin_dir(&n.name));
        }
        remove_cgroup_tree(&self.cgroup);
        for ns in self.netns_made.iter().rev() {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// Removes a cgroup directory tree, children first; processes still in it
/// (stragglers of a killed process tree) are killed first.
pub fn remove_cgroup_tree(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            remove_cgroup_tree(&e.path());
        }
    }
    for _ in 0..50 {
        if let Ok(pids) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            for pid in pids.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                // SAFETY: kill(2) with a pid read from our own cgroup.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Removes namespaces and cgroups left behind by testbeds whose process is
/// gone (a test run killed with SIGKILL cannot clean up after itself).
pub fn sweep_stale() {
    let alive = |name: &str| -> bool {
        let digits: String = name
            .trim_start_matches(PREFIX)
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        match digits.parse::<u32>() {
            Ok(pid) => Path::new(&format!("/proc/{pid}")).exists(),
            Err(_) => true,
        }
    };
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(PREFIX) && !alive(&name) {
                let _ = ip(&["netns", "del", &name]);
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(PIN_ROOT) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(PREFIX) && !alive(&name) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    if let Ok(root) = cgroup2_mount() {
        if let Ok(entries) = std::fs::read_dir(&root) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(PREFIX) && !alive(&name) {
                    remove_cgroup_tree(&e.path());
                }
            }
        }
    }
}
