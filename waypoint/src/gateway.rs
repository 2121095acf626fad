//! The ingress gateway role of the waypoint binary.
//!
//! Istio `Gateway` resources (networking.istio.io v1/v1beta1/v1alpha3)
//! whose `selector` labels are all on the gateway workload are compiled
//! into [`Listener`]s, one per distinct server `port.number`:
//!
//! * `HTTP`, `HTTP2`, `GRPC` servers are served as plain HTTP (HTTP/1.1 or
//!   HTTP/2 prior knowledge); `HTTPS` servers with `tls.mode: SIMPLE` are
//!   TLS-terminated (SNI picks among the certificates of the port's
//!   servers, ALPN `h2` and `http/1.1`). Other protocols and TLS modes are
//!   [`Issue`]s naming the field, and the server is left out.
//! * Certificates: `credentialName: X` is read from the credentials
//!   directory as `<dir>/X/tls.crt` and `<dir>/X/tls.key` (PEM), the layout
//!   of a Kubernetes `kubernetes.io/tls` Secret mounted as a volume;
//!   `serverCertificate` + `privateKey` are read as file paths.
//! * `tls.httpsRedirect: true` answers every request for the server's hosts
//!   with `301` to `https://` the same host (port dropped when it is 80)
//!   and path, as Envoy's `require_tls: ALL` does.
//! * Routing: VirtualServices whose `gateways` name the Gateway (`name`
//!   from its namespace, or `ns/name`) are compiled with
//!   [`Binding::Gateway`] (so `match[].gateways` apply), their `hosts`
//!   intersected with the server's `hosts` (`*`, `*.example.com`,
//!   `ns/host`, `./host`, `*/host`; the namespace part restricts which
//!   VirtualServices bind). A request whose host no server of the port
//!   allows, or that no bound VirtualService routes, gets `404`; the rest
//!   goes through the same [`Waypoint`] engine as the mesh.
//!
//! * Policies: RequestAuthentications, AuthorizationPolicies and local
//!   rate limit EnvoyFilters that select the gateway workload apply to
//!   every request of the gateway, as in Istio: the policy is in the root
//!   namespace or the workload's own, and its `selector` /
//!   `workloadSelector` labels (if any) are all on the workload. Policies
//!   with `targetRef(s)` name Services or Gateway API Gateways, not this
//!   workload, and do not apply; neither do the destination-scoped
//!   policies of other namespaces (they are the destination waypoint's).
//!   Rate limit patches apply with `match.context` `GATEWAY` or `ANY`.
//! * Every listener shares one [`Waypoint`] engine ([`Gateway`]): one
//!   metrics registry (one admin server), and pools and outlier state per
//!   destination across ports; each listener passes its own routes and
//!   policies per request ([`Waypoint::handle_with`]).
//!
//! Simplifications: one route table per port (the hosts of all servers on
//! it), not one per HTTPS server; rate limit buckets are per port (as an
//! Envoy filter instance per listener has its own).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::uri::{Scheme, Uri};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use mesh_api::networking::{GatewaySpec, Server, ServerTlsMode};
use mesh_api::{ParsedDocument, Resource};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use crate::body::{local_reply, ProxyBody};
use crate::config::Config;
use crate::connector::{Connector, Io};
use crate::discovery::{Discovery, Labels};
use crate::engine::Waypoint;
use crate::issue::{res_name, Issue};
use crate::namespace::ROOT_NAMESPACE;
use crate::peer::Peer;
use crate::policy::Policies;
use crate::routes::{split_host_port, Binding, RouteTable};
use crate::security::{Scope as SecurityScope, TargetRef};

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

// ------------------------------------------------------------- servers --

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
    certificate: Option<Arc<CertifiedKey>>,
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
    fn score(&self, host: &str) -> Option<usize> {
        self.hosts
            .iter()
            .filter_map(|h| pattern_score(&h.host, host))
            .max()
    }
}

/// The server whose hosts best name `host`, if any allows it.
fn best_server<'a>(servers: &'a [GatewayServer], host: &str) -> Option<&'a GatewayServer> {
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

// ------------------------------------------------------------ compiling --

/// Every listener of one gateway workload.
#[derive(Clone, Debug, Default)]
pub struct GatewayConfig {
    pub listeners: Vec<Listener>,
    /// Every DestinationRule: what the shared engine resolves clusters by.
    pub policies: Policies,
}

/// The gateway workload, as the policies that select it see it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GatewayWorkload {
    pub namespace: String,
    pub labels: Labels,
}

