//! `waypoint`: the L7 proxy as a process in the waypoint pod's netns.
//!
//! `waypoint --config <file> --name <waypoint workload>` reads one YAML
//! file of several documents: the document without a `kind` is mesh-node's
//! local config (certificates, namespaces, workloads, services), the
//! documents with a `kind` are the Istio / Gateway API L7 resources
//! (VirtualService, DestinationRule, HTTPRoute). It listens for HBONE on
//! `0.0.0.0:15008` with the waypoint workload's identity, serves the HTTP
//! inside each tunnel, and reaches endpoints over HBONE.
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
use mesh_node::identity::CertStore;
use tokio::net::TcpListener;
use tracing::{info, warn};
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
    #[arg(long, default_value_t = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), mesh_node::hbone::HBONE_PORT))]
    listen: SocketAddr,
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
        return Ok(
            waypoint::xds::run(&cli.xds, &cli.name, cli.namespace.as_deref(), cli.listen).await?,
        );
    };
    let text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let (local, l7) = split(&text)?;
    let state = mesh_node::config::parse_state(&local).context("the mesh-node local config")?;
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
    let wp = Waypoint::new(config, discovery.clone(), connector);
    let listener = TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("listening on {}", cli.listen))?;
    info!(
        workload = %me.key(),
        %identity,
        listen = %cli.listen,
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
