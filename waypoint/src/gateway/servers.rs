//! What a gateway port serves: its servers' hosts (`[namespace/]host`
//! patterns), the server that best names a request's host, and for HTTPS
//! the certificate the SNI picks.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::Config;
use crate::routes::Binding;

/// Why a server's certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{0}")]
    Pem(#[from] mesh_identity::IdentityError),
    #[error("the key does not fit the certificate or is not supported: {0}")]
    Key(rustls::Error),
}

/// A Gateway server host: `[namespace/]host`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerHost {
    /// `None`: VirtualServices of every namespace bind.
    pub namespace: Option<String>,
    /// Lowercase: `example.com`, `*.example.com`, `*`.
    pub host: String,
}

impl ServerHost {
    /// Parses a server host of a Gateway in `gateway_namespace`.
    pub fn parse(written: &str, gateway_namespace: &str) -> Self {
        let (ns, host) = match written.split_once('/') {
            Some(("*", h)) => (None, h),
            Some((".", h)) => (Some(gateway_namespace.to_string()), h),
            Some((ns, h)) => (Some(ns.to_string()), h),
            None => (None, written),
        };
        ServerHost {
            namespace: ns,
            host: host.to_ascii_lowercase(),
        }
    }
}

/// How specifically `pattern` (`*`, `*.suffix`, exact) names `host`:
/// exact beats any wildcard, a longer suffix beats a shorter one.
fn pattern_score(pattern: &str, host: &str) -> Option<usize> {
    if pattern == host {
        return Some(usize::MAX);
    }
    if pattern == "*" {
        return Some(0);
    }
    let suffix = pattern.strip_prefix('*')?;
    host.ends_with(suffix).then_some(suffix.len())
}

/// The hosts both a VirtualService host and a server host allow (Istio
/// files the more specific of the two); `None` when disjoint.
pub fn intersect_hosts(vs_host: &str, server_host: &str) -> Option<String> {
    let vs = vs_host.to_ascii_lowercase();
    if pattern_score(server_host, &vs).is_some() {
        return Some(vs);
    }
    if pattern_score(&vs, server_host).is_some() {
        return Some(server_host.to_string());
    }
    None
}

/// One compiled Gateway server.
#[derive(Clone)]
pub struct GatewayServer {
    /// The Gateway it comes from.
    pub gateway: Binding,
    pub hosts: Vec<ServerHost>,
    pub https_redirect: bool,
    pub(super) certificate: Option<Arc<CertifiedKey>>,
}

impl fmt::Debug for GatewayServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayServer")
            .field("gateway", &self.gateway)
            .field("hosts", &self.hosts)
            .field("https_redirect", &self.https_redirect)
            .field("tls", &self.certificate.is_some())
            .finish()
    }
}

impl GatewayServer {
    pub(super) fn score(&self, host: &str) -> Option<usize> {
        self.hosts
            .iter()
            .filter_map(|h| pattern_score(&h.host, host))
            .max()
    }
}

/// The server whose hosts best name `host`, if any allows it.
pub(super) fn best_server<'a>(
    servers: &'a [GatewayServer],
    host: &str,
) -> Option<&'a GatewayServer> {
    let host = host.to_ascii_lowercase();
    servers
        .iter()
        .filter_map(|s| s.score(&host).map(|x| (x, s)))
        .max_by_key(|(x, _)| *x)
        .map(|(_, s)| s)
}

/// What a listener speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenerProtocol {
    /// HTTP/1.1 or HTTP/2 in clear.
    Http,
    /// TLS-terminated HTTP.
    Https,
}

/// One port of the gateway: its servers and its route table.
#[derive(Clone, Debug)]
pub struct Listener {
    /// The Gateway server `port.number`.
    pub port: u16,
    pub protocol: ListenerProtocol,
    pub servers: Vec<GatewayServer>,
    /// The routes bound to this port's servers, and every DestinationRule.
    pub config: Config,
}

/// Picks the certificate of the server whose hosts best name the SNI;
/// without SNI, a server with host `*`.
#[derive(Debug)]
struct SniResolver {
    certs: Vec<(String, Arc<CertifiedKey>)>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = hello.server_name().unwrap_or("").to_ascii_lowercase();
        self.certs
            .iter()
            .filter_map(|(p, c)| {
                let s = if sni.is_empty() {
                    (p == "*").then_some(0)
                } else {
                    pattern_score(p, &sni)
                };
                s.map(|s| (s, c))
            })
            .max_by_key(|(s, _)| *s)
            .map(|(_, c)| c.clone())
    }
}

impl Listener {
    /// The best server for a request host, if any server allows it.
    pub fn server_for(&self, host: &str) -> Option<&GatewayServer> {
        best_server(&self.servers, host)
    }

    /// The TLS configuration of an HTTPS listener (`None` for HTTP).
    pub fn tls_config(&self) -> Result<Option<Arc<rustls::ServerConfig>>, rustls::Error> {
        if self.protocol != ListenerProtocol::Https {
            return Ok(None);
        }
        let mut certs = Vec::new();
        for s in &self.servers {
            if let Some(c) = &s.certificate {
                for h in &s.hosts {
                    certs.push((h.host.clone(), c.clone()));
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SniResolver { certs }));
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Some(Arc::new(cfg)))
    }
}

fn read(path: &Path) -> Result<Vec<u8>, CredentialError> {
    std::fs::read(path).map_err(|source| CredentialError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Loads a PEM chain and key as a rustls certified key.
pub fn load_certificate(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, CredentialError> {
    let chain = mesh_identity::certs_from_pem(&read(cert)?, &cert.display().to_string())?;
    let key = mesh_identity::key_from_pem(&read(key)?, &key.display().to_string())?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key, &provider)
        .map(Arc::new)
        .map_err(CredentialError::Key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_hosts_parse() {
        assert_eq!(
            ServerHost::parse("./Example.com", "prod"),
            ServerHost {
                namespace: Some("prod".into()),
                host: "example.com".into()
            }
        );
        assert_eq!(ServerHost::parse("*/a.b", "prod").namespace, None);
        assert_eq!(
            ServerHost::parse("web/*.b", "prod").namespace.as_deref(),
            Some("web")
        );
        assert_eq!(ServerHost::parse("*", "prod").host, "*");
    }

    #[test]
    fn hosts_intersect() {
        assert_eq!(intersect_hosts("*", "*").as_deref(), Some("*"));
        assert_eq!(
            intersect_hosts("*", "example.com").as_deref(),
            Some("example.com")
        );
        assert_eq!(
            intersect_hosts("example.com", "*").as_deref(),
            Some("example.com")
        );
        assert_eq!(
            intersect_hosts("a.example.com", "*.example.com").as_deref(),
            Some("a.example.com")
        );
        assert_eq!(
            intersect_hosts("*.example.com", "a.example.com").as_deref(),
            Some("a.example.com")
        );
        assert_eq!(intersect_hosts("example.org", "example.com"), None);
        assert_eq!(intersect_hosts("*.example.org", "*.example.com"), None);
    }
}
