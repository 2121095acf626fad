//! `cargo xtask fuzz`: the cargo-fuzz targets in `fuzz/` (see
//! docs/FUZZING.md), one after the other, each for a fixed time, with the
//! pinned nightly. New inputs the fuzzer finds go to a scratch corpus
//! (`fuzz/target/corpus/<target>`), not to the committed seeds; a crash
//! leaves its reproducer in `fuzz/artifacts/<target>/`, which the replay
//! test then runs on stable.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::setup::EBPF_TOOLCHAIN;
use crate::workspace_root;

/// The targets in `fuzz/fuzz_targets/`, in the order they run.
pub const TARGETS: &[&str] = &["hbone_connect", "hbone_h2", "xds_resources", "config_file"];

/// An input that runs longer than this is a hang, reported as a crash.
const INPUT_TIMEOUT_SECS: u64 = 60;

/// What one target's run did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub executions: u64,
    /// New files in `fuzz/artifacts/<target>/` (libFuzzer stops at the first).
    pub crashes: Vec<PathBuf>,
    /// libFuzzer's exit status was not success.
    pub failed: bool,
}

pub fn run(secs: u64, only: Option<&str>) -> Result<()> {
    let targets: Vec<&str> = match only {
        Some(t) if TARGETS.contains(&t) => vec![t],
        Some(t) => bail!(
            "no fuzz target {t:?}; the targets are {}",
            TARGETS.join(", ")
        ),
        None => TARGETS.to_vec(),
    };
    let toolchain = nightly()?;
    ensure_cargo_fuzz()?;
    let mut outcomes = Vec::new();
    for target in &targets {
        println!("== fuzz {target} for {secs}s ({toolchain})");
        let outcome = run_target(&toolchain, target, secs)?;
        outcomes.push((*target, outcome));
    }
    println!("\n{:<16} {:>14} {:>8}", "target", "executions", "crashes");
    let mut bad = 0;
    for (target, o) in &outcomes {
        println!("{target:<16} {:>14} {:>8}", o.executions, crash_count(o));
        for c in &o.crashes {
            println!("    reproducer: {}", c.display());
        }
        bad += crash_count(o);
    }
    if bad > 0 {
        bail!("{bad} crash(es): fix each at its cause, keep the reproducer in fuzz/artifacts/");
    }
    Ok(())
}

/// A failed run without a new artifact (e.g. a leak or a timeout libFuzzer
/// could not save) still counts as one crash.
fn crash_count(o: &Outcome) -> usize {
    match (o.crashes.len(), o.failed) {
        (0, true) => 1,
        (n, _) => n,
    }
}

/// The pinned nightly (mesh-ebpf/rust-toolchain.toml), else any installed nightly.
fn nightly() -> Result<String> {
    let out = Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .context("running rustup toolchain list")?;
    let list = String::from_utf8_lossy(&out.stdout);
    let names: Vec<&str> = list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    if let Some(pinned) = names.iter().find(|n| n.starts_with(EBPF_TOOLCHAIN)) {
        return Ok(toolchain_name(pinned));
    }
    match names.iter().find(|n| n.starts_with("nightly")) {
        Some(any) => Ok(toolchain_name(any)),
        None => bail!("cargo-fuzz needs a nightly toolchain: run `cargo xtask setup` (installs {EBPF_TOOLCHAIN})"),
    }
}

/// `nightly-2026-05-19-x86_64-unknown-linux-gnu` -> `nightly-2026-05-19`
/// (what `cargo +...` takes; the host part is implied).
fn toolchain_name(listed: &str) -> String {
    let host_start = listed.find("-x86_64").or_else(|| listed.find("-aarch64"));
    host_start.map_or(listed, |i| &listed[..i]).to_string()
}

fn ensure_cargo_fuzz() -> Result<()> {
    let present = Command::new("cargo")
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if present {
        return Ok(());
    }
    println!("installing cargo-fuzz");
    let status = Command::new("cargo")
        .args(["install", "cargo-fuzz", "--locked"])
        .status()
        .context("running cargo install cargo-fuzz")?;
    if !status.success() {
        bail!("cargo install cargo-fuzz --locked failed ({status})");
    }
    Ok(())
}

