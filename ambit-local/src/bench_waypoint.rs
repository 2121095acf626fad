//! The waypoint's part of `cargo xtask bench`: HTTP through one waypoint
//! against a direct HTTP connection, in one run, on one testbed.
//!
//! - direct: a client and a server in a namespace that has not opted in,
//!   client on node-a, server on node-b;
//! - mesh, no waypoint: the same, in an ambient namespace without
//!   `istio.io/use-waypoint` (node proxy to node proxy over HBONE);
//! - waypoint: bookinfo's client calling `reviews` (one endpoint on node-b)
//!   through the namespace's waypoint (on node-b): client → node proxy →
//!   HBONE → waypoint → HBONE → node proxy → server.
//!
//! Every server answers 1 KiB to a GET. HTTP/1.1 runs keep-alive
//! connections; HTTP/2 multiplexes every worker's requests on one
//! connection.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Result;

use crate::bench::{cpu_and_peak_rss, status_kib};
use crate::progress::spinner;
use mesh_tests::bookinfo::{url, Backend, Bookinfo, PORT};
use mesh_tests::http_app::HttpLoadReport;
use mesh_tests::testbed::PodSpec;

const PAYLOAD: usize = 1024;

struct Measured {
    direct: Result<HttpLoadReport, String>,
    l4: Result<HttpLoadReport, String>,
    waypoint: Result<HttpLoadReport, String>,
    /// Waypoint CPU seconds over the waypoint run.
    waypoint_cpu: f64,
}

fn cell(r: &Result<HttpLoadReport, String>, f: Metric, unit: &str) -> String {
    match r {
        Ok(r) if r.errors > 0 || r.by_status.keys().any(|s| *s != 200) => {
            format!(
                "{:.0} {unit} (non-200: {:?}, errors {})",
                f(r),
                r.by_status,
                r.errors
            )
        }
        Ok(r) => format!("{:.0} {unit}", f(r)),
        Err(e) => format!("failed: {e}"),
    }
}

fn ratio(
    a: &Result<HttpLoadReport, String>,
    b: &Result<HttpLoadReport, String>,
    f: Metric,
) -> String {
    match (a, b) {
        (Ok(a), Ok(b)) if f(a) > 0.0 => format!("{:.2}", f(b) / f(a)),
        _ => "-".into(),
    }
}

/// What a row shows of a run.
type Metric = fn(&HttpLoadReport) -> f64;

fn rps(r: &HttpLoadReport) -> f64 {
    (r.requests - r.errors) as f64 / r.seconds
}
fn p50(r: &HttpLoadReport) -> f64 {
    r.p50_us
}
fn p99(r: &HttpLoadReport) -> f64 {
    r.p99_us
}

fn cpu(pid: u32) -> f64 {
    cpu_and_peak_rss(pid).0
}

/// Runs one load shape on the three paths.
fn measure(b: &Bookinfo, wp_pid: u32, args: &[&str]) -> Measured {
    let direct_url = format!("http://{}:{PORT}/bench", pod_ip(b, "plain-server"));
    let l4_url = format!("http://{}:{PORT}/bench", pod_ip(b, "l4-server"));
    let run = |pod: &str, u: &str| b.load_from(pod, u, args).map_err(|e| format!("{e:#}"));
    let direct = run("plain-client", &direct_url);
    let l4 = run("client", &l4_url);
    let c0 = cpu(wp_pid);
    let waypoint = run("client", &url("reviews", "/bench"));
    let waypoint_cpu = cpu(wp_pid) - c0;
    Measured {
        direct,
        l4,
        waypoint,
        waypoint_cpu,
    }
}

fn pod_ip(b: &Bookinfo, pod: &str) -> String {
    b.mesh
        .tb
        .pod(pod)
        .map(|p| p.ip.to_string())
        .unwrap_or_else(|_| "0.0.0.0".into())
}

