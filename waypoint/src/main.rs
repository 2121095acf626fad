//! `waypoint`: the L7 proxy as a process in the waypoint pod's netns.
//!
//! `waypoint --config <file> --name <waypoint workload>` reads one YAML
//! file of several documents: the document without a `kind` is mesh-node's
//! local config (certificates, namespaces, workloads, services), the
//! documents with a `kind` are the Istio / Gateway API L7 resources
//! (VirtualService, DestinationRule, HTTPRoute). It listens for HBONE on
//! `0.0.0.0:15008` with the waypoint workload's identity, serves the HTTP
//! inside each tunnel, and reaches endpoints over HBONE. `--admin` (default
//! `127.0.0.1:15020`) serves `/metrics` and `/healthz/ready`.
//!
//! `waypoint --role gateway --config <file> --name <gateway workload>
//! --credentials <dir>` is the ingress gateway instead: it serves the
//! Istio Gateway servers that select the workload's labels, one listener
//! per server port (`--gateway-ip`, `--port-offset`), certificates of
//! `credentialName: X` read from `<dir>/X/tls.crt` and `<dir>/X/tls.key`
//! (see `waypoint::gateway`), and no HBONE listener; `--admin` serves the
//! metrics of all its listeners.
//!
//! `waypoint --xds-address http://host:15010 --bootstrap-token <file>
//! --xds-roots <pem> --name <name> --namespace <ns>` takes all of that from
//! mesh-controller instead, hot-reloaded (see `waypoint::xds`); `--config`
//! stays as the debugging mode.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Parser;
use mesh_identity::CertStore;
use tokio::net::TcpListener;
use tracing::{info, warn};
use waypoint::gateway::{GatewayConfig, GatewayWorkload};
use waypoint::hbone::{HboneConnector, MarkedSocketFactory, MeshDiscovery};
use waypoint::{Config, Waypoint};

#[derive(Parser, Debug)]
#[command(name = "waypoint", about = "Ambit's waypoint (L7 proxy over HBONE)")]
struct Cli {
    /// mesh-node local config plus L7 resources, as YAML documents.
    #[arg(
        long,
        required_unless_present = "xds_address",
        conflicts_with = "xds_address"
    )]
    config: Option<PathBuf>,
    // xDS mode (waypoint::xds).
    #[command(flatten)]
    xds: waypoint::xds::XdsArgs,
    /// The waypoint workload's name (its namespace is found in the config).
    #[arg(long)]
    name: String,
    /// The waypoint workload's namespace, when the name is not unique.
    #[arg(long)]
    namespace: Option<String>,
    /// Where to listen for HBONE.
    #[arg(long, default_value_t = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), mesh_hbone::HBONE_PORT))]
    listen: SocketAddr,
    /// Admin HTTP server: `/metrics` (Prometheus) and `/healthz/ready`.
    #[arg(long, default_value = waypoint::admin::DEFAULT_ADMIN_ADDR)]
    admin: SocketAddr,
    // Timeouts and limits (waypoint::limits).
    #[command(flatten)]
    limits: waypoint::limits::LimitArgs,
    /// Turn the per-request access log (target `access`) off.
    #[arg(long)]
    no_access_log: bool,
    // ---- gateway role (waypoint::gateway) ----
    /// `waypoint`: the per-namespace waypoint (HBONE in); `gateway`: the
    /// ingress gateway (the Istio Gateways selecting this workload).
    #[arg(long, value_enum, default_value_t = Role::Waypoint)]
    role: Role,
    /// Gateway role: the TLS Secrets named by `credentialName`, one folder
    /// each: `<dir>/<credentialName>/tls.crt` and `tls.key` (PEM).
    #[arg(long, default_value = "/etc/ambit/gateway-credentials")]
    credentials: PathBuf,
    /// Gateway role: the address the Gateway server ports are bound on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    gateway_ip: IpAddr,
    /// Gateway role: added to every Gateway server port number (to run
    /// unprivileged: 80 -> 8080 with 8000).
    #[arg(long, default_value_t = 0)]
    port_offset: u16,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Waypoint,
    Gateway,
}

/// The engine's tunables from the flags.
fn options(cli: &Cli) -> waypoint::engine::Options {
    waypoint::engine::Options {
        limits: cli.limits.limits(),
        ..Default::default()
    }
}

