//! The waypoint's configuration from mesh-controller over delta xDS.
//!
//! `waypoint --xds-address http://host:15010 --bootstrap-token <file>
//! --xds-roots <pem> --name <name> --namespace <ns>` connects with
//! mesh-node's xDS client ([`mesh_xds`]) as node
//! `waypoint~<ns>~<name>` ([`mesh_proto::waypoint_id`]; `<name>` is the
//! waypoint workload's pod name, as `istio.io/use-waypoint` names it). It
//! subscribes to a node's types plus [`type_urls::L7_RESOURCE`]: the mesh
//! view (workloads, services, namespaces) becomes the [`MeshDiscovery`], the
//! L7 resources (VirtualService, DestinationRule, HTTPRoute, ...) the
//! [`Config`]. Its certificate comes from the controller's CA (mesh-node's
//! CA client, for the waypoint's own identity only).
//!
//! Every good update swaps both into the running [`Waypoint`]: requests in
//! flight finish on the old config. An update whose L7 resources mesh-api
//! refuses is NACKed and the last good config keeps serving, as it does
//! while the controller is away.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mesh_api::ParsedDocument;
use mesh_identity::{CertStore, IdentityError};
use mesh_model::state::ProxyState;
use mesh_proto::ambit::v1 as pb;
use mesh_proto::prost::Message;
use mesh_proto::type_urls;
use mesh_xds::{
    spawn_ca_for, CaOptions, ExtraCheck, WantedIdentities, XdsClient, XdsOptions, XdsView,
};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::Config;
use crate::engine::Waypoint;
use crate::hbone::{HboneConnector, MarkedSocketFactory, MeshDiscovery};
use crate::issue::Issue;

/// The xDS mode's command-line flags (flattened into the binary's).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct XdsArgs {
    /// mesh-controller's gRPC address (xDS and the CA), e.g.
    /// `http://127.0.0.1:15010`. Without it, `--config` is read instead.
    /// Needs `--namespace` (the node id is `waypoint~<ns>~<name>`).
    #[arg(long, value_name = "URL", requires = "namespace")]
    pub xds_address: Option<String>,
    /// File holding the bootstrap token of `waypoint~<ns>~<name>`.
    #[arg(long, value_name = "FILE", requires = "xds_address")]
    pub bootstrap_token: Option<PathBuf>,
    /// The mesh's trust roots (PEM); without it, the root the CA returns.
    #[arg(long, value_name = "PEM", requires = "xds_address")]
    pub xds_roots: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum XdsError {
    #[error("--namespace is required with --xds-address (the node id is waypoint~<ns>~<name>)")]
    NoNamespace,
    #[error("reading {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the xDS client stopped")]
    ClientStopped,
    /// Boxed: the identity error is large and this path is cold.
    #[error("the waypoint's TLS: {0}")]
    Tls(#[source] Box<IdentityError>),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("signals: {0}")]
    Signals(#[source] std::io::Error),
}

/// Why the L7 resources of an update cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum L7Error {
    #[error("resource {name}: not an ambit.v1.L7Resource: {reason}")]
    Decode { name: String, reason: String },
    #[error("resource {name}: the JSON is not UTF-8")]
    NotUtf8 { name: String },
    /// mesh-api's error diagnostics, one per line
    /// (`Kind ns/name: field f: reason`).
    #[error("{}", .0.join("\n"))]
    Refused(Vec<String>),
}

/// The L7 resources held (name -> `ambit.v1.L7Resource` bytes) as parsed
/// mesh-api documents, in name order.
pub fn l7_documents(resources: &BTreeMap<String, Vec<u8>>) -> Result<Vec<ParsedDocument>, L7Error> {
    let mut docs = Vec::new();
    for (name, bytes) in resources {
        let r = pb::L7Resource::decode(bytes.as_slice()).map_err(|e| L7Error::Decode {
            name: name.clone(),
            reason: e.to_string(),
        })?;
        let json =
            std::str::from_utf8(&r.json).map_err(|_| L7Error::NotUtf8 { name: name.clone() })?;
        // JSON is YAML: mesh-api parses it as the operator's file.
        docs.extend(mesh_api::parse_documents(json, &format!("xds:{name}")));
    }
    Ok(docs)
}

/// Refuses (names the resource and the field) what mesh-api refuses.
pub fn check_l7(resources: &BTreeMap<String, Vec<u8>>) -> Result<(), L7Error> {
    let errors: Vec<String> = l7_documents(resources)?
        .iter()
        .flat_map(|d| d.diagnostics.iter())
        .filter(|d| d.is_error())
        .map(|d| d.to_string())
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(L7Error::Refused(errors))
    }
}

