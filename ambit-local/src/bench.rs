//! `cargo xtask bench`: the mesh against a direct connection, in one run, on
//! the same testbed. Direct pairs are pods of a namespace that has not opted
//! in, placed exactly like the meshed ones (same nodes, same veths, same
//! routes), so the only difference is the mesh.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use crate::progress::spinner;
use anyhow::{Context, Result};
use mesh_tests::mesh::{binary, LocalMesh};
use mesh_tests::probe::LoadReport;
use mesh_tests::testbed::PodSpec;

struct Pairs {
    far: Ipv4Addr,
    near: Ipv4Addr,
    plain_far: Ipv4Addr,
    plain_near: Ipv4Addr,
}

fn probe(mesh: &LocalMesh, pod: &str, args: &[String], secs: f64) -> Result<LoadReport> {
    let mut cmd = Command::new(binary("ambit-probe")?);
    cmd.args(args);
    let out = mesh
        .tb
        .run_in_pod(pod, cmd, Duration::from_secs_f64(secs + 60.0))?;
    serde_json::from_str(out.trim()).with_context(|| format!("probe printed {out:?}"))
}

fn args(kind: &str, to: Ipv4Addr, port: u16, secs: f64, extra: &[&str]) -> Vec<String> {
    let mut v = vec![
        kind.to_string(),
        "--to".into(),
        SocketAddr::from((to, port)).to_string(),
        "--secs".into(),
        secs.to_string(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// CPU seconds (user+system) and peak RSS (KiB) of a process.
pub(crate) fn cpu_and_peak_rss(pid: u32) -> (f64, u64) {
    let ticks = 100.0; // USER_HZ on Linux
    let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.to_string();
            let f: Vec<&str> = rest.split_whitespace().collect();
            let u: f64 = f.get(11)?.parse().ok()?;
            let k: f64 = f.get(12)?.parse().ok()?;
            Some((u + k) / ticks)
        })
        .unwrap_or(f64::NAN);
    (cpu, status_kib(pid, "VmHWM:"))
}

pub(crate) fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

struct Row {
    name: String,
    direct: Result<f64, String>,
    mesh: Result<f64, String>,
    unit: &'static str,
}

impl Row {
    fn ratio(&self) -> String {
        match (&self.direct, &self.mesh) {
            (Ok(d), Ok(m)) if *d > 0.0 && m.is_finite() => format!("{:.2}", m / d),
            _ => "-".into(),
        }
    }

    fn cell(&self, v: &Result<f64, String>) -> String {
        match v {
            Ok(v) if self.unit == "Gbit/s" => format!("{v:.2} {}", self.unit),
            Ok(v) => format!("{v:.0} {}", self.unit),
            Err(e) => format!("failed: {e}"),
        }
    }
}

/// What one probe run reports, as the number a row shows.
type Metric = fn(&LoadReport) -> f64;

fn gbit(r: &LoadReport) -> f64 {
    r.bytes as f64 * 8.0 / r.seconds / 1e9
}
fn per_sec(r: &LoadReport) -> f64 {
    r.operations as f64 / r.seconds
}
fn p50(r: &LoadReport) -> f64 {
    r.p50_us.unwrap_or(f64::NAN)
}
fn p99(r: &LoadReport) -> f64 {
    r.p99_us.unwrap_or(f64::NAN)
}

/// One load shape, and the rows it yields.
struct Scenario {
    what: &'static str,
    kind: &'static str,
    port: u16,
    extra: &'static [&'static str],
    rows: &'static [(&'static str, Metric, &'static str)],
    cross_node_only: bool,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        what: "bulk throughput",
        kind: "bulk",
        port: 9000,
        extra: &[],
        rows: &[("single-stream throughput", gbit, "Gbit/s")],
        cross_node_only: false,
    },
    Scenario {
        what: "1 KiB request/response at 1000 req/s",
        kind: "rr",
        port: 8080,
        extra: &["--rate", "1000"],
        rows: &[
            ("1 KiB p50 @1000 req/s", p50, "µs"),
            ("1 KiB p99 @1000 req/s", p99, "µs"),
        ],
        cross_node_only: false,
    },
    Scenario {
        what: "1 KiB request/response, full speed",
        kind: "rr",
        port: 8080,
        extra: &[],
        rows: &[
            ("1 KiB req/s, 1 conn", per_sec, "req/s"),
            ("1 KiB p50, full speed", p50, "µs"),
            ("1 KiB p99, full speed", p99, "µs"),
        ],
        cross_node_only: false,
    },
    Scenario {
        what: "1 KiB request/response, 64 keep-alive connections",
        kind: "rr",
        port: 8080,
        extra: &["--conns", "64"],
        rows: &[("1 KiB req/s, 64 conns", per_sec, "req/s")],
        cross_node_only: true,
    },
    Scenario {
        what: "new connections per second",
        kind: "cps",
        port: 8080,
        extra: &[],
        rows: &[("new connections/s", per_sec, "conn/s")],
        cross_node_only: false,
    },
];

