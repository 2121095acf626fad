//! `cargo xtask <task>`: the project's tasks, one place for each.
//!
//! - `setup`: install the toolchain pieces (idempotent; every task runs it)
//! - `test`:  format check, clippy, and every test, privileged ones included
//! - `up`:    bring up the local mesh with the sample app and show it working
//! - `bench`: measure the mesh against direct connections, write BENCHMARKS.md
//! - `kube-apiserver`: build/cache a real kube-apiserver (and etcd) for the kube tests
//! - `modules`: report module cycles inside each crate (fails when there is one)
//! - `fuzz`:  run the cargo-fuzz targets (fuzz/) for a while each; `test`
//!   replays their corpora on stable (mesh-fuzz's replay test)

mod fuzz;
mod kube;
mod modules;
mod setup;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(about = "Ambit developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install llvm-22, the pinned nightly, bpf-linker, iproute2, tcpdump.
    Setup,
    /// Run fmt check, clippy and every test (needs root).
    Test {
        /// Extra arguments passed to `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Bring up the local mesh (namespaces as nodes and pods) and show it working.
    Up {
        /// Tear down right after the demonstration instead of waiting for Ctrl-C.
        #[arg(long)]
        once: bool,
    },
    /// Benchmark the mesh against direct connections; writes BENCHMARKS.md.
    Bench {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
    },
    /// Install etcd and build kube-apiserver v1.20.2 from Debian's source (cached).
    KubeApiserver,
    /// Report module cycles inside each crate (every target of every
    /// workspace crate, and mesh-ebpf); fails when there is one.
    Modules,
    /// Run the fuzz targets (fuzz/, cargo-fuzz on the pinned nightly) one
    /// after the other; fails on a crash. See docs/FUZZING.md.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        secs: u64,
        /// Only this target (default: all of them).
        #[arg(long)]
        target: Option<String>,
    },
}

pub fn spinner(msg: &str) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner:.cyan} [{elapsed_precise}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.enable_steady_tick(Duration::from_millis(120));
    pb.set_message(msg.to_string());
    pb
}

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Runs cargo with `args` in the workspace, streaming its output.
pub fn cargo(args: &[&str]) -> Result<()> {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Builds mesh-node (with its kernel programs) and the local-mode tools.
fn build_release() -> Result<()> {
    let pb = spinner("building mesh-node, the kernel programs and the sample app (release)");
    let r = pb.suspend(|| cargo(&["build", "--release", "--workspace", "--bins"]));
    match &r {
        Ok(()) => pb.finish_with_message("built"),
        Err(_) => pb.abandon_with_message("build failed"),
    }
    r
}

/// Runs the local-mode tool (the ambit-local crate) from the release build.
fn local(args: &[&str]) -> Result<()> {
    let bin = workspace_root().join("target/release");
    // Ctrl-C is for the child: it tears the mesh down, then exits. (Once
    // per process: `bench` runs several children.)
    static IGNORE_CTRL_C: std::sync::Once = std::sync::Once::new();
    let mut installed = Ok(());
    IGNORE_CTRL_C.call_once(|| installed = ctrlc::set_handler(|| {}));
    installed.context("installing the Ctrl-C handler")?;
    let status = Command::new(bin.join("ambit-local"))
        .args(args)
        .env("AMBIT_BIN_DIR", &bin)
        .status()
        .context("running ambit-local")?;
    if !status.success() {
        bail!("ambit-local {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn setup_with_progress() -> Result<()> {
    let pb = spinner("checking the toolchain");
    let r = setup::setup(&|m| pb.set_message(m.to_string()));
    match &r {
        Ok(()) => pb.finish_with_message("toolchain ready"),
        Err(_) => pb.abandon_with_message("toolchain setup failed"),
    }
    r
}

/// The real kube-apiserver for the kube integration tests (xtask/src/kube.rs).
fn kube_apiserver_with_progress() -> Result<String> {
    let pb = spinner("checking etcd and kube-apiserver");
    let r = kube::ensure(&|m| pb.set_message(m.to_string()));
    match &r {
        Ok(summary) => pb.finish_with_message(summary.clone()),
        Err(_) => pb.abandon_with_message("kube-apiserver setup failed"),
    }
    r
}

fn require_root(what: &str) -> Result<()> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if uid.as_deref().unwrap_or("") != "0" {
        bail!("{what} needs root (network namespaces, cgroups, eBPF): run it as root");
    }
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.task {
        Task::Setup => setup_with_progress(),
        Task::Test { args } => {
            require_root("cargo xtask test")?;
            setup_with_progress()?;
            kube_apiserver_with_progress()?;
            cargo(&["fmt", "--all", "--", "--check"])?;
            // No module imports one that imports it back, in any crate.
            check_modules()?;
            cargo(&[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])?;
            // Release builds: the end-to-end tests push 64 MiB through the mesh.
            // The binaries they start (mesh-node, ambit-probe) are built first,
            // so a test never runs an old one.
            cargo(&["build", "--release", "--workspace", "--bins"])?;
            // The workspace's tests include mesh-fuzz's replay of every fuzz
            // corpus and artifact (fuzz/), on stable.
            let mut test_args = vec!["test", "--workspace", "--release", "--no-fail-fast"];
            test_args.extend(args.iter().map(String::as_str));
            cargo(&test_args)
        }
        Task::Up { once } => {
            require_root("cargo xtask up")?;
            setup_with_progress()?;
            build_release()?;
            let mut args = vec!["up"];
            if once {
                args.push("--once");
            }
            local(&args)
        }
        Task::Bench { secs } => {
            require_root("cargo xtask bench")?;
            setup_with_progress()?;
            build_release()?;
            // The data path (mesh vs direct), the waypoint (L7 vs direct HTTP) and
            // the controller at scale, one file.
            let target = workspace_root().join("target");
            let datapath = target.join("bench-datapath.md");
            let controller = target.join("bench-controller.md");
            let waypoint = target.join("bench-waypoint.md");
            let secs = secs.to_string();
            local(&[
                "bench",
                "--secs",
                &secs,
                "--out",
                &datapath.to_string_lossy(),
            ])?;
            local(&[
                "bench-waypoint",
                "--secs",
                &secs,
                "--out",
                &waypoint.to_string_lossy(),
            ])?;
            let status = Command::new(target.join("release/xds-bench"))
                .arg("--out")
                .arg(&controller)
                .status()
                .context("running xds-bench")?;
            if !status.success() {
                bail!("xds-bench failed ({status})");
            }
            let doc = format!(
                "{}\n{}\n{}",
                std::fs::read_to_string(&datapath)?,
                std::fs::read_to_string(&waypoint)?,
                std::fs::read_to_string(&controller)?
            );
            std::fs::write(workspace_root().join("BENCHMARKS.md"), doc)?;
            println!("written to BENCHMARKS.md");
            Ok(())
        }
        Task::KubeApiserver => {
            require_root("cargo xtask kube-apiserver")?;
            println!("{}", kube_apiserver_with_progress()?);
            Ok(())
        }
        Task::Modules => check_modules(),
        Task::Fuzz { secs, target } => fuzz::run(secs, target.as_deref()),
    }
}

/// `cargo xtask modules`: fails on any module cycle, naming each edge.
fn check_modules() -> Result<()> {
    let reports = modules::check_workspace(&workspace_root())?;
    print!("{}", modules::render(&reports));
    let cycles: usize = reports.iter().map(|r| r.cycles.len()).sum();
    if cycles > 0 {
        bail!("{cycles} module cycle(s)");
    }
    Ok(())
}