impl GatewayWorkload {
    pub fn new(namespace: &str, labels: Labels) -> Self {
        GatewayWorkload {
            namespace: namespace.to_string(),
            labels,
        }
    }

    /// Istio's workload selection: a policy of `namespace` (the root
    /// namespace's apply in every namespace) whose selector labels are all
    /// on the workload; an empty selector selects the whole namespace.
    /// `targeted` policies (`targetRef(s)`) never select by namespace or
    /// labels.
    pub fn selected_by(
        &self,
        namespace: &str,
        selector: Option<&BTreeMap<String, String>>,
        targeted: bool,
    ) -> bool {
        !targeted
            && (namespace == ROOT_NAMESPACE || namespace == self.namespace)
            && selector
                .into_iter()
                .flatten()
                .all(|(k, v)| self.labels.get(k) == Some(v))
    }
}

/// The security policies and rate limits that select the gateway workload,
/// compiled to apply to every request of the gateway.
fn gateway_policies(
    resources: &[&Resource],
    w: &GatewayWorkload,
    issues: &mut Vec<Issue>,
) -> Config {
    let mut c = Config::default();
    // The gateway is the workload: every request is its traffic.
    let whole = || SecurityScope::Targets(vec![TargetRef::Gateway]);
    for r in resources {
        let ns = r.namespace();
        match r {
            Resource::RequestAuthentication(o)
                if w.selected_by(
                    ns,
                    o.spec.selector.as_ref().map(|s| &s.match_labels),
                    o.spec.target_ref.is_some() || !o.spec.target_refs.is_empty(),
                ) =>
            {
                let before = c.authn.policies.len();
                c.authn.add(&res_name(r), ns, &o.spec, issues);
                for p in &mut c.authn.policies[before..] {
                    p.scope = whole();
                }
            }
            Resource::AuthorizationPolicy(o)
                if w.selected_by(
                    ns,
                    o.spec.selector.as_ref().map(|s| &s.match_labels),
                    o.spec.target_ref.is_some() || !o.spec.target_refs.is_empty(),
                ) =>
            {
                let before = c.authz.policies.len();
                c.authz.add(&res_name(r), ns, &o.spec, issues);
                for p in &mut c.authz.policies[before..] {
                    p.scope = whole();
                }
            }
            Resource::EnvoyFilter(o)
                if w.selected_by(
                    ns,
                    o.spec.workload_selector.as_ref().map(|s| &s.labels),
                    false,
                ) =>
            {
                // targetRefs are reported (and the filter ignored) there.
                c.ratelimits
                    .add_gateway_envoy_filter(&res_name(r), &o.spec, issues)
            }
            _ => {}
        }
    }
    c
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

/// The mode as Istio spells it.
fn tls_mode_name(m: ServerTlsMode) -> &'static str {
    match m {
        ServerTlsMode::Passthrough => "PASSTHROUGH",
        ServerTlsMode::Simple => "SIMPLE",
        ServerTlsMode::Mutual => "MUTUAL",
        ServerTlsMode::AutoPassthrough => "AUTO_PASSTHROUGH",
        ServerTlsMode::IstioMutual => "ISTIO_MUTUAL",
        ServerTlsMode::OptionalMutual => "OPTIONAL_MUTUAL",
    }
}