fn artifacts(dir: &Path) -> BTreeSet<PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect()
}

fn run_target(toolchain: &str, target: &str, secs: u64) -> Result<Outcome> {
    let fuzz = workspace_root().join("fuzz");
    let scratch = fuzz.join("target").join("corpus").join(target);
    let seeds = fuzz.join("corpus").join(target);
    let artifact_dir = fuzz.join("artifacts").join(target);
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    std::fs::create_dir_all(&artifact_dir)
        .with_context(|| format!("creating {}", artifact_dir.display()))?;
    let before = artifacts(&artifact_dir);

    // libFuzzer writes new inputs to the first corpus folder and reads the others.
    let mut child = Command::new("cargo")
        .arg(format!("+{toolchain}"))
        .args(["fuzz", "run", target])
        .arg(&scratch)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={secs}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_SECS}"))
        .arg("-print_final_stats=1")
        .current_dir(&fuzz)
        .stderr(Stdio::piped())
        .spawn()
        .context("running cargo fuzz run")?;
    let mut executions = 0;
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines() {
            let line = line.context("reading cargo fuzz's output")?;
            eprintln!("{line}");
            if let Some(n) = executions_in(&line) {
                executions = n;
            }
        }
    }
    let status = child.wait().context("waiting for cargo fuzz")?;
    let crashes = artifacts(&artifact_dir)
        .difference(&before)
        .cloned()
        .collect();
    Ok(Outcome {
        executions,
        crashes,
        failed: !status.success(),
    })
}

/// The executions a libFuzzer line reports: its final statistics
/// (`stat::number_of_executed_units: N`) or a status line (`#N ...`).
fn executions_in(line: &str) -> Option<u64> {
    if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
        return n.trim().parse().ok();
    }
    let rest = line.strip_prefix('#')?;
    let n = rest.split_whitespace().next()?;
    n.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executions_come_from_status_lines_and_final_stats() {
        assert_eq!(
            executions_in(
                "#524288\tpulse  cov: 1234 ft: 5678 corp: 90/1Kb exec/s: 17476 rss: 80Mb"
            ),
            Some(524288)
        );
        assert_eq!(
            executions_in("stat::number_of_executed_units: 8043215"),
            Some(8043215)
        );
        assert_eq!(executions_in("INFO: Seed: 42"), None);
        assert_eq!(executions_in("#include"), None);
    }

    #[test]
    fn toolchain_names_drop_the_host() {
        assert_eq!(
            toolchain_name("nightly-2026-05-19-x86_64-unknown-linux-gnu"),
            "nightly-2026-05-19"
        );
        assert_eq!(
            toolchain_name("nightly-x86_64-unknown-linux-gnu"),
            "nightly"
        );
        assert_eq!(toolchain_name("nightly"), "nightly");
    }

    #[test]
    fn a_failed_run_without_an_artifact_is_one_crash() {
        let failed = Outcome {
            failed: true,
            ..Default::default()
        };
        assert_eq!(crash_count(&failed), 1);
        assert_eq!(crash_count(&Outcome::default()), 0);
    }

    #[test]
    fn the_targets_are_the_fuzz_crates_binaries() {
        let manifest = std::fs::read_to_string(workspace_root().join("fuzz/Cargo.toml"))
            .unwrap_or_else(|e| panic!("fuzz/Cargo.toml: {e}"));
        for t in TARGETS {
            assert!(
                manifest.contains(&format!("name = \"{t}\"")),
                "{t} is not a [[bin]] of fuzz/Cargo.toml"
            );
            assert!(
                workspace_root()
                    .join(format!("fuzz/fuzz_targets/{t}.rs"))
                    .is_file(),
                "fuzz/fuzz_targets/{t}.rs"
            );
        }
    }
}
