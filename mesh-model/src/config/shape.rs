//! The shape of the file (serde, entry by entry so that errors name the
//! entry): text to [`LocalConfig`]. What the entries mean is checked by the
//! builder ([`crate::build`]) and by [`super::file_check`].

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_yaml::Value;

use super::types::*;
use super::{ConfigError, FieldError};
use crate::problems::Problems;

fn into_result<T>(p: Problems, ok: T) -> Result<T, ConfigError> {
    if p.errors.is_empty() {
        Ok(ok)
    } else {
        Err(ConfigError::Invalid(p.errors))
    }
}

/// The top level, with each list entry kept as YAML so that it can be
/// checked (and named) on its own.
#[derive(Deserialize)]
#[serde(rename = "LocalConfig", rename_all = "camelCase", deny_unknown_fields)]
struct RawConfig {
    trust_domain: Option<String>,
    root_namespace: Option<String>,
    cluster_domain: Option<String>,
    certificates: Option<Value>,
    namespaces: Option<Vec<Value>>,
    workloads: Option<Vec<Value>>,
    services: Option<Vec<Value>>,
    policies: Option<Vec<Value>>,
}

fn de<T: DeserializeOwned>(v: Value, entry: &str, p: &mut Problems) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(v) {
        Ok(t) => Some(t),
        Err(e) => {
            let path = e.path().to_string();
            let field = if path == "." { String::new() } else { path };
            p.err(entry, field, e.inner().to_string());
            None
        }
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn entry_name(section: &str, i: usize, v: &Value) -> String {
    match (str_of(v, "namespace"), str_of(v, "name")) {
        (Some(ns), Some(n)) => format!("{section}[{i}] ({ns}/{n})"),
        (None, Some(n)) => format!("{section}[{i}] ({n})"),
        _ => format!("{section}[{i}]"),
    }
}

fn raw_policy_entry_name(section: &str, i: usize, v: &Value) -> String {
    let kind = str_of(v, "kind");
    let meta = v.get("metadata");
    let name = meta.and_then(|m| str_of(m, "name"));
    let ns = meta
        .and_then(|m| str_of(m, "namespace"))
        .unwrap_or("default");
    match (kind, name) {
        (Some(k), Some(n)) => format!("{section}[{i}] {k} {ns}/{n}"),
        (Some(k), None) => format!("{section}[{i}] {k}"),
        (None, Some(n)) => format!("{section}[{i}] {ns}/{n}"),
        (None, None) => format!("{section}[{i}]"),
    }
}

/// One `policies` entry: a Kubernetes resource of a node kind, then
/// mesh-policy's reading (mesh-api's checks and the node's rules, as the
/// controller reads it). Problems are named `policies[i] Kind ns/name`.
fn policy_from_value(section: &str, i: usize, v: Value, p: &mut Problems) -> Option<Policy> {
    let entry = raw_policy_entry_name(section, i, &v);
    if !v.is_mapping() {
        p.err(&entry, "", "expected a Kubernetes resource (a mapping)");
        return None;
    }
    match v.get("kind").map(Value::as_str) {
        None => {
            p.err(
                &entry,
                "kind",
                "missing (PeerAuthentication or AuthorizationPolicy)",
            );
            return None;
        }
        Some(Some(k)) if mesh_policy::NODE_KINDS.contains(&k) => {}
        Some(other) => {
            p.err(
                &entry,
                "kind",
                format!(
                    "{:?} is not supported in the node config (expected PeerAuthentication or AuthorizationPolicy)",
                    other.unwrap_or("<not a string>")
                ),
            );
            return None;
        }
    }
    let json = match serde_json::to_value(&v) {
        Ok(j) => j,
        Err(e) => {
            p.err(&entry, "", e.to_string());
            return None;
        }
    };
    match mesh_policy::parse(&json, section) {
        Ok(policy) => Some(policy),
        Err(diagnostics) => {
            for d in diagnostics {
                p.err(&entry, d.field, d.message);
            }
            None
        }
    }
}

/// Through the file's own reading ([`super::shape`]), so that a policy is
/// read by mesh-policy however the file is deserialized.
impl<'de> Deserialize<'de> for LocalConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let root = serde_yaml::Value::deserialize(d)?;
        from_value(root).map_err(serde::de::Error::custom)
    }
}

/// Text to [`LocalConfig`]: YAML syntax and the shape of every entry.
pub(super) fn deserialize(text: &str) -> Result<LocalConfig, ConfigError> {
    let root: Value =
        serde_yaml::from_str(text).map_err(|e| ConfigError::Syntax(format!("not YAML: {e}")))?;
    from_value(root)
}

/// [`deserialize`] of a document already read as YAML.
pub(super) fn from_value(root: Value) -> Result<LocalConfig, ConfigError> {
    if root.is_null() {
        return Ok(LocalConfig::default());
    }
    let raw: RawConfig = serde_path_to_error::deserialize(root).map_err(|e| {
        let path = e.path().to_string();
        ConfigError::Invalid(vec![FieldError {
            entry: "top level".into(),
            field: if path == "." { String::new() } else { path },
            reason: e.inner().to_string(),
        }])
    })?;

    let mut p = Problems::default();
    let mut cfg = LocalConfig::default();
    if let Some(td) = raw.trust_domain {
        cfg.trust_domain = td;
    }
    if let Some(r) = raw.root_namespace {
        cfg.root_namespace = r;
    }
    if let Some(c) = raw.cluster_domain {
        cfg.cluster_domain = c;
    }
    if let Some(c) = raw.certificates {
        cfg.certificates = de(c, "certificates", &mut p);
    }
    for (i, v) in raw.namespaces.unwrap_or_default().into_iter().enumerate() {
        let entry = entry_name("namespaces", i, &v);
        cfg.namespaces.extend(de(v, &entry, &mut p));
    }
    for (i, v) in raw.workloads.unwrap_or_default().into_iter().enumerate() {
        let entry = entry_name("workloads", i, &v);
        cfg.workloads.extend(de(v, &entry, &mut p));
    }
    for (i, v) in raw.services.unwrap_or_default().into_iter().enumerate() {
        let entry = entry_name("services", i, &v);
        cfg.services.extend(de(v, &entry, &mut p));
    }
    for (i, v) in raw.policies.unwrap_or_default().into_iter().enumerate() {
        cfg.policies
            .extend(policy_from_value("policies", i, v, &mut p));
    }
    into_result(p, cfg)
}

pub(super) fn deserialize_policy_documents(text: &str) -> Result<Vec<Policy>, ConfigError> {
    let mut p = Problems::default();
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let v = Value::deserialize(doc)
            .map_err(|e| ConfigError::Syntax(format!("document {i} is not YAML: {e}")))?;
        // A document may also be a plain list of resources, or `kind: List`.
        let items = match v {
            Value::Null => continue,
            Value::Sequence(items) => items,
            Value::Mapping(ref m) if m.get("kind").and_then(Value::as_str) == Some("List") => {
                match m.get("items") {
                    Some(Value::Sequence(items)) => items.clone(),
                    _ => {
                        p.err(&format!("documents[{i}] List"), "items", "must be a list");
                        continue;
                    }
                }
            }
            other => {
                out.extend(policy_from_value("documents", i, other, &mut p));
                continue;
            }
        };
        for (j, item) in items.into_iter().enumerate() {
            let section = format!("documents[{i}].items");
            out.extend(policy_from_value(&section, j, item, &mut p));
        }
    }
    into_result(p, out)
}