fn measure(
    mesh: &LocalMesh,
    p: &Pairs,
    secs: f64,
    near_label: &str,
    rows: &mut Vec<Row>,
    near_only: bool,
) {
    let mut cases: Vec<(&str, Ipv4Addr, Ipv4Addr)> = vec![(near_label, p.plain_near, p.near)];
    if !near_only {
        cases.insert(0, ("cross-node", p.plain_far, p.far));
    }
    for (label, direct, meshed) in cases {
        let pb = spinner(label);
        for sc in SCENARIOS {
            if sc.cross_node_only && label != "cross-node" {
                continue;
            }
            pb.set_message(format!("{label}: {}", sc.what));
            // A failed run is reported in its row, not fatal to the others.
            let run = |pod: &str, to: Ipv4Addr| {
                probe(mesh, pod, &args(sc.kind, to, sc.port, secs, sc.extra), secs)
                    .map_err(|e| format!("{:#}", e).lines().last().unwrap_or("").to_string())
            };
            let d = run("plain-client", direct);
            let m = run("client", meshed);
            for (name, metric, unit) in sc.rows {
                rows.push(Row {
                    name: format!("{label} {name}"),
                    direct: d.as_ref().map(metric).map_err(Clone::clone),
                    mesh: m.as_ref().map(metric).map_err(Clone::clone),
                    unit,
                });
            }
        }
        pb.finish_and_clear();
    }
}

fn node_pid(mesh: &LocalMesh, node: &str) -> Result<u32> {
    let idx = mesh.node_proc(node)?;
    mesh.tb.with_proc(idx, |p| p.pid())
}