/// A server as far as its own fields go; `None` (with issues) when it
/// cannot be served.
fn compile_server(
    res: &str,
    path: &str,
    gateway: &Binding,
    gateway_namespace: &str,
    s: &Server,
    credentials: &Path,
    issues: &mut Vec<Issue>,
) -> Option<(u16, ListenerProtocol, GatewayServer)> {
    let Some(port) = s.port.as_ref() else {
        issues.push(Issue::new(res, &format!("{path}.port"), "required"));
        return None;
    };
    let Some(number) = port.number.and_then(|n| u16::try_from(n).ok()) else {
        issues.push(Issue::new(
            res,
            &format!("{path}.port.number"),
            "a port number 0-65535 is required",
        ));
        return None;
    };
    let proto = port
        .protocol
        .as_deref()
        .unwrap_or("HTTP")
        .to_ascii_uppercase();
    let protocol = match proto.as_str() {
        "HTTP" | "HTTP2" | "GRPC" => ListenerProtocol::Http,
        "HTTPS" => ListenerProtocol::Https,
        other => {
            issues.push(Issue::new(
                res,
                &format!("{path}.port.protocol"),
                format!("{other} servers are not supported by Ambit's gateway (HTTP, HTTP2, GRPC and HTTPS are)"),
            ));
            return None;
        }
    };
    if s.hosts.is_empty() {
        issues.push(Issue::new(
            res,
            &format!("{path}.hosts"),
            "at least one host is required",
        ));
        return None;
    }
    let hosts = s
        .hosts
        .iter()
        .map(|h| ServerHost::parse(h, gateway_namespace))
        .collect();
    let tls = s.tls.as_ref();
    let https_redirect = tls.and_then(|t| t.https_redirect).unwrap_or(false);
    let mut certificate = None;
    if protocol == ListenerProtocol::Https {
        let tp = format!("{path}.tls");
        let Some(tls) = tls else {
            issues.push(Issue::new(res, &tp, "required for HTTPS servers"));
            return None;
        };
        match tls.mode {
            Some(ServerTlsMode::Simple) => {}
            Some(m) => {
                issues.push(Issue::new(
                    res,
                    &format!("{tp}.mode"),
                    format!(
                        "{} is not supported by Ambit's gateway (only SIMPLE is)",
                        tls_mode_name(m)
                    ),
                ));
                return None;
            }
            None => {
                issues.push(Issue::new(
                    res,
                    &format!("{tp}.mode"),
                    "required for HTTPS servers",
                ));
                return None;
            }
        }
        let loaded = match (
            &tls.credential_name,
            &tls.server_certificate,
            &tls.private_key,
        ) {
            (Some(name), _, _) => {
                let dir = credentials.join(name);
                Some((
                    format!("{tp}.credentialName"),
                    load_certificate(&dir.join("tls.crt"), &dir.join("tls.key")),
                ))
            }
            (None, Some(c), Some(k)) => Some((
                format!("{tp}.serverCertificate"),
                load_certificate(Path::new(c), Path::new(k)),
            )),
            _ => None,
        };
        match loaded {
            Some((_, Ok(c))) => certificate = Some(c),
            Some((field, Err(e))) => {
                issues.push(Issue::new(res, &field, e.to_string()));
                return None;
            }
            None => {
                issues.push(Issue::new(
                    res,
                    &format!("{tp}.credentialName"),
                    "SIMPLE needs credentialName, or serverCertificate and privateKey",
                ));
                return None;
            }
        }
    }
    Some((
        number,
        protocol,
        GatewayServer {
            gateway: gateway.clone(),
            hosts,
            https_redirect,
            certificate,
        },
    ))
}

