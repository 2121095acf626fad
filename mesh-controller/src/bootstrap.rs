//! Per-node bootstrap credentials (local mode): a random token per node,
//! written to `<bootstrap-dir>/<node>.token` (mode 0600), presented by the
//! node as `authorization: Bearer <token>` gRPC metadata. Waypoints get one
//! too, under their node id (`waypoint~<ns>~<name>.token`). Tokens already in
//! the folder are reused, so nodes keep working across controller restarts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use rand::RngCore;
use tonic::metadata::MetadataMap;
use tonic::Status;

/// The metadata key carrying the token.
pub const AUTHORIZATION: &str = "authorization";

#[derive(Debug, Default)]
pub struct Tokens {
    dir: Option<PathBuf>,
    /// token -> node
    by_token: RwLock<HashMap<String, String>>,
    /// When false, requests need no token (tests, trusted networks).
    required: bool,
}

fn new_token() -> String {
    let mut b = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn valid_node_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 253
        && n.chars()
            // `~`: waypoint node ids (`waypoint~<ns>~<name>`).
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~'))
        && !n.starts_with('.')
}

impl Tokens {
    /// No authentication: the node is whatever the client says.
    pub fn disabled() -> Tokens {
        Tokens::default()
    }

    /// Tokens kept in `dir` (created if needed); existing `*.token` files are loaded.
    pub fn in_dir(dir: &Path) -> std::io::Result<Tokens> {
        std::fs::create_dir_all(dir)?;
        let mut by_token = HashMap::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(node) = name.strip_suffix(".token") {
                let token = std::fs::read_to_string(e.path())?.trim().to_string();
                if !token.is_empty() {
                    by_token.insert(token, node.to_string());
                }
            }
        }
        Ok(Tokens {
            dir: Some(dir.to_path_buf()),
            by_token: RwLock::new(by_token),
            required: true,
        })
    }

    /// Tokens held in memory only (tests).
    pub fn in_memory() -> Tokens {
        Tokens {
            dir: None,
            by_token: RwLock::default(),
            required: true,
        }
    }

    /// The token of `node`, issuing (and writing) one if it has none.
    pub fn ensure(&self, node: &str) -> std::io::Result<String> {
        if let Some(t) = self.token_of(node) {
            return Ok(t);
        }
        if !valid_node_name(node) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{node:?} is not a valid node name"),
            ));
        }
        let token = new_token();
        if let Some(dir) = &self.dir {
            let path = dir.join(format!("{node}.token"));
            write_private(&path, token.as_bytes())?;
        }
        self.by_token
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.clone(), node.to_string());
        Ok(token)
    }

    pub fn token_of(&self, node: &str) -> Option<String> {
        self.by_token
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(_, n)| n.as_str() == node)
            .map(|(t, _)| t.clone())
    }

    /// The node the request's token belongs to; `Ok(None)` when tokens are
    /// not required.
    // tonic's handlers return `Status`; boxing it here would only be unboxed.
    #[allow(clippy::result_large_err)]
    pub fn authenticate(&self, md: &MetadataMap) -> Result<Option<String>, Status> {
        if !self.required {
            return Ok(None);
        }
        let value = md
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Status::unauthenticated("missing bootstrap token"))?;
        let token = value.strip_prefix("Bearer ").unwrap_or(value).trim();
        self.by_token
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned()
            .map(Some)
            .ok_or_else(|| Status::unauthenticated("unknown bootstrap token"))
    }
}

pub use mesh_identity::ca::write_private;
