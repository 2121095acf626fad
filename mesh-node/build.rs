//! Builds the kernel programs (`../mesh-ebpf`, its own workspace, pinned
//! nightly, target `bpfel-unknown-none`) and leaves the object at
//! `$OUT_DIR/mesh-ebpf`, which `src/ebpf` embeds.
//!
//! `AMBIT_EBPF_OBJECT=/path/to/mesh-ebpf` skips the build and embeds a
//! prebuilt object instead (for machines without the eBPF toolchain).

use std::env;
use std::ffi::OsString;
use std::fs;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const SETUP_HINT: &str = "run `cargo xtask setup` (or see docs/EBPF-TOOLCHAIN.md)";
const TARGET: &str = "bpfel-unknown-none";

fn main() {
    if let Err(msg) = run() {
        // A panic message is what cargo shows for a failed build script.
        panic!("\n\nmesh-node build.rs: {msg}\n\n");
    }
}

fn run() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env_var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env_var("OUT_DIR")?);
    let root = manifest_dir
        .parent()
        .ok_or("mesh-node has no parent directory")?
        .to_path_buf();
    let ebpf_dir = root.join("mesh-ebpf");
    let common_dir = root.join("mesh-common");
    let dest = out_dir.join("mesh-ebpf");

    println!("cargo:rerun-if-env-changed=AMBIT_EBPF_OBJECT");
    if let Some(prebuilt) = env::var_os("AMBIT_EBPF_OBJECT") {
        let prebuilt = PathBuf::from(prebuilt);
        println!("cargo:rerun-if-changed={}", prebuilt.display());
        fs::copy(&prebuilt, &dest)
            .map_err(|e| format!("copying AMBIT_EBPF_OBJECT={}: {e}", prebuilt.display()))?;
        return Ok(());
    }

    for p in [
        ebpf_dir.join("src"),
        ebpf_dir.join("Cargo.toml"),
        ebpf_dir.join("Cargo.lock"),
        ebpf_dir.join("rust-toolchain.toml"),
        ebpf_dir.join(".cargo/config.toml"),
        common_dir.join("src"),
        common_dir.join("Cargo.toml"),
    ] {
        println!("cargo:rerun-if-changed={}", p.display());
    }

    let toolchain = pinned_toolchain(&ebpf_dir.join("rust-toolchain.toml"))?;
    let cargo = rustup_cargo();

    if find_in_path("bpf-linker").is_none() {
        return Err(format!(
            "bpf-linker is not installed (looked in PATH and $CARGO_HOME/bin): {SETUP_HINT}"
        ));
    }
    let probe = clean_command(&cargo)
        .arg(format!("+{toolchain}"))
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !matches!(probe, Ok(s) if s.success()) {
        return Err(format!(
            "the Rust toolchain {toolchain} (with rust-src) is not installed \
             (`{} +{toolchain} --version` failed): {SETUP_HINT}",
            cargo.display()
        ));
    }

    // The inner cargo's stdout must not reach ours: cargo parses it for
    // `cargo:` directives. Send it to stderr (shown when the build fails).
    let stderr_fd = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| format!("duplicating stderr: {e}"))?;
    let status = clean_command(&cargo)
        .arg(format!("+{toolchain}"))
        .args(["build", "--release", "--locked"])
        .current_dir(&ebpf_dir)
        .stdout(Stdio::from(stderr_fd))
        .status()
        .map_err(|e| format!("running {}: {e}", cargo.display()))?;
    if !status.success() {
        return Err(format!(
            "building mesh-ebpf failed ({status}); the compiler output is above. \
             If the toolchain is incomplete: {SETUP_HINT}"
        ));
    }

    let obj = ebpf_dir
        .join("target")
        .join(TARGET)
        .join("release")
        .join("mesh-ebpf");
    fs::copy(&obj, &dest)
        .map_err(|e| format!("copying {} to {}: {e}", obj.display(), dest.display()))?;
    Ok(())
}

fn env_var(name: &str) -> Result<String, String> {
    env::var(name).map_err(|e| format!("{name}: {e}"))
}

/// The `channel` of mesh-ebpf's rust-toolchain.toml (one source of truth).
fn pinned_toolchain(file: &Path) -> Result<String, String> {
    let text = fs::read_to_string(file).map_err(|e| format!("reading {}: {e}", file.display()))?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("channel"))
        .filter_map(|rest| rest.trim().strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_string())
        .find(|v| !v.is_empty())
        .ok_or_else(|| format!("no `channel = \"...\"` in {}", file.display()))
}

/// rustup's `cargo` proxy (which understands `+toolchain`); `$CARGO` is the
/// outer toolchain's real cargo and does not.
fn rustup_cargo() -> PathBuf {
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    if let Some(home) = cargo_home {
        let proxy = home.join("bin").join("cargo");
        if proxy.is_file() {
            return proxy;
        }
    }
    PathBuf::from("cargo")
}

fn find_in_path(bin: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = env::var_os("PATH")
        .map(|p| env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    if let Some(home) = env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter().map(|d| d.join(bin)).find(|p| p.is_file())
}

/// A command whose environment has nothing of the outer build in it: no
/// RUSTC/RUSTFLAGS/wrappers (clippy sets RUSTC_WORKSPACE_WRAPPER), no
/// CARGO_* (target dir, features, profile), no build-script variables.
fn clean_command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear();
    for (k, v) in env::vars_os() {
        if keep_env(&k) {
            cmd.env(k, v);
        }
    }
    // The proxy must pick the toolchain from `+toolchain`, and bpf-linker
    // must be found.
    if let Some(home) = env::var_os("CARGO_HOME").or_else(|| {
        env::var_os("HOME").map(|h| {
            let mut p = h;
            p.push("/.cargo");
            p
        })
    }) {
        let mut path = OsString::from(Path::new(&home).join("bin"));
        if let Some(old) = env::var_os("PATH") {
            path.push(":");
            path.push(old);
        }
        cmd.env("PATH", path);
    }
    cmd
}

fn keep_env(key: &std::ffi::OsStr) -> bool {
    let Some(k) = key.to_str() else {
        return false;
    };
    if k == "CARGO_HOME" {
        return true;
    }
    const DROP_PREFIXES: &[&str] = &[
        "CARGO",
        "RUSTC",
        "RUSTDOC",
        "RUSTFLAGS",
        "CLIPPY",
        "__CARGO",
    ];
    const DROP: &[&str] = &[
        "RUSTUP_TOOLCHAIN",
        "OUT_DIR",
        "TARGET",
        "HOST",
        "NUM_JOBS",
        "OPT_LEVEL",
        "PROFILE",
        "DEBUG",
        "RUSTC_LINKER",
    ];
    !DROP.contains(&k) && !DROP_PREFIXES.iter().any(|p| k.starts_with(p))
}