impl GatewayConfig {
    /// Compiles the Gateways selecting a workload with `labels`, the
    /// VirtualServices bound to them and every DestinationRule. Server
    /// certificates are read from `credentials` (see the module docs).
    pub fn from_resources<'a>(
        resources: impl IntoIterator<Item = &'a Resource>,
        workload: &GatewayWorkload,
        credentials: &Path,
    ) -> (Self, Vec<Issue>) {
        let labels = &workload.labels;
        let resources: Vec<&Resource> = resources.into_iter().collect();
        let mut issues = Vec::new();
        let selected = gateway_policies(&resources, workload, &mut issues);
        let mut policies = Policies::default();
        // port -> (protocol, servers)
        let mut ports: BTreeMap<u16, (ListenerProtocol, Vec<GatewayServer>)> = BTreeMap::new();
        for r in &resources {
            match r {
                Resource::DestinationRule(o) => policies.add(&res_name(r), &o.spec, &mut issues),
                Resource::Gateway(o) if selects(&o.spec, labels) => {
                    let res = res_name(r);
                    let binding = Binding::Gateway {
                        namespace: r.namespace().to_string(),
                        name: r.name().unwrap_or("").to_string(),
                    };
                    for (i, s) in o.spec.servers.iter().enumerate() {
                        let path = format!("spec.servers[{i}]");
                        let Some((port, proto, server)) = compile_server(
                            &res,
                            &path,
                            &binding,
                            r.namespace(),
                            s,
                            credentials,
                            &mut issues,
                        ) else {
                            continue;
                        };
                        let entry = ports.entry(port).or_insert((proto, Vec::new()));
                        if entry.0 != proto {
                            issues.push(Issue::new(
                                &res,
                                &format!("{path}.port.protocol"),
                                format!(
                                    "port {port} is already served as {:?} by another server",
                                    entry.0
                                ),
                            ));
                            continue;
                        }
                        entry.1.push(server);
                    }
                }
                _ => {}
            }
        }
        let mut listeners = Vec::new();
        for (port, (protocol, servers)) in ports {
            let routes = port_routes(&resources, &servers, &mut issues);
            listeners.push(Listener {
                port,
                protocol,
                servers,
                config: Config {
                    routes,
                    policies: policies.clone(),
                    authn: selected.authn.clone(),
                    authz: selected.authz.clone(),
                    ratelimits: selected.ratelimits.clone(),
                    ..Config::default()
                },
            });
        }
        // A VirtualService bound to several ports reports the same issue
        // for each.
        let mut unique: Vec<Issue> = Vec::new();
        for i in issues {
            if !unique.contains(&i) {
                unique.push(i);
            }
        }
        (
            GatewayConfig {
                listeners,
                policies,
            },
            unique,
        )
    }

    /// Like [`GatewayConfig::from_resources`] over parsed documents;
    /// documents with errors are refused whole.
    pub fn from_documents(
        docs: &[ParsedDocument],
        workload: &GatewayWorkload,
        credentials: &Path,
    ) -> (Self, Vec<Issue>) {
        let mut refused = Vec::new();
        let mut good = Vec::new();
        for d in docs {
            let Some(r) = d.resource.as_ref() else {
                continue;
            };
            if d.is_valid() {
                good.push(r);
            } else {
                for diag in d.diagnostics.iter().filter(|x| x.is_error()) {
                    refused.push(Issue::new(&res_name(r), "", diag.to_string()));
                }
            }
        }
        let (c, mut issues) = Self::from_resources(good, workload, credentials);
        refused.append(&mut issues);
        (c, refused)
    }

    /// Parses YAML text (multi-document) and compiles it.
    pub fn from_yaml(
        text: &str,
        source: &str,
        workload: &GatewayWorkload,
        credentials: &Path,
    ) -> (Self, Vec<Issue>) {
        Self::from_documents(
            &mesh_api::parse_documents(text, source),
            workload,
            credentials,
        )
    }

    /// Every listener ready to serve on one shared engine. Fails only when
    /// a TLS configuration cannot be built.
    pub fn into_gateway(
        self,
        discovery: Arc<dyn Discovery>,
        connector: Arc<dyn Connector>,
    ) -> Result<Gateway, rustls::Error> {
        let waypoint = Waypoint::new(
            Config {
                policies: self.policies,
                ..Config::default()
            },
            discovery.clone(),
            connector,
        );
        let listeners = self
            .listeners
            .into_iter()
            .map(|l| ListenerService::with_engine(l, waypoint.clone(), discovery.clone()))
            .collect::<Result<_, _>>()?;
        Ok(Gateway {
            waypoint,
            listeners,
        })
    }
}

/// Every selector label is on the workload (an empty selector selects
/// every gateway workload).
fn selects(g: &GatewaySpec, labels: &Labels) -> bool {
    g.selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The route table of one port: each VirtualService bound to a Gateway of
/// the port's servers, filed under its hosts intersected with the hosts of
/// those servers.
fn port_routes(
    resources: &[&Resource],
    servers: &[GatewayServer],
    issues: &mut Vec<Issue>,
) -> RouteTable {
    let mut gateways: Vec<&Binding> = Vec::new();
    for s in servers {
        if !gateways.contains(&&s.gateway) {
            gateways.push(&s.gateway);
        }
    }
    let mut table = RouteTable::default();
    for r in resources {
        let Resource::VirtualService(vs) = r else {
            continue;
        };
        let vs_ns = r.namespace();
        for g in &gateways {
            let hosts_of = |vs_host: &str| -> Vec<String> {
                servers
                    .iter()
                    .filter(|s| &s.gateway == *g)
                    .flat_map(|s| s.hosts.iter())
                    .filter(|h| h.namespace.as_deref().is_none_or(|n| n == vs_ns))
                    .filter_map(|h| intersect_hosts(vs_host, &h.host))
                    .collect()
            };
            table.add_bound_virtual_service(&res_name(r), vs_ns, &vs.spec, g, hosts_of, issues);
        }
    }
    table
}

// -------------------------------------------------------------- serving --

/// Resolves once `drain` is true (or its sender is gone); the borrow of
/// the value ends inside, so the future stays `Send`.
async fn drained(drain: &mut watch::Receiver<bool>) {
    let _ = drain.wait_for(|d| *d).await.map(|_| ());
}

/// A listener ready to serve: its servers, the engine with its routes, and
/// the TLS acceptor of an HTTPS port.
pub struct ListenerService {
    pub port: u16,
    pub protocol: ListenerProtocol,
    servers: Vec<GatewayServer>,
    /// This port's routes and the policies selecting the gateway.
    config: Arc<Config>,
    /// The engine, shared by the listeners of a [`Gateway`].
    waypoint: Arc<Waypoint>,
    discovery: Arc<dyn Discovery>,
    tls: Option<TlsAcceptor>,
}

/// `https://host/path?query` for an HTTP request, keeping a port other
/// than 80 (Envoy's `https_redirect` drops only the default port).
fn https_location(authority: &str, uri: &Uri) -> String {
    let (host, port) = split_host_port(authority);
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let authority = match port {
        Some(p) if p != 80 => format!("{host}:{p}"),
        _ => host,
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    format!("https://{authority}{path}")
}

/// The listeners of one gateway workload on one engine.
pub struct Gateway {
    /// The shared engine: its telemetry is what the admin server serves.
    pub waypoint: Arc<Waypoint>,
    pub listeners: Vec<Arc<ListenerService>>,
}

/// The gateway is the mesh's edge: the caller's address is appended to
/// `x-forwarded-for`, as Istio's gateways (`use_remote_address`) do.
fn append_forwarded_for(headers: &mut http::HeaderMap, caller: SocketAddr) {
    let ip = caller.ip().to_string();
    let value = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prior) if !prior.trim().is_empty() => format!("{prior}, {ip}"),
        _ => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert("x-forwarded-for", v);
    }
}

