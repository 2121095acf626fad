//! The node's local config file: workloads, services, certificates and the
//! Istio security resources (PeerAuthentication, AuthorizationPolicy) as
//! operators write them: the node's source of truth in local mode (without
//! a controller). A file is read (`shape`), checked for what mesh-proto
//! cannot carry (`file_check`), converted to the messages ([`to_proto`])
//! and built by [`crate::build`], the same path as the controller's
//! resources.
//!
//! ```yaml
//! trustDomain: cluster.local        # default
//! rootNamespace: istio-system       # default; policies there are mesh-wide
//! certificates:
//!   roots: certs/root-cert.pem      # relative paths: from the file's folder
//!   identities:
//!   - identity: spiffe://cluster.local/ns/demo/sa/client
//!     certChain: certs/client.pem
//!     key: certs/client-key.pem
//! namespaces:
//! - name: demo
//!   labels: {istio.io/dataplane-mode: ambient}
//! workloads:
//! - name: client-7d9
//!   namespace: demo
//!   serviceAccount: client          # default: default
//!   node: node-a
//!   ip: 10.10.1.2
//!   netns: /run/netns/ambit-x-client
//!   labels: {app: client}
//! services:
//! - name: server
//!   namespace: demo
//!   addresses: [10.96.0.10]
//!   ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]
//!   selector: {app: server}
//! policies:
//! - apiVersion: security.istio.io/v1
//!   kind: PeerAuthentication
//!   metadata: {name: default, namespace: istio-system}
//!   spec: {mtls: {mode: STRICT}}
//! ```
//!
//! Every refusal names the entry (`workloads[2] (demo/server-1)`,
//! `policies[1] AuthorizationPolicy demo/deny-all`), the field path and the
//! reason. Accepted-but-surprising input (e.g. HTTP attributes in an
//! AuthorizationPolicy, which the node enforces at L4 only) is reported in
//! [`LocalConfig::warnings`].

mod file_check;
mod shape;
pub mod to_proto;
mod types;
mod watcher;

use std::path::{Path, PathBuf};

pub use types::*;
pub use watcher::{ConfigWatcher, ErrorReceiver, StateReceiver};

pub use crate::problems::FieldError;
use crate::problems::{fmt_problems, Problems};
use crate::state::ProxyState;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not YAML, or not the overall shape (unknown top-level field, a
    /// section that is not a list, ...).
    #[error("config is not valid: {0}")]
    Syntax(String),
    /// Every problem found, in file order.
    #[error("{}", fmt_problems(.0))]
    Invalid(Vec<FieldError>),
}

impl ConfigError {
    /// The individual problems (empty for I/O and syntax errors).
    pub fn problems(&self) -> &[FieldError] {
        match self {
            ConfigError::Invalid(v) => v,
            _ => &[],
        }
    }
}

impl From<crate::problems::Invalid> for ConfigError {
    fn from(e: crate::problems::Invalid) -> Self {
        ConfigError::Invalid(e.0)
    }
}

/// Parses and validates a config file's text. Relative certificate paths are
/// kept as written.
pub fn parse(text: &str) -> Result<LocalConfig, ConfigError> {
    let mut cfg = shape::deserialize(text)?;
    let state = build_state(&cfg)?;
    cfg.warnings = state.warnings;
    Ok(cfg)
}

/// Reads, parses and validates a config file. Relative certificate paths are
/// resolved against the file's folder.
pub fn load(path: impl AsRef<Path>) -> Result<LocalConfig, ConfigError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut cfg = shape::deserialize(&text)?;
    resolve_relative_paths(&mut cfg, path);
    let state = build_state(&cfg)?;
    cfg.warnings = state.warnings;
    Ok(cfg)
}

/// Validates `config` and builds the state (errors as [`parse`]): the
/// file's own checks, then its messages ([`to_proto::resources`]) through
/// the one builder, [`crate::build::build`].
pub fn build_state(config: &LocalConfig) -> Result<ProxyState, ConfigError> {
    let mut file = Problems::default();
    file_check::check(config, &mut file);
    file_check::merge(file, crate::build::build(&to_proto::resources(config)))
}

/// [`load`] and build the state in one step.
pub fn load_state(path: impl AsRef<Path>) -> Result<ProxyState, ConfigError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_state_at(&text, Some(path))
}

/// [`parse`] and build the state in one step.
pub fn parse_state(text: &str) -> Result<ProxyState, ConfigError> {
    parse_state_at(text, None)
}

fn parse_state_at(text: &str, path: Option<&Path>) -> Result<ProxyState, ConfigError> {
    let mut cfg = shape::deserialize(text)?;
    if let Some(p) = path {
        resolve_relative_paths(&mut cfg, p);
    }
    build_state(&cfg)
}

/// Parses a stream of Istio resources (YAML documents separated by `---`,
/// as `kubectl apply -f` takes them; a document may also be a list of
/// resources or a `kind: List`) into policies, checking each one's shape.
/// Entries are named `documents[i] Kind ns/name` (`documents[i].items[j] ...`). Whether they make
/// sense together is checked when they are part of a [`LocalConfig`].
pub fn parse_policies(text: &str) -> Result<Vec<Policy>, ConfigError> {
    shape::deserialize_policy_documents(text)
}

fn resolve_relative_paths(cfg: &mut LocalConfig, file: &Path) {
    let Some(dir) = file.parent() else { return };
    let fix = |p: &mut String| {
        if !p.is_empty() && Path::new(p.as_str()).is_relative() {
            *p = dir.join(p.as_str()).to_string_lossy().into_owned();
        }
    };
    if let Some(c) = cfg.certificates.as_mut() {
        fix(&mut c.roots);
        for i in &mut c.identities {
            fix(&mut i.cert_chain);
            fix(&mut i.key);
        }
    }
}

#[cfg(test)]
mod tests;