/// Measures and returns the BENCHMARKS.md section.
pub fn run(secs: f64) -> Result<String> {
    let pb = spinner("bringing up bookinfo with a waypoint for the waypoint bench");
    let extra = [
        (
            "node-a",
            PodSpec::new("plain-client", "direct", "client"),
            false,
        ),
        (
            "node-b",
            PodSpec::new("plain-server", "direct", "server"),
            false,
        ),
        ("node-b", PodSpec::new("l4-server", "l4", "server"), true),
    ];
    let mut b = Bookinfo::start_with(
        &[Backend::new("reviews", "v1", "node-b").answering(PAYLOAD)],
        &extra,
    )?;
    let server = Backend::new("bench", "v1", "node-b").answering(PAYLOAD);
    b.serve_http("plain-server", &server)?;
    b.serve_http("l4-server", &server)?;
    b.start_waypoint("")?;
    pb.finish_and_clear();
    let wp = b.waypoint_pid()?;
    std::thread::sleep(Duration::from_millis(500));
    let idle_rss = status_kib(wp, "VmRSS:");
    let s = format!("{secs}");

    let pb = spinner("waypoint bench: HTTP/1.1 at 1,000 req/s");
    let fixed = measure(
        &b,
        wp,
        &["--secs", &s, "--rate", "1000", "--concurrency", "4"],
    );
    let rss_at_1000 = status_kib(wp, "VmRSS:");
    pb.set_message("waypoint bench: HTTP/1.1 at full speed, 16 connections");
    let full = measure(&b, wp, &["--secs", &s, "--concurrency", "16"]);
    pb.set_message("waypoint bench: HTTP/2, 16 streams on one connection");
    let h2 = measure(&b, wp, &["--secs", &s, "--concurrency", "16", "--http2"]);
    let peak_rss = cpu_and_peak_rss(wp).1;
    pb.finish_and_clear();

    let mut md = String::new();
    writeln!(md, "## Waypoint (L7) against direct HTTP\n")?;
    writeln!(
        md,
        "`cargo xtask bench` (this part: `ambit-local bench-waypoint --secs {secs}`). \
         HTTP GETs answered with {PAYLOAD} bytes; client pod on node-a, server pod on node-b. \
         **direct**: both pods outside the mesh. **mesh (L4)**: both ambient, no waypoint \
         (node proxy to node proxy over HBONE). **waypoint**: bookinfo's client calling \
         `reviews` through the namespace's waypoint on node-b (HBONE in and out). \
         {secs} s per measurement.\n"
    )?;
    writeln!(
        md,
        "| measurement | direct | mesh (L4) | waypoint | waypoint / direct |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|")?;
    let rows: [(&str, &Measured, Metric, &str); 6] = [
        ("HTTP/1.1 p50 at 1,000 req/s", &fixed, p50, "µs"),
        ("HTTP/1.1 p99 at 1,000 req/s", &fixed, p99, "µs"),
        (
            "HTTP/1.1 max req/s, 16 keep-alive connections",
            &full,
            rps,
            "req/s",
        ),
        ("HTTP/1.1 p50 at full speed", &full, p50, "µs"),
        (
            "HTTP/2 max req/s, 16 streams on one connection",
            &h2,
            rps,
            "req/s",
        ),
        ("HTTP/2 p50 at full speed", &h2, p50, "µs"),
    ];
    for (name, m, f, unit) in rows {
        writeln!(
            md,
            "| {name} | {} | {} | {} | {} |",
            cell(&m.direct, f, unit),
            cell(&m.l4, f, unit),
            cell(&m.waypoint, f, unit),
            ratio(&m.direct, &m.waypoint, f)
        )?;
    }
    let added = |q: Metric| match (&fixed.direct, &fixed.waypoint) {
        (Ok(d), Ok(w)) => format!("{:+.0} µs", q(w) - q(d)),
        _ => "-".into(),
    };
    let per_core = |m: &Measured| match &m.waypoint {
        Ok(r) if m.waypoint_cpu > 0.0 => {
            format!("{:.0} req/s", rps(r) * r.seconds / m.waypoint_cpu)
        }
        _ => "-".into(),
    };
    let vcpu = match &fixed.waypoint {
        Ok(r) if r.seconds > 0.0 => format!("{:.3} vCPU", fixed.waypoint_cpu / r.seconds),
        _ => "-".into(),
    };
    writeln!(md)?;
    writeln!(md, "| waypoint | value | target |")?;
    writeln!(md, "|---|---:|---:|")?;
    writeln!(
        md,
        "| added p50 at 1,000 req/s (waypoint − direct) | {} | - |",
        added(p50)
    )?;
    writeln!(
        md,
        "| added p99 at 1,000 req/s (waypoint − direct) | {} | < +300 µs |",
        added(p99)
    )?;
    writeln!(md, "| CPU at 1,000 req/s | {vcpu} | < 0.1 vCPU |")?;
    writeln!(
        md,
        "| HTTP/1.1 requests/s per waypoint core (full speed) | {} | - |",
        per_core(&full)
    )?;
    writeln!(
        md,
        "| HTTP/2 requests/s per waypoint core (full speed) | {} | - |",
        per_core(&h2)
    )?;
    writeln!(
        md,
        "| RSS idle | {:.1} MiB | < 20 MB |",
        idle_rss as f64 / 1024.0
    )?;
    writeln!(
        md,
        "| RSS at 1,000 req/s | {:.1} MiB | < 20 MB |",
        rss_at_1000 as f64 / 1024.0
    )?;
    writeln!(
        md,
        "| peak RSS (VmHWM, after full speed) | {:.1} MiB | - |",
        peak_rss as f64 / 1024.0
    )?;
    writeln!(
        md,
        "\nThe waypoint path also crosses two node proxies (the client's and the server's) \
         where direct crosses none; `mesh (L4)` shows their share. All processes share the \
         machine's {} CPUs.",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    )?;
    b.stop_waypoint()?;
    Ok(md)
}