impl ListenerService {
    /// Fails only when the TLS configuration cannot be built (an HTTPS
    /// port is never served in clear).
    /// The listener on an engine of its own (see [`GatewayConfig::into_gateway`]
    /// for listeners sharing one).
    pub fn new(
        listener: Listener,
        discovery: Arc<dyn Discovery>,
        connector: Arc<dyn Connector>,
    ) -> Result<Arc<Self>, rustls::Error> {
        let waypoint = Waypoint::new(listener.config.clone(), discovery.clone(), connector);
        Self::with_engine(listener, waypoint, discovery)
    }

    /// The listener on `waypoint`'s engine (its pools, outlier state and
    /// metrics); routes and policies stay the listener's.
    pub fn with_engine(
        listener: Listener,
        waypoint: Arc<Waypoint>,
        discovery: Arc<dyn Discovery>,
    ) -> Result<Arc<Self>, rustls::Error> {
        let tls = listener.tls_config()?.map(TlsAcceptor::from);
        Ok(Arc::new(ListenerService {
            port: listener.port,
            protocol: listener.protocol,
            servers: listener.servers,
            config: Arc::new(listener.config),
            waypoint,
            discovery,
            tls,
        }))
    }

    /// The hosts of this port's servers (for logs).
    pub fn hosts(&self) -> Vec<String> {
        self.servers
            .iter()
            .flat_map(|s| s.hosts.iter().map(|h| h.host.clone()))
            .collect()
    }

