//! Compiling a gateway: the Istio Gateways selecting the workload, into
//! one [`Listener`] per port with the routes of the VirtualServices bound
//! to them, and the security policies and rate limits that select the
//! workload.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use mesh_api::networking::{GatewaySpec, Server, ServerTlsMode};
use mesh_api::{ParsedDocument, Resource};

use super::serve::{Gateway, ListenerService};
use super::servers::{
    intersect_hosts, load_certificate, GatewayServer, Listener, ListenerProtocol, ServerHost,
};
use crate::config::Config;
use crate::connector::Connector;
use crate::discovery::{Discovery, Labels};
use crate::engine::{Options, Waypoint};
use crate::issue::{res_name, Issue};
use crate::namespace::ROOT_NAMESPACE;
use crate::policy::Policies;
use crate::routes::{Binding, RouteTable};
use crate::security::{Scope as SecurityScope, TargetRef};

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
        self.into_gateway_with(discovery, connector, Options::default())
    }

    /// [`GatewayConfig::into_gateway`] on an engine with `options` (its
    /// limits apply to every listener).
    pub fn into_gateway_with(
        self,
        discovery: Arc<dyn Discovery>,
        connector: Arc<dyn Connector>,
        options: Options,
    ) -> Result<Gateway, rustls::Error> {
        let waypoint = Waypoint::with_options(
            Config {
                policies: self.policies,
                ..Config::default()
            },
            discovery.clone(),
            connector,
            options,
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
