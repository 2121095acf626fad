//! Installs what building and running Ambit needs on a fresh machine, and
//! nothing when it is already there (see docs/EBPF-TOOLCHAIN.md):
//! Debian's llvm-22 for bpf-linker, iproute2 and tcpdump for the testbed, the
//! pinned nightly with rust-src for the kernel programs, bpf-linker itself.

use std::process::Command;

use anyhow::{bail, Context, Result};

/// The nightly whose LLVM matches bpf-linker's (mesh-ebpf/rust-toolchain.toml).
pub const EBPF_TOOLCHAIN: &str = "nightly-2026-05-19";
const BPF_LINKER_VERSION: &str = "0.13.0";
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "iproute2",
    "tcpdump",
    "procps",
    "curl",
    "prometheus",
];

pub fn setup(progress: &dyn Fn(&str)) -> Result<()> {
    apt(progress)?;
    toolchains(progress)?;
    bpf_linker(progress)?;
    Ok(())
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn apt(progress: &dyn Fn(&str)) -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
                .unwrap_or(false)
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    progress(&format!("installing {}", missing.join(" ")));
    run(Command::new("apt-get").args(["update", "-q"]))?;
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing))
}

fn toolchains(progress: &dyn Fn(&str)) -> Result<()> {
    let has_nightly = Command::new("rustup")
        .args([
            "component",
            "list",
            "--installed",
            "--toolchain",
            EBPF_TOOLCHAIN,
        ])
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("rust-src"))
        .unwrap_or(false);
    if !has_nightly {
        progress(&format!("installing Rust {EBPF_TOOLCHAIN} with rust-src"));
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            EBPF_TOOLCHAIN,
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))?;
    }
    let installed = Command::new("rustup")
        .args(["component", "list", "--installed"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for c in ["clippy", "rustfmt"] {
        if !installed.lines().any(|l| l.starts_with(c)) {
            progress(&format!("adding rustup component {c}"));
            run(Command::new("rustup").args(["component", "add", c]))?;
        }
    }
    Ok(())
}

fn bpf_linker(progress: &dyn Fn(&str)) -> Result<()> {
    let current = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if current.contains(BPF_LINKER_VERSION) {
        return Ok(());
    }
    progress(&format!(
        "building bpf-linker {BPF_LINKER_VERSION} against llvm-22 (about 3 minutes)"
    ));
    let path = format!(
        "/usr/lib/llvm-22/bin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    run(Command::new("cargo")
        .env("LLVM_PREFIX", "/usr/lib/llvm-22")
        .env("PATH", path)
        .args([
            "install",
            "--locked",
            &format!("bpf-linker@{BPF_LINKER_VERSION}"),
            "--no-default-features",
            "--features",
            "llvm-22",
        ]))
}
