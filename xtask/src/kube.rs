//! `cargo xtask kube-apiserver`: a real Kubernetes API server for the
//! integration tests (see docs/KUBE-APISERVER.md).
//!
//! No registry reachable from these machines ships a kube-apiserver binary,
//! so it is built once from Debian bookworm's `kubernetes` source package
//! (1.20.2, Go dependencies bundled) with Debian's Go, and cached at
//! `~/.cache/ambit/bin/kube-apiserver`. etcd comes from Debian's
//! `etcd-server`. Everything is skipped when already there; a cold build takes
//! about nine minutes on two cores.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// The Debian source package version holding Kubernetes 1.20.2.
pub const KUBERNETES_SOURCE: &str = "kubernetes=1.20.5+really1.20.2-1.1+deb12u1";
/// What the built binary reports in `--version`.
pub const KUBE_VERSION: &str = "v1.20.2";
const APT_PACKAGES: &[&str] = &[
    "golang-go",
    "etcd-server",
    "dpkg-dev",
    "rsync",
    "jq",
    "make",
    "golang-github-modern-go-reflect2-dev",
];
const DEB_SRC_LIST: &str = "/etc/apt/sources.list.d/ambit-deb-src.sources";
const REFLECT2_DEBIAN: &str = "/usr/share/gocode/src/github.com/modern-go/reflect2";

fn cache_dir() -> PathBuf {
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/ambit")
}

/// Where the built kube-apiserver is kept (`tests/src/kube.rs` looks there).
pub fn apiserver_bin() -> PathBuf {
    cache_dir().join("bin/kube-apiserver")
}

/// Installs etcd and builds kube-apiserver unless both are already there.
/// Returns a one-line summary (the version and where the binary is).
pub fn ensure(progress: &dyn Fn(&str)) -> Result<String> {
    apt(progress)?;
    quiet_etcd_service()?;
    which("etcd").context("etcd-server is installed but `etcd` is not on PATH")?;
    let bin = apiserver_bin();
    if let Some(v) = version(&bin) {
        if v.contains(KUBE_VERSION) {
            return Ok(format!(
                "kube-apiserver {KUBE_VERSION} at {}",
                bin.display()
            ));
        }
        progress(&format!(
            "{} reports {v:?}, not {KUBE_VERSION}: rebuilding",
            bin.display()
        ));
    }
    build(progress)?;
    match version(&bin) {
        Some(v) if v.contains(KUBE_VERSION) => Ok(format!(
            "kube-apiserver {KUBE_VERSION} built at {}",
            bin.display()
        )),
        other => bail!(
            "built {} but it reports {other:?}, not {KUBE_VERSION}",
            bin.display()
        ),
    }
}

fn version(bin: &Path) -> Option<String> {
    let out = Command::new(bin).arg("--version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn which(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("`{name}` not found on PATH"))
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

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn apt_get() -> Command {
    let mut c = Command::new("apt-get");
    c.env("DEBIAN_FRONTEND", "noninteractive");
    c
}

fn apt(progress: &dyn Fn(&str)) -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    progress(&format!("installing {}", missing.join(" ")));
    run(apt_get().args(["update", "-q"]))?;
    run(apt_get()
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing))
}