/// Splits the file: (mesh-node local config, L7 resources) as YAML texts.
fn split(text: &str) -> Result<(String, String)> {
    let mut local = None;
    let mut l7 = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let v: serde_yaml::Value =
            serde::Deserialize::deserialize(doc).context("parsing the config YAML")?;
        if v.is_null() {
            continue;
        }
        if v.get("kind").is_some() {
            l7.push(serde_yaml::to_string(&v)?);
        } else if local.is_none() {
            local = Some(serde_yaml::to_string(&v)?);
        } else {
            bail!("more than one document without a kind (the mesh-node local config)");
        }
    }
    let Some(local) = local else {
        bail!("no mesh-node local config document (one without a kind) in the config");
    };
    Ok((local, l7.join("---\n")))
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    // xDS mode (waypoint::xds): everything else is the --config mode.
    let Some(config_path) = cli.config.clone() else {
        return Ok(waypoint::xds::run_with(
            &cli.xds,
            &cli.name,
            cli.namespace.as_deref(),
            cli.listen,
            Some(cli.admin),
            !cli.no_access_log,
            options(&cli),
        )
        .await?);
    };
    let text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let (local, l7) = split(&text)?;
    let state = mesh_model::config::parse_state(&local).context("the mesh-node local config")?;
    let source = config_path.display().to_string();
    let (config, issues) = Config::from_yaml(&l7, &source);
    for i in &issues {
        warn!(issue = %i, "L7 config");
    }

    let me = state
        .workloads()
        .iter()
        .find(|w| w.name == cli.name && cli.namespace.as_ref().is_none_or(|n| &w.namespace == n))
        .with_context(|| format!("no workload named {} in the config", cli.name))?
        .clone();
    let identity = state.identity_of(&me);
    let paths = state
        .certificates()
        .context("the config has no certificates section")?;
    let certs = Arc::new(CertStore::new());
    certs
        .load_roots_file(&paths.roots)
        .with_context(|| format!("loading roots {}", paths.roots.display()))?;
    let cert = paths
        .for_identity(&identity)
        .with_context(|| format!("no certificate for {identity} in the config"))?;
    certs
        .load_files(&cert.cert_chain, &cert.key)
        .with_context(|| format!("loading the certificate of {identity}"))?;
    let tls = certs.server_config(&identity)?;

    let discovery = Arc::new(MeshDiscovery::from_state(&state));
    let connector = Arc::new(HboneConnector::new(
        certs.clone(),
        identity.clone(),
        discovery.clone(),
        Arc::new(MarkedSocketFactory::default()),
        SocketAddr::new(me.ip, 0),
    ));
    if cli.role == Role::Gateway {
        let workload = GatewayWorkload::new(&me.namespace, me.labels.clone());
        return run_gateway(&cli, &l7, &source, &workload, discovery, connector).await;
    }
    let wp = Waypoint::with_options(config, discovery.clone(), connector, options(&cli));
    // Admin server on its own thread and runtime.
    wp.telemetry().set_access_log(!cli.no_access_log);
    let (_admin_addr, _admin_thread) = waypoint::admin::spawn(cli.admin, wp.clone())
        .with_context(|| format!("admin server on {}", cli.admin))?;
    let listener = TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("listening on {}", cli.listen))?;
    info!(
        workload = %me.key(),
        %identity,
        listen = %cli.listen,
        admin = %cli.admin,
        "waypoint ready"
    );

    let (drain_tx, drain_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(waypoint::hbone::serve(
        listener, tls, wp, discovery, drain_rx,
    ));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    info!("waypoint draining");
    let _ = drain_tx.send(true);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), server).await;
    Ok(())
}

// ---- gateway role (waypoint::gateway) ----

/// The gateway role: a listener per Gateway server port on one shared
/// engine, and the admin server, until SIGTERM or Ctrl-C.
async fn run_gateway(
    cli: &Cli,
    l7: &str,
    source: &str,
    workload: &GatewayWorkload,
    discovery: Arc<MeshDiscovery>,
    connector: Arc<HboneConnector>,
) -> Result<()> {
    let (gateway, issues) = GatewayConfig::from_yaml(l7, source, workload, &cli.credentials);
    for i in &issues {
        warn!(issue = %i, "gateway config");
    }
    if gateway.listeners.is_empty() {
        bail!(
            "no Gateway server selects this workload (labels {:?})",
            workload.labels
        );
    }
    // Bind every port before serving any: a port taken fails the start.
    let mut bound = Vec::new();
    for l in &gateway.listeners {
        let port = l.port.checked_add(cli.port_offset).with_context(|| {
            format!("port {} + offset {} is over 65535", l.port, cli.port_offset)
        })?;
        let addr = SocketAddr::new(cli.gateway_ip, port);
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr}"))?;
        bound.push((addr, listener));
    }
    let gateway = gateway
        .into_gateway_with(discovery, connector, options(cli))
        .context("the TLS configuration of an HTTPS port")?;
    // One admin server for every listener.
    gateway
        .waypoint
        .telemetry()
        .set_access_log(!cli.no_access_log);
    let (_admin_addr, _admin_thread) = waypoint::admin::spawn(cli.admin, gateway.waypoint.clone())
        .with_context(|| format!("admin server on {}", cli.admin))?;
    let (drain_tx, drain_rx) = tokio::sync::watch::channel(false);
    let mut servers = Vec::new();
    for (service, (addr, listener)) in gateway.listeners.into_iter().zip(bound) {
        info!(listen = %addr, protocol = ?service.protocol, hosts = ?service.hosts(), "gateway listener ready");
        servers.push(tokio::spawn(service.serve(listener, drain_rx.clone())));
    }
    info!(workload = %format!("{}/{}", workload.namespace, cli.name), admin = %cli.admin, "gateway ready");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    info!("gateway draining");
    let _ = drain_tx.send(true);
    for s in servers {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s).await;
    }
    Ok(())
}
