//! The folder source: Kubernetes-shaped YAML (Namespaces, Pods, Services) and
//! Istio security resources (PeerAuthentication, AuthorizationPolicy) in a
//! folder, polled and hot-reloaded.
//!
//! Every reload is all or nothing: a folder with any invalid resource is
//! refused with a message naming the file, the resource and the field, and
//! the previous good snapshot keeps serving. The L7 kinds
//! ([`super::L7_KINDS`]: VirtualService, DestinationRule, HTTPRoute, ...)
//! are checked by mesh-api and kept for the waypoints. Kinds the controller
//! does not use (Deployments, ServiceAccounts, ...) are skipped.

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokio::sync::watch;

use super::{
    policy, service_labels, view, L7Object, Namespace, Origin, Pod, Service, ServicePort, Snapshot,
    L7_KINDS,
};

/// The annotation that gives a pod's netns path in local mode (no CNI).
pub const NETNS_ANNOTATION: &str = "ambit.io/netns";

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("reading {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Every problem, one per line: `file: Kind ns/name: field f: reason`.
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct MetaDoc {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct NamespaceDoc {
    metadata: MetaDoc,
}

#[derive(Deserialize)]
struct PodDoc {
    metadata: MetaDoc,
    #[serde(default)]
    spec: PodSpecDoc,
    #[serde(default)]
    status: PodStatusDoc,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct PodSpecDoc {
    #[serde(default)]
    node_name: Option<String>,
    #[serde(default)]
    service_account_name: Option<String>,
}

#[derive(Deserialize, Default)]
struct PodStatusDoc {
    #[serde(default, rename = "podIP")]
    pod_ip: Option<String>,
}

#[derive(Deserialize)]
struct ServiceDoc {
    metadata: MetaDoc,
    #[serde(default)]
    spec: ServiceSpecDoc,
}

#[derive(Deserialize, Default)]
struct ServiceSpecDoc {
    #[serde(default, rename = "clusterIP")]
    cluster_ip: Option<String>,
    #[serde(default, rename = "clusterIPs")]
    cluster_ips: Vec<String>,
    #[serde(default)]
    ports: Vec<PortDoc>,
    #[serde(default)]
    selector: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum IntOrString {
    Int(i64),
    Str(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PortDoc {
    #[serde(default)]
    name: Option<String>,
    port: i64,
    #[serde(default)]
    target_port: Option<IntOrString>,
    #[serde(default)]
    protocol: Option<String>,
}

fn de<T: DeserializeOwned>(
    v: serde_yaml::Value,
    what: &str,
    problems: &mut Vec<String>,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(v) {
        Ok(t) => Some(t),
        Err(e) => {
            let path = e.path().to_string();
            if path == "." {
                problems.push(format!("{what}: {}", e.inner()));
            } else {
                problems.push(format!("{what}: field {path}: {}", e.inner()));
            }
            None
        }
    }
}

fn str_at<'a>(v: &'a serde_yaml::Value, a: &str, b: &str) -> Option<&'a str> {
    v.get(a).and_then(|m| m.get(b)).and_then(|s| s.as_str())
}

/// The YAML files of `dir` (`.yaml`, `.yml`, recursively), sorted.
fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>, SourceError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = std::fs::read_dir(&d).map_err(|source| SourceError::Io {
            path: d.clone(),
            source,
        })?;
        for entry in rd {
            let entry = entry.map_err(|source| SourceError::Io {
                path: d.clone(),
                source,
            })?;
            let p = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue; // editors' swap files, hidden folders
            }
            if p.is_dir() {
                stack.push(p);
            } else if name.ends_with(".yaml") || name.ends_with(".yml") {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Reads every file of the folder: (path, text).
fn read_folder(dir: &Path) -> Result<Vec<(PathBuf, String)>, SourceError> {
    let mut out = Vec::new();
    for p in yaml_files(dir)? {
        let text = std::fs::read_to_string(&p).map_err(|source| SourceError::Io {
            path: p.clone(),
            source,
        })?;
        out.push((p, text));
    }
    Ok(out)
}

/// Parses and validates the files of a folder into a snapshot.
pub fn parse_files(files: &[(PathBuf, String)]) -> Result<Snapshot, SourceError> {
    let parts: Vec<FilePart> = files.iter().map(|(p, t)| parse_file(p, t)).collect();
    assemble(parts.iter())
}

/// What one file contributes (parsed, not yet validated as a whole).
#[derive(Default)]
struct FilePart {
    snap: Snapshot,
    problems: Vec<String>,
}

fn parse_file(path: &Path, text: &str) -> FilePart {
    let mut part = FilePart::default();
    let file = path.display().to_string();
    for (doc_index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = match serde_yaml::Value::deserialize(doc) {
            Ok(v) => v,
            Err(e) => {
                part.problems
                    .push(format!("{file}: document {doc_index}: not YAML: {e}"));
                break; // the rest of the file cannot be read reliably
            }
        };
        if value.is_null() {
            continue; // empty document (`---` at the end)
        }
        let origin = Origin {
            file: path.to_path_buf(),
            doc: doc_index,
        };
        parse_document(value, &origin, &mut part.snap, &mut part.problems);
    }
    part
}

/// The files' parts, in order, as one validated snapshot.
fn assemble<'a>(parts: impl Iterator<Item = &'a FilePart>) -> Result<Snapshot, SourceError> {
    let mut problems = Vec::new();
    let mut snap = Snapshot::default();
    for part in parts {
        problems.extend(part.problems.iter().cloned());
        for (k, v) in &part.snap.namespaces {
            snap.namespaces.insert(k.clone(), v.clone());
        }
        snap.pods.extend(part.snap.pods.iter().cloned());
        snap.services.extend(part.snap.services.iter().cloned());
        snap.policies.extend(part.snap.policies.iter().cloned());
        snap.l7.extend(part.snap.l7.iter().cloned());
    }
    if problems.is_empty() {
        problems.extend(view::check(&snap).iter().map(|p| p.describe(&snap, true)));
    }
    if problems.is_empty() {
        Ok(snap)
    } else {
        Err(SourceError::Invalid(problems))
    }
}

fn parse_document(
    value: serde_yaml::Value,
    origin: &Origin,
    snap: &mut Snapshot,
    problems: &mut Vec<String>,
) {
    let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
    let name = str_at(&value, "metadata", "name").unwrap_or("<unnamed>");
    let ns = str_at(&value, "metadata", "namespace").unwrap_or("default");
    let file = origin.file.display();
    match kind {
        "Namespace" => {
            let what = format!("{file}: Namespace {name}");
            if let Some(d) = de::<NamespaceDoc>(value, &what, problems) {
                snap.namespaces.insert(
                    d.metadata.name.clone(),
                    Namespace {
                        name: d.metadata.name,
                        labels: d.metadata.labels,
                    },
                );
            }
        }
        "Pod" => {
            let what = format!("{file}: Pod {ns}/{name}");
            if let Some(d) = de::<PodDoc>(value, &what, problems) {
                snap.pods.push(Pod {
                    namespace: d.metadata.namespace.unwrap_or_else(|| "default".into()),
                    name: d.metadata.name,
                    netns: d.metadata.annotations.get(NETNS_ANNOTATION).cloned(),
                    labels: d.metadata.labels,
                    node: d.spec.node_name.filter(|n| !n.is_empty()),
                    service_account: d
                        .spec
                        .service_account_name
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(|| "default".into()),
                    ip: d.status.pod_ip.filter(|s| !s.is_empty()),
                    origin: origin.clone(),
                });
            }
        }
        "Service" => {
            let what = format!("{file}: Service {ns}/{name}");
            let Some(d) = de::<ServiceDoc>(value, &what, problems) else {
                return;
            };
            let mut addresses = d.spec.cluster_ips.clone();
            if let Some(ip) = d.spec.cluster_ip.filter(|ip| !ip.is_empty()) {
                if !addresses.contains(&ip) {
                    addresses.insert(0, ip);
                }
            }
            addresses.retain(|a| a != "None");
            let mut ports = Vec::new();
            for (i, p) in d.spec.ports.into_iter().enumerate() {
                let target_port = match p.target_port {
                    None => None,
                    Some(IntOrString::Int(n)) => Some(n),
                    Some(IntOrString::Str(s)) => match s.parse::<i64>() {
                        Ok(n) => Some(n),
                        Err(_) => {
                            problems.push(format!(
                                "{what}: field spec.ports[{i}].targetPort: named target ports ({s:?}) are not supported; use the container port number"
                            ));
                            None
                        }
                    },
                };
                ports.push(ServicePort {
                    name: p.name,
                    port: p.port,
                    target_port,
                    protocol: p.protocol,
                });
            }
            snap.services.push(Service {
                namespace: d.metadata.namespace.unwrap_or_else(|| "default".into()),
                labels: service_labels(&d.metadata.labels),
                name: d.metadata.name,
                addresses,
                ports,
                selector: d.spec.selector,
                origin: origin.clone(),
            });
        }
        k if policy::NODE_KINDS.contains(&k) => {
            let json = match serde_json::to_value(&value) {
                Ok(j) => j,
                Err(e) => {
                    problems.push(format!("{file}: {kind} {ns}/{name}: {e}"));
                    return;
                }
            };
            match policy::parse(&json, origin) {
                Ok(parsed) => {
                    snap.policies.push((parsed.policy, origin.clone()));
                    // Waypoints also receive AuthorizationPolicies (their
                    // L7 part).
                    snap.l7.extend(parsed.l7);
                }
                Err(errors) => problems.extend(errors.into_iter().map(|e| format!("{file}: {e}"))),
            }
        }
        k if L7_KINDS.contains(&k) => {
            if let Some(o) = keep_l7(&value, origin, problems) {
                snap.l7.push(o);
            }
        }
        "" => problems.push(format!(
            "{file}: document {}: no kind (expected a Kubernetes resource)",
            origin.doc
        )),
        other => {
            tracing::debug!(%file, kind = other, "skipping a kind the controller does not use");
        }
    }
}

/// An L7 resource as [`L7Object`] (checked by mesh-api); the problems name
/// the file, the resource and the field.
fn keep_l7(
    value: &serde_yaml::Value,
    origin: &Origin,
    problems: &mut Vec<String>,
) -> Option<L7Object> {
    let file = origin.file.display();
    let json = match serde_json::to_value(value) {
        Ok(j) => j,
        Err(e) => {
            problems.push(format!("{file}: document {}: {e}", origin.doc));
            return None;
        }
    };
    match L7Object::from_document(&json, origin) {
        Ok(o) => Some(o),
        Err(errors) => {
            problems.extend(errors.into_iter().map(|e| format!("{file}: {e}")));
            None
        }
    }
}

/// Loads and validates the folder once.
pub fn load(dir: &Path) -> Result<Snapshot, SourceError> {
    parse_files(&read_folder(dir)?)
}

/// A folder watched for changes.
pub struct FolderSource;

/// What the folder source publishes.
pub type SnapshotReceiver = watch::Receiver<Arc<Snapshot>>;
/// Why the folder on disk is not in force (`None` when it is).
pub type ErrorReceiver = watch::Receiver<Option<String>>;

impl FolderSource {
    pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(100);
    /// Once a poll sees a change, the delay to the poll that confirms it.
    pub const CONFIRM_DELAY: Duration = Duration::from_millis(25);

    /// Loads `dir` (which must be valid) and polls it every `interval` for
    /// the life of the returned receivers. A poll that sees a change polls
    /// again after [`Self::CONFIRM_DELAY`] (or `interval` if shorter); the
    /// change applies once two polls in a row see the same content, so a
    /// file caught half-written is never taken for the new config. Must run
    /// within a Tokio runtime.
    pub fn spawn(
        dir: impl Into<PathBuf>,
        interval: Duration,
    ) -> Result<(SnapshotReceiver, ErrorReceiver), SourceError> {
        let dir = dir.into();
        let mut cache = FolderCache::default();
        let initial = cache.scan(&dir)?;
        let mut snap = cache.parse()?;
        snap.version = 1;
        tracing::info!(folder = %dir.display(), pods = snap.pods.len(),
            services = snap.services.len(), policies = snap.policies.len(), "config loaded");
        let (tx, rx) = watch::channel(Arc::new(snap));
        let (etx, erx) = watch::channel(None::<String>);
        tokio::spawn(poll(dir, interval, cache, initial, tx, etx));
        Ok((rx, erx))
    }
}

/// A file as last read.
struct CachedFile {
    len: u64,
    mtime: Option<SystemTime>,
    /// When the read started.
    read_at: SystemTime,
    hash: u64,
    text: String,
    parsed: Option<FilePart>,
}

/// The folder's files as last read, so that a poll re-reads (and a reload
/// re-parses) only the files that changed.
#[derive(Default)]
struct FolderCache {
    files: BTreeMap<PathBuf, CachedFile>,
}

/// A file whose mtime is older than its read by this much cannot have been
/// rewritten since without its mtime changing (mtimes have a coarse clock).
const MTIME_SETTLED: Duration = Duration::from_secs(1);

impl FolderCache {
    /// Lists and stats the folder, reads the files that changed (or may
    /// have), and returns the hash of the folder's content.
    fn scan(&mut self, dir: &Path) -> Result<u64, SourceError> {
        let mut files = BTreeMap::new();
        for p in yaml_files(dir)? {
            let io = |source| SourceError::Io {
                path: p.clone(),
                source,
            };
            let meta = std::fs::metadata(&p).map_err(io)?;
            let (len, mtime) = (meta.len(), meta.modified().ok());
            if let Some(c) = self.files.remove(&p) {
                let settled = mtime.is_some_and(|m| {
                    c.read_at
                        .duration_since(m)
                        .is_ok_and(|d| d >= MTIME_SETTLED)
                });
                if settled && c.len == len && c.mtime == mtime {
                    files.insert(p, c);
                    continue;
                }
                let read_at = SystemTime::now();
                let text = std::fs::read_to_string(&p).map_err(io)?;
                let hash = hash_text(&text);
                let parsed = if hash == c.hash && text == c.text {
                    c.parsed
                } else {
                    None
                };
                files.insert(
                    p,
                    CachedFile {
                        len,
                        mtime,
                        read_at,
                        hash,
                        text,
                        parsed,
                    },
                );
                continue;
            }
            let read_at = SystemTime::now();
            let text = std::fs::read_to_string(&p).map_err(io)?;
            files.insert(
                p,
                CachedFile {
                    len,
                    mtime,
                    read_at,
                    hash: hash_text(&text),
                    text,
                    parsed: None,
                },
            );
        }
        self.files = files;
        let mut h = DefaultHasher::new();
        for (p, c) in &self.files {
            p.hash(&mut h);
            c.hash.hash(&mut h);
        }
        Ok(h.finish())
    }

    /// Parses the files not parsed yet and validates the whole.
    fn parse(&mut self) -> Result<Snapshot, SourceError> {
        for (p, c) in self.files.iter_mut() {
            if c.parsed.is_none() {
                c.parsed = Some(parse_file(p, &c.text));
            }
        }
        assemble(self.files.values().filter_map(|c| c.parsed.as_ref()))
    }
}

fn hash_text(text: &str) -> u64 {
    let mut h = DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

async fn poll(
    dir: PathBuf,
    interval: Duration,
    cache: FolderCache,
    initial: u64,
    tx: watch::Sender<Arc<Snapshot>>,
    etx: watch::Sender<Option<String>>,
) {
    let mut cache = Some(cache);
    let mut last = Some(initial);
    // A change is applied once two polls in a row see the same content, so
    // that a file caught half-written is never taken for the new config.
    let mut pending: Option<u64> = None;
    let mut version = 1u64;
    let confirm = FolderSource::CONFIRM_DELAY.min(interval);
    loop {
        let delay = if pending.is_some() { confirm } else { interval };
        tokio::time::sleep(delay).await;
        if tx.is_closed() {
            return;
        }
        let Some(mut c) = cache.take() else {
            return;
        };
        let d = dir.clone();
        let Ok((c, scanned)) = tokio::task::spawn_blocking(move || {
            let r = c.scan(&d);
            (c, r)
        })
        .await
        else {
            cache = Some(FolderCache::default());
            continue;
        };
        cache = Some(c);
        let h = match scanned {
            Ok(h) => h,
            Err(e) => {
                let msg = e.to_string();
                if etx.borrow().as_deref() != Some(msg.as_str()) {
                    tracing::error!("{msg}; keeping the last good config");
                    etx.send_replace(Some(msg));
                }
                last = None;
                pending = None;
                continue;
            }
        };
        if last == Some(h) {
            pending = None;
            continue;
        }
        if pending != Some(h) {
            pending = Some(h);
            continue;
        }
        pending = None;
        last = Some(h);
        let Some(mut c) = cache.take() else {
            return;
        };
        let (c, parsed) = match tokio::task::spawn_blocking(move || {
            let r = c.parse();
            (c, r)
        })
        .await
        {
            Ok(r) => r,
            Err(_) => {
                last = None;
                (
                    FolderCache::default(),
                    Err(SourceError::Invalid(Vec::new())),
                )
            }
        };
        cache = Some(c);
        match parsed {
            Ok(mut snap) => {
                version += 1;
                snap.version = version;
                tracing::info!(folder = %dir.display(), version, pods = snap.pods.len(),
                    services = snap.services.len(), policies = snap.policies.len(), "config reloaded");
                tx.send_replace(Arc::new(snap));
                etx.send_replace(None);
            }
            Err(SourceError::Invalid(p)) if p.is_empty() => {}
            Err(e) => {
                let msg = e.to_string();
                tracing::error!("config rejected, keeping the last good config:\n{msg}");
                etx.send_replace(Some(msg));
            }
        }
    }
}