/// Runs every measurement and writes the table to `out` (BENCHMARKS.md).
pub fn run(secs: f64, out: &std::path::Path) -> Result<()> {
    let pb = spinner("bringing up the bench testbed");
    let mut mesh = LocalMesh::new(&["node-a", "node-b"])?;
    mesh.namespace("bench", true).namespace("direct", false);
    mesh.add_pod("node-a", PodSpec::new("client", "bench", "client"))?;
    let near = mesh
        .add_pod("node-a", PodSpec::new("srv-near", "bench", "server"))?
        .ip;
    let far = mesh
        .add_pod("node-b", PodSpec::new("srv-far", "bench", "server"))?
        .ip;
    mesh.add_pod("node-a", PodSpec::new("plain-client", "direct", "client"))?;
    let plain_near = mesh
        .add_pod("node-a", PodSpec::new("plain-near", "direct", "server"))?
        .ip;
    let plain_far = mesh
        .add_pod("node-b", PodSpec::new("plain-far", "direct", "server"))?
        .ip;
    mesh.start_node("node-a", &[])?;
    mesh.start_node("node-b", &[])?;
    for pod in ["srv-near", "srv-far", "plain-near", "plain-far"] {
        mesh.serve(pod, 8080, false)?;
        mesh.serve(pod, 9000, true)?;
    }
    let pairs = Pairs {
        far,
        near,
        plain_far,
        plain_near,
    };
    pb.finish_and_clear();

    // Idle footprint, then 1,000 open connections through the mesh.
    std::thread::sleep(Duration::from_millis(500));
    let (a_pid, b_pid) = (node_pid(&mesh, "node-a")?, node_pid(&mesh, "node-b")?);
    let idle_rss = status_kib(a_pid, "VmRSS:");
    let mut hold = Command::new(binary("ambit-probe")?);
    hold.args([
        "hold",
        "--to",
        &SocketAddr::from((far, 8080)).to_string(),
        "--count",
        "1000",
        "--secs",
        "30",
    ]);
    let h = mesh.tb.spawn_in_pod("client", "hold", hold)?;
    mesh.tb.with_proc(h, |p| {
        p.wait_for_line("holding 1000", Duration::from_secs(60))
    })??;
    let held_rss = status_kib(a_pid, "VmRSS:");
    mesh.tb.with_proc(h, |p| p.kill())?;
    std::thread::sleep(Duration::from_millis(500));

    let (a_cpu0, _) = cpu_and_peak_rss(a_pid);
    let (b_cpu0, _) = cpu_and_peak_rss(b_pid);
    let mut rows = Vec::new();
    // The default data path first: cross-node and same-node, fast path off.
    measure(&mesh, &pairs, secs, "same-node", &mut rows, false);
    let (a_cpu1, a_peak) = cpu_and_peak_rss(a_pid);
    let (b_cpu1, b_peak) = cpu_and_peak_rss(b_pid);

    // Same node again with the sockops/sk_msg fast path on (node-a restarted).
    let pb = spinner("restarting node-a's mesh-node with --fast-path");
    let idx = mesh.node_proc("node-a")?;
    mesh.tb.with_proc(idx, |p| p.kill())?;
    mesh.start_node("node-a", &["--fast-path"])?;
    pb.finish_and_clear();
    measure(
        &mesh,
        &pairs,
        secs,
        "same-node, fast path on",
        &mut rows,
        true,
    );

    let mut table = String::new();
    writeln!(table, "| measurement | direct | mesh | mesh / direct |")?;
    writeln!(table, "|---|---:|---:|---:|")?;
    for r in &rows {
        writeln!(
            table,
            "| {} | {} | {} | {} |",
            r.name,
            r.cell(&r.direct),
            r.cell(&r.mesh),
            r.ratio()
        )?;
    }
    let mut res = String::new();
    writeln!(res, "| mesh-node resource | value |")?;
    writeln!(res, "|---|---:|")?;
    writeln!(
        res,
        "| node-a RSS idle (2 pods enrolled) | {:.1} MB |",
        idle_rss as f64 / 1024.0
    )?;
    writeln!(
        res,
        "| node-a RSS with 1,000 open connections | {:.1} MB |",
        held_rss as f64 / 1024.0
    )?;
    writeln!(
        res,
        "| node-a peak RSS over the cross/same-node runs | {:.1} MB |",
        a_peak as f64 / 1024.0
    )?;
    writeln!(
        res,
        "| node-b peak RSS | {:.1} MB |",
        b_peak as f64 / 1024.0
    )?;
    writeln!(
        res,
        "| node-a CPU seconds over the cross/same-node runs | {:.2} s |",
        a_cpu1 - a_cpu0
    )?;
    writeln!(
        res,
        "| node-b CPU seconds over the same runs | {:.2} s |",
        b_cpu1 - b_cpu0
    )?;
    println!("{table}\n{res}");

    let when = Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M UTC")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let doc = format!(
        "# Benchmarks\n\nProduced by `cargo xtask bench --secs {secs}` on {when}, kernel {}, {cores} cores. \
Direct = the same placement of pods in a namespace that has not opted in; mesh = pods of an ambient namespace \
(cross-node: HBONE over mTLS between two mesh-nodes; same-node: HBONE through one mesh-node; `fast path on`: \
mesh-node started with `--fast-path`, the app↔proxy loopback legs short-circuited by sockops/sk_msg). Client and servers are `ambit-probe`; \
everything shares the same 2 cores, so absolute numbers are low and noisy — read the ratios.\n\n{table}\n{res}\n",
        kernel.trim()
    );
    std::fs::write(out, doc)?;
    println!("written to {}", out.display());
    Ok(())
}