    /// Host check, HTTPS redirect, then the engine. `sni`: the server name
    /// of the TLS connection on an HTTPS port; the Host must then be one of
    /// the hosts of the server it chose (as Envoy's filter chain per HTTPS
    /// server does; no routing `b.com` inside a connection made for `a.com`).
    pub async fn handle(
        &self,
        mut req: Request<Incoming>,
        peer: &Peer,
        sni: Option<&str>,
    ) -> Response<ProxyBody> {
        let authority = req.uri().authority().map(|a| a.to_string()).or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        });
        let Some(authority) = authority else {
            return local_reply(StatusCode::BAD_REQUEST, "missing host");
        };
        let host = split_host_port(&authority).0;
        let server = match sni {
            Some(sni) => best_server(&self.servers, sni)
                .filter(|s| s.score(&host.to_ascii_lowercase()).is_some()),
            None => best_server(&self.servers, host),
        };
        let Some(server) = server else {
            return local_reply(StatusCode::NOT_FOUND, "route not found");
        };
        if server.https_redirect && self.protocol == ListenerProtocol::Http {
            let mut r = local_reply(StatusCode::MOVED_PERMANENTLY, "");
            return match HeaderValue::from_str(&https_location(&authority, req.uri())) {
                Ok(v) => {
                    r.headers_mut().insert(header::LOCATION, v);
                    r
                }
                Err(_) => local_reply(StatusCode::BAD_REQUEST, "bad host"),
            };
        }
        // A host a server allows but no bound VirtualService routes has no
        // virtual host in Envoy: 404, never the mesh's default route.
        if self.config.routes.host_routes(&authority).is_none() {
            return local_reply(StatusCode::NOT_FOUND, "route not found");
        }
        if self.protocol == ListenerProtocol::Https && req.uri().scheme().is_none() {
            // HTTP/1.1 over TLS carries no scheme; routes and
            // x-forwarded-proto must see https.
            let mut parts = req.uri().clone().into_parts();
            parts.scheme = Some(Scheme::HTTPS);
            if parts.path_and_query.is_none() {
                parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
            }
            if let Ok(a) = authority.parse() {
                parts.authority = Some(a);
                if let Ok(uri) = Uri::from_parts(parts) {
                    *req.uri_mut() = uri;
                }
            }
        }
        append_forwarded_for(req.headers_mut(), peer.addr);
        self.waypoint
            .clone()
            .handle_with(req, peer, self.config.clone())
            .await
    }

    /// Serves one accepted connection (TLS handshake first on HTTPS).
    pub async fn serve_connection<I: Io>(self: Arc<Self>, io: I, peer: SocketAddr) {
        match self.tls.clone() {
            Some(acceptor) => match acceptor.accept(io).await {
                Ok(tls) => {
                    let sni = tls.get_ref().1.server_name().map(str::to_ascii_lowercase);
                    self.serve_http(tls, peer, sni).await
                }
                Err(e) => debug!(%peer, error = %e, "TLS handshake failed"),
            },
            None => self.serve_http(io, peer, None).await,
        }
    }

    async fn serve_http<I: Io>(self: Arc<Self>, io: I, addr: SocketAddr, sni: Option<String>) {
        let sni: Option<Arc<str>> = sni.map(Arc::from);
        let labels = self.discovery.source_labels(addr.ip());
        let peer = Arc::new(Peer {
            addr,
            identity: None,
            source: crate::telemetry::SourceInfo::new(
                self.discovery.workload(addr.ip()).as_deref(),
                &labels,
                false,
            ),
            labels,
        });
        let svc = service_fn(move |req: Request<Incoming>| {
            let me = self.clone();
            let peer = peer.clone();
            let sni = sni.clone();
            async move { Ok::<_, Infallible>(me.handle(req, &peer, sni.as_deref()).await) }
        });
        if let Err(e) = auto::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(io), svc)
            .await
        {
            debug!(error = %e, "gateway connection ended");
        }
    }

    /// Accepts connections until `drain` turns true.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, mut drain: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = drained(&mut drain) => break,
                accepted = listener.accept() => match accepted {
                    Ok((s, peer)) => {
                        let _ = s.set_nodelay(true);
                        tokio::spawn(self.clone().serve_connection(s, peer));
                    }
                    Err(e) => {
                        warn!(port = self.port, error = %e, "gateway accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
    }
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

    #[test]
    fn gateway_references_resolve_in_the_virtual_service_namespace() {
        let gw = Binding::Gateway {
            namespace: "edge".into(),
            name: "gw".into(),
        };
        let refs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(gw.named_by(&refs(&["gw"]), "edge"));
        assert!(!gw.named_by(&refs(&["gw"]), "team"));
        assert!(gw.named_by(&refs(&["edge/gw"]), "team"));
        assert!(!gw.named_by(&refs(&["mesh"]), "edge"));
        assert!(!gw.named_by(&[], "edge"));
        assert!(Binding::Mesh.named_by(&[], "edge"));
        assert!(Binding::Mesh.named_by(&refs(&["mesh", "edge/gw"]), "edge"));
        assert!(!Binding::Mesh.named_by(&refs(&["edge/gw"]), "edge"));
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut h = http::HeaderMap::new();
        let caller: SocketAddr = "192.0.2.7:5000".parse().expect("addr");
        append_forwarded_for(&mut h, caller);
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        append_forwarded_for(&mut h, caller);
        assert_eq!(h["x-forwarded-for"], "192.0.2.7, 192.0.2.7");
    }

    #[test]
    fn https_redirect_location() {
        let uri: Uri = "/a/b?c=1".parse().expect("uri");
        assert_eq!(
            https_location("example.com", &uri),
            "https://example.com/a/b?c=1"
        );
        assert_eq!(
            https_location("example.com:80", &uri),
            "https://example.com/a/b?c=1"
        );
        assert_eq!(
            https_location("example.com:8080", &uri),
            "https://example.com:8080/a/b?c=1"
        );
    }
}