/// Debian's etcd-server starts (and enables) a system etcd on :2379 when the
/// init system lets it. The tests run their own etcd on free ports, so the
/// system one is only in the way: stop and disable it if it is there.
fn quiet_etcd_service() -> Result<()> {
    if Path::new("/run/systemd/system").exists() {
        let active = Command::new("systemctl")
            .args(["is-enabled", "--quiet", "etcd.service"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
            || Command::new("systemctl")
                .args(["is-active", "--quiet", "etcd.service"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
        if active {
            run(Command::new("systemctl").args(["disable", "--now", "etcd.service"]))?;
        }
    } else if Path::new("/etc/init.d/etcd").exists() {
        // No systemd: the sysvinit script (if the postinst managed to start it).
        let _ = Command::new("/etc/init.d/etcd")
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if Path::new("/usr/sbin/update-rc.d").exists() {
            let _ = Command::new("update-rc.d")
                .args(["etcd", "disable"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
    Ok(())
}

/// Adds a deb-src twin of the machine's Debian sources, once.
fn enable_deb_src(progress: &dyn Fn(&str)) -> Result<()> {
    if Path::new(DEB_SRC_LIST).exists() {
        return Ok(());
    }
    progress("enabling Debian source packages (deb-src)");
    let deb822 = Path::new("/etc/apt/sources.list.d/debian.sources");
    let content = if deb822.exists() {
        let text = fs::read_to_string(deb822).context("reading debian.sources")?;
        text.lines()
            .map(|l| {
                if l.trim_start().starts_with("Types:") {
                    "Types: deb-src".to_string()
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    } else {
        // One-line style: turn each `deb ...` of sources.list into a deb822 stanza.
        let text = fs::read_to_string("/etc/apt/sources.list")
            .context("no /etc/apt/sources.list.d/debian.sources nor /etc/apt/sources.list")?;
        let mut out = String::new();
        for l in text.lines() {
            let mut words = l.split_whitespace();
            if words.next() != Some("deb") {
                continue;
            }
            let mut rest: Vec<&str> = words.collect();
            if rest.first().is_some_and(|w| w.starts_with('[')) {
                rest.remove(0); // options like [signed-by=...]; keep it simple
            }
            if rest.len() < 3 {
                continue;
            }
            out += &format!(
                "Types: deb-src\nURIs: {}\nSuites: {}\nComponents: {}\n\n",
                rest[0],
                rest[1],
                rest[2..].join(" ")
            );
        }
        out
    };
    fs::write(DEB_SRC_LIST, content).with_context(|| format!("writing {DEB_SRC_LIST}"))?;
    run(apt_get().args(["update", "-q"]))
}

fn source_tree(src: &Path) -> Option<PathBuf> {
    fs::read_dir(src)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("kubernetes-"))
                && p.join("Makefile").exists()
        })
}

fn build(progress: &dyn Fn(&str)) -> Result<()> {
    enable_deb_src(progress)?;
    let src = cache_dir().join("kube-src");
    fs::create_dir_all(&src).with_context(|| format!("creating {}", src.display()))?;
    let tree = match source_tree(&src) {
        Some(t) => t,
        None => {
            progress(&format!("fetching the Debian source {KUBERNETES_SOURCE}"));
            run(apt_get()
                .args(["source", "-q", KUBERNETES_SOURCE])
                .current_dir(&src))?;
            source_tree(&src).with_context(|| {
                format!(
                    "apt-get source left no kubernetes-* tree in {}",
                    src.display()
                )
            })?
        }
    };

    // The bundled reflect2 v1.0.1 segfaults under Go >= 1.18 on the first
    // custom resource write; Debian's packaged copy does not.
    progress("replacing the bundled reflect2 with Debian's");
    let vendored = tree.join("vendor/github.com/modern-go/reflect2");
    run(Command::new("rsync")
        .args(["-a", "--delete"])
        .arg(format!("{REFLECT2_DEBIAN}/"))
        .arg(format!("{}/", vendored.display())))?;
    let _ = fs::remove_file(vendored.join("go.mod"));

    let log = src.join("build.log");
    progress(&format!(
        "building kube-apiserver {KUBE_VERSION} (about 9 minutes cold; log {})",
        log.display()
    ));
    let logf = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let mut child = Command::new("make")
        .arg("WHAT=cmd/kube-apiserver")
        .env("CGO_ENABLED", "0")
        .current_dir(&tree)
        .stdin(Stdio::null())
        .stdout(logf.try_clone()?)
        .stderr(logf)
        .spawn()
        .context("starting make")?;
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        std::thread::sleep(Duration::from_millis(500));
        let last = fs::read_to_string(&log)
            .ok()
            .and_then(|t| {
                t.lines()
                    .last()
                    .map(|l| l.chars().take(70).collect::<String>())
            })
            .unwrap_or_default();
        progress(&format!(
            "building kube-apiserver {KUBE_VERSION} ({}s; ~9 min cold): {last}",
            started.elapsed().as_secs()
        ));
    };
    if !status.success() {
        let text = fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "make WHAT=cmd/kube-apiserver failed ({status}); last lines of {}:\n{}",
            log.display(),
            tail.join("\n")
        );
    }
    let built = tree.join("_output/bin/kube-apiserver");
    let bin = apiserver_bin();
    fs::create_dir_all(bin.parent().context("cache bin dir")?)?;
    // Copy to a temporary name first so a half-written binary is never "cached".
    let tmp = bin.with_extension("tmp");
    fs::copy(&built, &tmp).with_context(|| format!("copying {}", built.display()))?;
    fs::rename(&tmp, &bin)?;
    Ok(())
}