/// The waypoint config of an update, with what it could not apply.
pub fn l7_config(view: &XdsView) -> Result<(Config, Vec<Issue>), L7Error> {
    let empty = BTreeMap::new();
    let held = view.extra.get(type_urls::L7_RESOURCE).unwrap_or(&empty);
    Ok(Config::from_documents(&l7_documents(held)?))
}

/// mesh-node's client options for waypoint `namespace/name`: its node id,
/// the L7 type, and mesh-api's check of the L7 resources (a refusal NACKs).
pub fn client_options(address: &str, namespace: &str, name: &str) -> XdsOptions {
    let mut o = XdsOptions::new(address, mesh_proto::waypoint_id::format(namespace, name));
    o.extra_types = vec![type_urls::L7_RESOURCE.to_string()];
    o.extra_check = Some(ExtraCheck(Arc::new(|ty, held| {
        if ty == type_urls::L7_RESOURCE {
            check_l7(held).map_err(|e| e.to_string())
        } else {
            Ok(())
        }
    })));
    o
}

/// The identity of workload `namespace/name` in a state (the waypoint's own
/// certificate is the only one it asks the CA for).
pub fn own_identity(namespace: &str, name: &str) -> WantedIdentities {
    let (namespace, name) = (namespace.to_string(), name.to_string());
    Arc::new(move |s: &ProxyState| {
        s.workload(&namespace, &name)
            .map(|w| s.identity_of(w))
            .into_iter()
            .collect()
    })
}

/// Swaps each good update into a running waypoint.
#[derive(Clone)]
pub struct XdsApplier {
    pub waypoint: Arc<Waypoint>,
    pub discovery: Arc<MeshDiscovery>,
}

impl XdsApplier {
    /// Applies `view`: the mesh view, then the L7 config. On an error
    /// nothing changes (the last good config keeps serving).
    pub fn apply(&self, view: &XdsView) -> Result<Vec<Issue>, L7Error> {
        let (config, issues) = l7_config(view)?;
        self.discovery.replace(&view.state);
        self.waypoint.set_config(config);
        Ok(issues)
    }

    /// Applies every new view until the client stops.
    pub async fn follow(self, mut views: watch::Receiver<Arc<XdsView>>) {
        loop {
            let view = views.borrow_and_update().clone();
            match self.apply(&view) {
                Ok(issues) => {
                    for i in &issues {
                        warn!(issue = %i, "L7 config");
                    }
                    info!(
                        workloads = view.state.workloads().len(),
                        services = view.state.services().len(),
                        l7 = view
                            .extra
                            .get(type_urls::L7_RESOURCE)
                            .map_or(0, BTreeMap::len),
                        "xDS update applied"
                    );
                }
                Err(e) => warn!("xDS update not applied, keeping the last good config: {e}"),
            }
            if views.changed().await.is_err() {
                return;
            }
        }
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, XdsError> {
    std::fs::read(path).map_err(|source| XdsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// The xDS mode of the binary: connect, wait for the first sync and the
/// certificate, serve HBONE on `listen` (and the admin server on `admin`)
/// until SIGTERM or Ctrl-C.
pub async fn run(
    args: &XdsArgs,
    name: &str,
    namespace: Option<&str>,
    listen: SocketAddr,
    admin: Option<SocketAddr>,
    access_log: bool,
) -> Result<(), XdsError> {
    let options = crate::engine::Options::default();
    run_with(args, name, namespace, listen, admin, access_log, options).await
}

/// [`run`] with the engine's `options` (the binary's limit flags).
pub async fn run_with(
    args: &XdsArgs,
    name: &str,
    namespace: Option<&str>,
    listen: SocketAddr,
    admin: Option<SocketAddr>,
    access_log: bool,
    options: crate::engine::Options,
) -> Result<(), XdsError> {
    let namespace = namespace.ok_or(XdsError::NoNamespace)?;
    let address = args.xds_address.clone().unwrap_or_default();
    let token = match &args.bootstrap_token {
        Some(p) => Some(
            String::from_utf8_lossy(&read("the bootstrap token", p)?)
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let roots = match &args.xds_roots {
        Some(p) => Some(read("the trust roots", p)?),
        None => None,
    };
    let mut opts = client_options(&address, namespace, name);
    opts.token = token.clone();
    let client = XdsClient::start(opts);
    info!(%address, node = %mesh_proto::waypoint_id::format(namespace, name), "waiting for the first xDS sync");

    // The first sync that holds the waypoint's own workload.
    let mut views = client.view.clone();
    let view = views
        .wait_for(|v| v.state.workload(namespace, name).is_some())
        .await
        .map_err(|_| XdsError::ClientStopped)?
        .clone();
    let me = view
        .state
        .workload(namespace, name)
        .cloned()
        .ok_or(XdsError::ClientStopped)?;
    let identity = view.state.identity_of(&me);

    let certs = Arc::new(CertStore::new());
    let mut ca = CaOptions::new(&address, mesh_proto::waypoint_id::format(namespace, name));
    ca.token = token;
    ca.roots_pem = roots;
    let mut ca_errors = spawn_ca_for(
        ca,
        certs.clone(),
        client.state.clone(),
        own_identity(namespace, name),
    );
    while certs.get(&identity).is_none() {
        if let Some(e) = ca_errors.borrow_and_update().clone() {
            warn!("waiting for the certificate of {identity}: {e}");
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), ca_errors.changed()).await;
    }
    // Checked once here; the listener looks it up per connection (renewals).
    certs
        .server_config(&identity)
        .map_err(|e| XdsError::Tls(Box::new(e)))?;

    let discovery = Arc::new(MeshDiscovery::from_state(&view.state));
    let connector = Arc::new(HboneConnector::new(
        certs.clone(),
        identity.clone(),
        discovery.clone(),
        Arc::new(MarkedSocketFactory::default()),
        SocketAddr::new(me.ip, 0),
    ));
    let wp = Waypoint::with_options(Config::default(), discovery.clone(), connector, options);
    wp.telemetry().set_access_log(access_log);
    let _admin = match admin {
        Some(addr) => Some(
            crate::admin::spawn(addr, wp.clone())
                .map_err(|source| XdsError::Listen { addr, source })?,
        ),
        None => None,
    };
    let applier = XdsApplier {
        waypoint: wp.clone(),
        discovery: discovery.clone(),
    };
    // The first view is applied by `follow` before it waits.
    tokio::spawn(applier.follow(client.view.clone()));

    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| XdsError::Listen {
            addr: listen,
            source,
        })?;
    info!(workload = %me.key(), %identity, %listen, "waypoint ready (xDS)");
    let (drain_tx, drain_rx) = watch::channel(false);
    let server = tokio::spawn(crate::hbone::serve_renewing(
        listener,
        certs.clone(),
        identity.clone(),
        wp,
        discovery,
        drain_rx,
    ));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(XdsError::Signals)?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    info!("waypoint draining");
    let _ = drain_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    // Keeps the client (and its receivers) alive to the end.
    drop(client);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::StaticDiscovery;
    use crate::TcpConnector;

    fn l7(name: &str, yaml: &str) -> (String, Vec<u8>) {
        let v: serde_yaml::Value = serde_yaml::from_str(yaml).expect("yaml");
        let json = serde_json::to_string(&v).expect("json");
        let r = pb::L7Resource {
            kind: "VirtualService".into(),
            namespace: "demo".into(),
            name: name.into(),
            api_version: "networking.istio.io/v1".into(),
            json: json.into_bytes(),
        };
        (format!("VirtualService/demo/{name}"), r.encode_to_vec())
    }

    fn view(resources: Vec<(String, Vec<u8>)>) -> XdsView {
        XdsView {
            state: Arc::new(ProxyState::empty()),
            extra: BTreeMap::from([(
                type_urls::L7_RESOURCE.to_string(),
                resources.into_iter().collect(),
            )]),
        }
    }

    const GOOD: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r, namespace: demo}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews-v1}\n";

    #[test]
    fn a_refused_update_keeps_the_last_good_config() {
        let discovery = Arc::new(MeshDiscovery::default());
        let wp = Waypoint::new(
            Config::default(),
            Arc::new(StaticDiscovery::new()),
            Arc::new(TcpConnector),
        );
        let applier = XdsApplier {
            waypoint: wp.clone(),
            discovery,
        };
        let issues = applier.apply(&view(vec![l7("r", GOOD)])).expect("good");
        assert!(issues.is_empty(), "{issues:?}");
        let good = format!("{:?}", wp.config().routes);
        assert!(good.contains("reviews-v1"), "{good}");

        let bad = GOOD
            .replace("reviews-v1", "reviews-v2")
            .replace("hosts:", "hostz:");
        let held = BTreeMap::from([l7("r", &bad)]);
        let err = check_l7(&held).expect_err("refused");
        let msg = err.to_string();
        assert!(msg.contains("VirtualService demo/r"), "{msg}");
        assert!(msg.contains("spec.hostz"), "{msg}");
        // The client NACKs what check_l7 refuses, so it never reaches
        // apply; apply itself refuses undecodable resources without
        // touching the config.
        let garbage = view(vec![("VirtualService/demo/x".into(), vec![0xff, 0xff])]);
        assert!(applier.apply(&garbage).is_err());
        assert!(format!("{:?}", wp.config().routes).contains("reviews-v1"));
    }
}
