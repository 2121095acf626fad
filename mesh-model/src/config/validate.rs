//! Turning the file into a `ProxyState`: shape checks (serde, entry by entry
//! so that errors name the entry), then meaning checks and compilation.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use ipnet::IpNet;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_yaml::Value;

use super::types::*;
use super::{ConfigError, FieldError};
use crate::state::{
    CertificatePaths, IdentityCertPaths, Namespace, Protocol, ProxyState, Service, ServicePort,
    Workload,
};
use mesh_authz::{
    labels_match, Action, AuthzPolicy, Condition, MtlsMode, OperationMatch, PeerAuthnPolicy, Rule,
    SourceMatch, StrMatch,
};
use mesh_identity::Identity;

#[derive(Default)]
struct Problems {
    errors: Vec<FieldError>,
    warnings: Vec<String>,
}

impl Problems {
    fn err(&mut self, entry: &str, field: impl Into<String>, reason: impl Into<String>) {
        self.errors.push(FieldError {
            entry: entry.to_string(),
            field: field.into(),
            reason: reason.into(),
        });
    }

    fn warn(&mut self, entry: &str, msg: impl std::fmt::Display) {
        self.warnings.push(format!("{entry}: {msg}"));
    }

    fn into_result<T>(self, ok: impl FnOnce(Vec<String>) -> T) -> Result<T, ConfigError> {
        if self.errors.is_empty() {
            Ok(ok(self.warnings))
        } else {
            Err(ConfigError::Invalid(self.errors))
        }
    }
}

// ---------------------------------------------------------------- shape --

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

fn policy_entry_name(section: &str, i: usize, kind: Option<&str>, meta: &ObjectMeta) -> String {
    let ns = meta.namespace.as_deref().unwrap_or("default");
    match kind {
        Some(k) => format!("{section}[{i}] {k} {ns}/{}", meta.name),
        None => format!("{section}[{i}] {ns}/{}", meta.name),
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

fn policy_from_value(section: &str, i: usize, v: Value, p: &mut Problems) -> Option<Policy> {
    let entry = raw_policy_entry_name(section, i, &v);
    if !v.is_mapping() {
        p.err(&entry, "", "expected a Kubernetes resource (a mapping)");
        return None;
    }
    let kind = match v.get("kind") {
        None => {
            p.err(
                &entry,
                "kind",
                "missing (PeerAuthentication or AuthorizationPolicy)",
            );
            return None;
        }
        Some(k) => k.as_str().map(str::to_string),
    };
    let policy = match kind.as_deref() {
        Some("PeerAuthentication") => {
            de::<PeerAuthentication>(v, &entry, p).map(Policy::PeerAuthentication)
        }
        Some("AuthorizationPolicy") => {
            de::<AuthorizationPolicy>(v, &entry, p).map(Policy::AuthorizationPolicy)
        }
        other => {
            p.err(
                &entry,
                "kind",
                format!(
                    "{:?} is not supported in the node config (expected PeerAuthentication or AuthorizationPolicy)",
                    other.unwrap_or("<not a string>")
                ),
            );
            None
        }
    }?;
    check_api_version(&entry, policy.api_version(), p);
    Some(policy)
}

fn check_api_version(entry: &str, api_version: &str, p: &mut Problems) {
    if !SECURITY_API_VERSIONS.contains(&api_version) {
        p.err(
            entry,
            "apiVersion",
            format!(
                "{api_version:?} is not supported (accepted: {})",
                SECURITY_API_VERSIONS.join(", ")
            ),
        );
    }
}

/// Text to [`LocalConfig`]: YAML syntax and the shape of every entry.
pub(super) fn deserialize(text: &str) -> Result<LocalConfig, ConfigError> {
    let root: Value =
        serde_yaml::from_str(text).map_err(|e| ConfigError::Syntax(format!("not YAML: {e}")))?;
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
    p.into_result(|_| cfg)
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
    p.into_result(|_| out)
}

// ------------------------------------------------------------- meaning --

const NAME_RULE: &str =
    "lower-case letters, digits and '-', starting and ending with a letter or digit";

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn check_label_name(entry: &str, field: &str, s: &str, p: &mut Problems) {
    if !is_dns_label(s) {
        p.err(
            entry,
            field,
            format!("{s:?} is not a valid name (at most 63 {NAME_RULE})"),
        );
    }
}

fn check_subdomain_name(entry: &str, field: &str, s: &str, p: &mut Problems) {
    if !is_dns_subdomain(s) {
        p.err(
            entry,
            field,
            format!("{s:?} is not a valid name ({NAME_RULE}, '.' between parts)"),
        );
    }
}

fn check_labels(entry: &str, field: &str, labels: &BTreeMap<String, String>, p: &mut Problems) {
    for (k, v) in labels {
        let key_ok = !k.is_empty()
            && k.len() <= 317
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' || c == '/');
        if !key_ok {
            p.err(
                entry,
                format!("{field}.{k}"),
                format!("{k:?} is not a valid label key"),
            );
        }
        let val_ok = v.len() <= 63
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
        if !val_ok {
            p.err(
                entry,
                format!("{field}.{k}"),
                format!("{v:?} is not a valid label value"),
            );
        }
    }
}

fn parse_port(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u32>() {
        Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
        Ok(n) => Err(format!("{n} is out of range (1-65535)")),
        Err(_) => Err(format!("{s:?} is not a port number (1-65535)")),
    }
}

fn check_port_number(n: i64) -> Result<u16, String> {
    u16::try_from(n)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{n} is out of range (1-65535)"))
}

fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let t = s.trim();
    if t.contains('/') {
        t.parse::<IpNet>()
            .map_err(|_| format!("{s:?} is not a CIDR block (e.g. 10.0.0.0/16)"))
    } else {
        t.parse::<IpAddr>()
            .map(IpNet::from)
            .map_err(|_| format!("{s:?} is not an IP address or CIDR block"))
    }
}

fn parse_principal(s: &str) -> Result<StrMatch, String> {
    if s.starts_with("spiffe://") {
        return Err(format!(
            "{s:?}: principals are written without the spiffe:// scheme (e.g. cluster.local/ns/demo/sa/client)"
        ));
    }
    StrMatch::parse(s)
}

/// Validates each string of a list with `f`, reporting `field[i]`.
fn each<T>(
    entry: &str,
    field: &str,
    values: &[String],
    p: &mut Problems,
    f: impl Fn(&str) -> Result<T, String>,
) -> Vec<T> {
    let mut out = Vec::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
        if v.is_empty() {
            p.err(entry, format!("{field}[{i}]"), "empty value is not allowed");
            continue;
        }
        match f(v) {
            Ok(t) => out.push(t),
            Err(e) => p.err(entry, format!("{field}[{i}]"), e),
        }
    }
    out
}

/// Builds the state from a deserialized config, checking what the file means.
pub(crate) fn compile(cfg: &LocalConfig) -> Result<ProxyState, ConfigError> {
    let mut p = Problems::default();

    if cfg.trust_domain.is_empty() || cfg.trust_domain.contains('/') {
        p.err(
            "top level",
            "trustDomain",
            format!("{:?} is not a trust domain", cfg.trust_domain),
        );
    }
    check_label_name("top level", "rootNamespace", &cfg.root_namespace, &mut p);
    check_subdomain_name("top level", "clusterDomain", &cfg.cluster_domain, &mut p);

    // namespaces
    let mut namespaces: BTreeMap<String, Namespace> = BTreeMap::new();
    let mut ns_index: HashMap<&str, usize> = HashMap::new();
    for (i, ns) in cfg.namespaces.iter().enumerate() {
        let entry = format!("namespaces[{i}] ({})", ns.name);
        check_label_name(&entry, "name", &ns.name, &mut p);
        check_labels(&entry, "labels", &ns.labels, &mut p);
        if let Some(j) = ns_index.insert(&ns.name, i) {
            p.err(
                &entry,
                "name",
                format!("duplicate namespace {:?} (also namespaces[{j}])", ns.name),
            );
            continue;
        }
        namespaces.insert(
            ns.name.clone(),
            Namespace {
                name: ns.name.clone(),
                labels: ns.labels.clone(),
            },
        );
    }
    let ns_listed = |ns: &str| namespaces.contains_key(ns);

    let certificates = cfg
        .certificates
        .as_ref()
        .map(|c| compile_certificates(c, &cfg.trust_domain, &mut p));

    // workloads
    let mut workloads: Vec<Arc<Workload>> = Vec::new();
    let mut by_ip: HashMap<IpAddr, Arc<Workload>> = HashMap::new();
    let mut ip_owner: HashMap<IpAddr, String> = HashMap::new();
    let mut wl_names: HashMap<(String, String), usize> = HashMap::new();
    for (i, w) in cfg.workloads.iter().enumerate() {
        let entry = format!("workloads[{i}] ({}/{})", w.namespace, w.name);
        let before = p.errors.len();
        check_subdomain_name(&entry, "name", &w.name, &mut p);
        if !ns_listed(&w.namespace) {
            p.err(
                &entry,
                "namespace",
                format!("namespace {:?} is not listed under namespaces", w.namespace),
            );
        }
        let sa = w
            .service_account
            .clone()
            .unwrap_or_else(|| "default".into());
        check_subdomain_name(&entry, "serviceAccount", &sa, &mut p);
        if w.node.trim().is_empty() {
            p.err(&entry, "node", "must not be empty");
        }
        let ip = match w.ip.trim().parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                p.err(&entry, "ip", format!("{:?} is not an IP address", w.ip));
                None
            }
        };
        let netns = w.netns.as_ref().map(PathBuf::from);
        if let Some(n) = &netns {
            if !n.is_absolute() {
                p.err(
                    &entry,
                    "netns",
                    format!("{:?} must be an absolute path", n.display().to_string()),
                );
            }
        }
        check_labels(&entry, "labels", &w.labels, &mut p);
        if let Some(j) = wl_names.insert((w.namespace.clone(), w.name.clone()), i) {
            p.err(
                &entry,
                "name",
                format!(
                    "duplicate workload {}/{} (also workloads[{j}])",
                    w.namespace, w.name
                ),
            );
        }
        if let Some(ip) = ip {
            if let Some(other) = ip_owner.get(&ip) {
                p.err(
                    &entry,
                    "ip",
                    format!("{ip} is already the address of {other}"),
                );
            }
        }
        let (Some(ip), true) = (ip, p.errors.len() == before) else {
            continue;
        };
        ip_owner.insert(ip, entry.clone());
        let wl = Arc::new(Workload {
            name: w.name.clone(),
            namespace: w.namespace.clone(),
            service_account: sa,
            node: w.node.clone(),
            ip,
            netns,
            labels: w.labels.clone(),
        });
        by_ip.insert(ip, wl.clone());
        workloads.push(wl);
    }

    // services
    let mut services: Vec<Arc<Service>> = Vec::new();
    let mut by_vip: HashMap<SocketAddr, (Arc<Service>, usize)> = HashMap::new();
    let mut vip_owner: HashMap<SocketAddr, String> = HashMap::new();
    let mut svc_names: HashMap<(String, String), usize> = HashMap::new();
    for (i, s) in cfg.services.iter().enumerate() {
        let entry = format!("services[{i}] ({}/{})", s.namespace, s.name);
        let before = p.errors.len();
        check_label_name(&entry, "name", &s.name, &mut p);
        if !ns_listed(&s.namespace) {
            p.err(
                &entry,
                "namespace",
                format!("namespace {:?} is not listed under namespaces", s.namespace),
            );
        }
        if let Some(j) = svc_names.insert((s.namespace.clone(), s.name.clone()), i) {
            p.err(
                &entry,
                "name",
                format!(
                    "duplicate service {}/{} (also services[{j}])",
                    s.namespace, s.name
                ),
            );
        }
        if s.addresses.is_empty() {
            p.err(
                &entry,
                "addresses",
                "at least one address (cluster IP) is required",
            );
        }
        let mut addresses = Vec::new();
        for (k, a) in s.addresses.iter().enumerate() {
            match a.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    if let Some(owner) = ip_owner.get(&ip) {
                        p.err(
                            &entry,
                            format!("addresses[{k}]"),
                            format!("{ip} is already the address of {owner}"),
                        );
                    }
                    addresses.push(ip);
                }
                Err(_) => p.err(
                    &entry,
                    format!("addresses[{k}]"),
                    format!("{a:?} is not an IP address"),
                ),
            }
        }
        if s.ports.is_empty() {
            p.err(&entry, "ports", "at least one port is required");
        }
        let mut ports: Vec<ServicePort> = Vec::new();
        for (k, sp) in s.ports.iter().enumerate() {
            let port = check_port_number(sp.port)
                .map_err(|e| p.err(&entry, format!("ports[{k}].port"), e))
                .ok();
            let target = match sp.target_port {
                None => port,
                Some(t) => check_port_number(t)
                    .map_err(|e| p.err(&entry, format!("ports[{k}].targetPort"), e))
                    .ok(),
            };
            let protocol = match sp.protocol.as_deref() {
                None | Some("TCP") => Some(Protocol::Tcp),
                Some("UDP") => Some(Protocol::Udp),
                Some("SCTP") => Some(Protocol::Sctp),
                Some(other) => {
                    p.err(
                        &entry,
                        format!("ports[{k}].protocol"),
                        format!("{other:?} is not one of TCP, UDP, SCTP"),
                    );
                    None
                }
            };
            if let Some(name) = &sp.name {
                check_label_name(&entry, &format!("ports[{k}].name"), name, &mut p);
            }
            let (Some(port), Some(target_port), Some(protocol)) = (port, target, protocol) else {
                continue;
            };
            if let Some(j) = ports
                .iter()
                .position(|o| o.port == port && o.protocol == protocol)
            {
                p.err(
                    &entry,
                    format!("ports[{k}].port"),
                    format!("port {port} is listed twice (also ports[{j}])"),
                );
            }
            if protocol != Protocol::Tcp {
                p.warn(
                    &entry,
                    format!("ports[{k}]: {port}/{protocol:?} is not proxied (TCP only)"),
                );
            }
            ports.push(ServicePort {
                name: sp.name.clone(),
                port,
                target_port,
                protocol,
            });
        }
        check_labels(&entry, "selector", &s.selector, &mut p);
        check_labels(&entry, "labels", &s.labels, &mut p);
        if p.errors.len() != before {
            continue;
        }
        let endpoints: Vec<Arc<Workload>> = if s.selector.is_empty() {
            Vec::new()
        } else {
            workloads
                .iter()
                .filter(|w| w.namespace == s.namespace && labels_match(&s.selector, &w.labels))
                .cloned()
                .collect()
        };
        if s.selector.is_empty() {
            p.warn(&entry, "has no selector: it has no endpoints");
        } else if endpoints.is_empty() {
            p.warn(&entry, "selector matches no workload: it has no endpoints");
        }
        let svc = Arc::new(Service {
            name: s.name.clone(),
            namespace: s.namespace.clone(),
            addresses: addresses.clone(),
            ports: ports.clone(),
            selector: s.selector.clone(),
            labels: s.labels.clone(),
            hostname: format!("{}.{}.svc.{}", s.name, s.namespace, cfg.cluster_domain),
            endpoints,
            next: AtomicUsize::new(0),
        });
        for ip in &addresses {
            for (k, port) in ports.iter().enumerate() {
                if port.protocol != Protocol::Tcp {
                    continue;
                }
                let vip = SocketAddr::new(*ip, port.port);
                if let Some(other) = vip_owner.get(&vip) {
                    p.err(
                        &entry,
                        format!("ports[{k}].port"),
                        format!("{vip} is already used by {other}"),
                    );
                    continue;
                }
                vip_owner.insert(vip, entry.clone());
                by_vip.insert(vip, (svc.clone(), k));
            }
        }
        services.push(svc);
    }

    // policies
    let mut peer_authentications = Vec::new();
    let mut authorization_policies = Vec::new();
    let mut policy_names: HashMap<(&str, String, String), usize> = HashMap::new();
    let mut ns_wide_pa: HashMap<String, String> = HashMap::new();
    for (i, pol) in cfg.policies.iter().enumerate() {
        let meta = pol.metadata();
        let entry = policy_entry_name("policies", i, Some(pol.kind()), meta);
        check_api_version(&entry, pol.api_version(), &mut p);
        check_subdomain_name(&entry, "metadata.name", &meta.name, &mut p);
        let namespace = match &meta.namespace {
            Some(ns) => {
                check_label_name(&entry, "metadata.namespace", ns, &mut p);
                ns.clone()
            }
            None => {
                p.warn(
                    &entry,
                    "metadata.namespace is not set: using \"default\", as kubectl would",
                );
                "default".to_string()
            }
        };
        if namespace != cfg.root_namespace && !ns_listed(&namespace) {
            p.warn(
                &entry,
                format!(
                    "namespace {namespace:?} is not listed under namespaces: this policy applies to no workload"
                ),
            );
        }
        if let Some(j) = policy_names.insert((pol.kind(), namespace.clone(), meta.name.clone()), i)
        {
            p.err(
                &entry,
                "metadata.name",
                format!(
                    "duplicate {} {namespace}/{} (also policies[{j}])",
                    pol.kind(),
                    meta.name
                ),
            );
        }
        match pol {
            Policy::PeerAuthentication(pa) => {
                if let Some(c) =
                    compile_peer_authn(&entry, &pa.spec, &meta.name, &namespace, cfg, &mut p)
                {
                    if c.selector.is_none() {
                        if let Some(first) = ns_wide_pa.get(&namespace) {
                            p.warn(
                                &entry,
                                format!(
                                    "another namespace-wide PeerAuthentication in {namespace:?} comes first ({first}); this one is ignored"
                                ),
                            );
                        } else {
                            ns_wide_pa.insert(namespace.clone(), entry.clone());
                        }
                    }
                    peer_authentications.push(c);
                }
            }
            Policy::AuthorizationPolicy(ap) => {
                if let Some(c) = compile_authz(&entry, &ap.spec, &meta.name, &namespace, &mut p) {
                    authorization_policies.push(c);
                }
            }
        }
    }

    p.into_result(|warnings| ProxyState {
        trust_domain: cfg.trust_domain.clone(),
        root_namespace: cfg.root_namespace.clone(),
        cluster_domain: cfg.cluster_domain.clone(),
        namespaces,
        workloads,
        by_ip,
        services,
        by_vip,
        certificates,
        peer_authentications,
        authorization_policies,
        warnings,
    })
}

fn compile_certificates(
    c: &CertificatesSpec,
    trust_domain: &str,
    p: &mut Problems,
) -> CertificatePaths {
    let entry = "certificates";
    if c.roots.trim().is_empty() {
        p.err(
            entry,
            "roots",
            "must name the PEM bundle of the trusted roots",
        );
    }
    let mut identities: Vec<IdentityCertPaths> = Vec::new();
    for (i, ic) in c.identities.iter().enumerate() {
        let field = format!("identities[{i}]");
        let id = match ic.identity.parse::<Identity>() {
            Ok(id) => Some(id),
            Err(e) => {
                p.err(entry, format!("{field}.identity"), e.to_string());
                None
            }
        };
        if ic.cert_chain.trim().is_empty() {
            p.err(entry, format!("{field}.certChain"), "must not be empty");
        }
        if ic.key.trim().is_empty() {
            p.err(entry, format!("{field}.key"), "must not be empty");
        }
        let Some(id) = id else { continue };
        if id.trust_domain != trust_domain {
            p.warn(
                entry,
                format!("{field}.identity {id} is not in the trust domain {trust_domain:?}"),
            );
        }
        if let Some(j) = identities.iter().position(|o| o.identity == id) {
            p.err(
                entry,
                format!("{field}.identity"),
                format!("{id} is listed twice (also identities[{j}])"),
            );
            continue;
        }
        identities.push(IdentityCertPaths {
            identity: id,
            cert_chain: Path::new(&ic.cert_chain).to_path_buf(),
            key: Path::new(&ic.key).to_path_buf(),
        });
    }
    CertificatePaths {
        roots: PathBuf::from(&c.roots),
        identities,
    }
}

fn mtls_mode(m: MtlsModeSpec) -> Option<MtlsMode> {
    match m {
        MtlsModeSpec::Unset => None,
        MtlsModeSpec::Disable => Some(MtlsMode::Disable),
        MtlsModeSpec::Permissive => Some(MtlsMode::Permissive),
        MtlsModeSpec::Strict => Some(MtlsMode::Strict),
    }
}

fn compile_selector(
    entry: &str,
    sel: Option<&WorkloadSelector>,
    p: &mut Problems,
) -> Option<BTreeMap<String, String>> {
    let sel = sel?;
    check_labels(entry, "spec.selector.matchLabels", &sel.match_labels, p);
    if sel.match_labels.is_empty() {
        None
    } else {
        Some(sel.match_labels.clone())
    }
}

fn compile_peer_authn(
    entry: &str,
    spec: &PeerAuthenticationSpec,
    name: &str,
    namespace: &str,
    cfg: &LocalConfig,
    p: &mut Problems,
) -> Option<PeerAuthnPolicy> {
    let before = p.errors.len();
    let selector = compile_selector(entry, spec.selector.as_ref(), p);
    let mode = spec.mtls.as_ref().and_then(|m| mtls_mode(m.mode));
    let mut port_level = BTreeMap::new();
    if let Some(ports) = &spec.port_level_mtls {
        if selector.is_none() && !ports.is_empty() {
            p.err(
                entry,
                "spec.portLevelMtls",
                "portLevelMtls requires a workload selector (spec.selector.matchLabels); namespace- and mesh-wide policies cannot set per-port modes",
            );
        }
        for (k, v) in ports {
            let port = match k {
                PortKey::Number(n) => check_port_number(*n),
                PortKey::Text(s) => parse_port(s),
            };
            match port {
                Ok(port) => {
                    port_level.insert(port, mtls_mode(v.mode));
                }
                Err(e) => p.err(entry, format!("spec.portLevelMtls.{k}"), e),
            }
        }
    }
    if namespace == cfg.root_namespace && selector.is_some() {
        p.warn(
            entry,
            "a PeerAuthentication with a selector in the root namespace applies only to workloads of that namespace",
        );
    }
    (p.errors.len() == before).then(|| PeerAuthnPolicy {
        name: name.to_string(),
        namespace: namespace.to_string(),
        selector,
        mode,
        port_level,
    })
}

fn compile_authz(
    entry: &str,
    spec: &AuthorizationPolicySpec,
    name: &str,
    namespace: &str,
    p: &mut Problems,
) -> Option<AuthzPolicy> {
    let before = p.errors.len();
    let action = match spec.action {
        ActionSpec::Allow => Action::Allow,
        ActionSpec::Deny => Action::Deny,
        ActionSpec::Audit => Action::Audit,
        ActionSpec::Custom => {
            p.err(
                entry,
                "spec.action",
                "CUSTOM is not supported by Ambit (external authorization needs an HTTP-aware proxy); use ALLOW, DENY or AUDIT",
            );
            Action::Deny
        }
    };
    if spec.provider.is_some() && spec.action != ActionSpec::Custom {
        p.err(entry, "spec.provider", "is only valid with action CUSTOM");
    }
    let targeted = spec.target_ref.is_some() || !spec.target_refs.is_empty();
    if targeted && spec.selector.is_some() {
        p.err(
            entry,
            "spec.selector",
            "selector and targetRef/targetRefs are mutually exclusive",
        );
    }
    if spec.target_ref.is_some() && !spec.target_refs.is_empty() {
        p.err(
            entry,
            "spec.targetRef",
            "targetRef and targetRefs are mutually exclusive",
        );
    }
    if targeted {
        p.warn(
            entry,
            "targets a waypoint or gateway (targetRef/targetRefs): not enforced by the node proxy",
        );
    }
    let selector = compile_selector(entry, spec.selector.as_ref(), p);
    let rules_spec = spec.rules.as_deref().unwrap_or_default();
    if rules_spec.is_empty() && action != Action::Allow {
        p.warn(
            entry,
            format!("a {action} policy without rules never matches"),
        );
    }
    let mut rules = Vec::with_capacity(rules_spec.len());
    for (j, r) in rules_spec.iter().enumerate() {
        let rule = compile_rule(entry, &format!("spec.rules[{j}]"), r, namespace, p);
        if !rule.http_attributes.is_empty() {
            let attrs = rule.http_attributes.join(", ");
            let what = if action == Action::Deny {
                "this DENY rule is enforced without them, as if they matched (more restrictive than requested)"
            } else {
                "in an ALLOW or AUDIT policy such a rule never matches (more restrictive than requested)"
            };
            p.warn(
                entry,
                format!(
                    "spec.rules[{j}] uses HTTP attributes ({attrs}) that the node proxy cannot see at L4: {what}; use a waypoint to enforce HTTP rules"
                ),
            );
        }
        rules.push(rule);
    }
    (p.errors.len() == before).then(|| AuthzPolicy {
        name: name.to_string(),
        namespace: namespace.to_string(),
        selector,
        action,
        rules,
        node_enforced: !targeted,
    })
}

fn service_account_match(
    policy_ns: &str,
) -> impl Fn(&str) -> Result<(String, String), String> + '_ {
    move |s: &str| {
        if s.contains('*') {
            return Err(format!(
                "{s:?}: wildcards are not allowed in serviceAccounts"
            ));
        }
        let (ns, sa) = match s.split_once('/') {
            Some((ns, sa)) => (ns, sa),
            None => (policy_ns, s),
        };
        if !is_dns_label(ns) || !is_dns_subdomain(sa) {
            return Err(format!(
                "{s:?} is not a service account (\"<namespace>/<name>\" or \"<name>\")"
            ));
        }
        Ok((ns.to_string(), sa.to_string()))
    }
}

fn compile_rule(entry: &str, path: &str, r: &RuleSpec, policy_ns: &str, p: &mut Problems) -> Rule {
    let mut http: Vec<String> = Vec::new();

    let from = r.from.as_ref().map(|froms| {
        if froms.is_empty() {
            p.err(
                entry,
                format!("{path}.from"),
                "must not be empty (omit it to match any source)",
            );
        }
        let mut out = Vec::new();
        for (k, f) in froms.iter().enumerate() {
            let fp = format!("{path}.from[{k}].source");
            let Some(s) = &f.source else {
                p.err(entry, fp, "must be set");
                continue;
            };
            if s == &SourceSpec::default() {
                p.err(entry, fp, "must not be empty");
                continue;
            }
            if !s.service_accounts.is_empty()
                && (!s.principals.is_empty() || !s.not_principals.is_empty())
            {
                p.err(
                    entry,
                    format!("{fp}.serviceAccounts"),
                    "cannot be combined with principals or notPrincipals",
                );
            }
            note(
                &[
                    ("requestPrincipals", !s.request_principals.is_empty()),
                    ("notRequestPrincipals", !s.not_request_principals.is_empty()),
                ],
                &mut http,
            );
            each(
                entry,
                &format!("{fp}.requestPrincipals"),
                &s.request_principals,
                p,
                StrMatch::parse,
            );
            each(
                entry,
                &format!("{fp}.notRequestPrincipals"),
                &s.not_request_principals,
                p,
                StrMatch::parse,
            );
            out.push(SourceMatch {
                principals: each(
                    entry,
                    &format!("{fp}.principals"),
                    &s.principals,
                    p,
                    parse_principal,
                ),
                not_principals: each(
                    entry,
                    &format!("{fp}.notPrincipals"),
                    &s.not_principals,
                    p,
                    parse_principal,
                ),
                namespaces: each(
                    entry,
                    &format!("{fp}.namespaces"),
                    &s.namespaces,
                    p,
                    StrMatch::parse,
                ),
                not_namespaces: each(
                    entry,
                    &format!("{fp}.notNamespaces"),
                    &s.not_namespaces,
                    p,
                    StrMatch::parse,
                ),
                service_accounts: each(
                    entry,
                    &format!("{fp}.serviceAccounts"),
                    &s.service_accounts,
                    p,
                    service_account_match(policy_ns),
                ),
                not_service_accounts: each(
                    entry,
                    &format!("{fp}.notServiceAccounts"),
                    &s.not_service_accounts,
                    p,
                    service_account_match(policy_ns),
                ),
                ip_blocks: each(
                    entry,
                    &format!("{fp}.ipBlocks"),
                    &s.ip_blocks,
                    p,
                    parse_cidr,
                ),
                not_ip_blocks: each(
                    entry,
                    &format!("{fp}.notIpBlocks"),
                    &s.not_ip_blocks,
                    p,
                    parse_cidr,
                ),
                remote_ip_blocks: each(
                    entry,
                    &format!("{fp}.remoteIpBlocks"),
                    &s.remote_ip_blocks,
                    p,
                    parse_cidr,
                ),
                not_remote_ip_blocks: each(
                    entry,
                    &format!("{fp}.notRemoteIpBlocks"),
                    &s.not_remote_ip_blocks,
                    p,
                    parse_cidr,
                ),
            });
        }
        out
    });

    let to = r.to.as_ref().map(|tos| {
        if tos.is_empty() {
            p.err(
                entry,
                format!("{path}.to"),
                "must not be empty (omit it to match any operation)",
            );
        }
        let mut out = Vec::new();
        for (k, t) in tos.iter().enumerate() {
            let tp = format!("{path}.to[{k}].operation");
            let Some(o) = &t.operation else {
                p.err(entry, tp, "must be set");
                continue;
            };
            if o == &OperationSpec::default() {
                p.err(entry, tp, "must not be empty");
                continue;
            }
            note(
                &[
                    ("hosts", !o.hosts.is_empty()),
                    ("notHosts", !o.not_hosts.is_empty()),
                    ("methods", !o.methods.is_empty()),
                    ("notMethods", !o.not_methods.is_empty()),
                    ("paths", !o.paths.is_empty()),
                    ("notPaths", !o.not_paths.is_empty()),
                ],
                &mut http,
            );
            for (field, list) in [
                ("hosts", &o.hosts),
                ("notHosts", &o.not_hosts),
                ("methods", &o.methods),
                ("notMethods", &o.not_methods),
                ("paths", &o.paths),
                ("notPaths", &o.not_paths),
            ] {
                each(entry, &format!("{tp}.{field}"), list, p, |_| Ok(()));
            }
            out.push(OperationMatch {
                ports: each(entry, &format!("{tp}.ports"), &o.ports, p, parse_port),
                not_ports: each(
                    entry,
                    &format!("{tp}.notPorts"),
                    &o.not_ports,
                    p,
                    parse_port,
                ),
            });
        }
        out
    });

    let mut when = Vec::new();
    for (k, c) in r.when.iter().flatten().enumerate() {
        let cp = format!("{path}.when[{k}]");
        if c.key.is_empty() {
            p.err(entry, format!("{cp}.key"), "must not be empty");
            continue;
        }
        if c.values.is_empty() && c.not_values.is_empty() {
            p.err(
                entry,
                &cp,
                format!(
                    "at least one of values or notValues must be set for key {:?}",
                    c.key
                ),
            );
            continue;
        }
        let vp = format!("{cp}.values");
        let np = format!("{cp}.notValues");
        let key = c.key.as_str();
        let cond = match key {
            "source.ip" | "remote.ip" => Condition::SourceIp {
                values: each(entry, &vp, &c.values, p, parse_cidr),
                not: each(entry, &np, &c.not_values, p, parse_cidr),
            },
            "destination.ip" => Condition::DestinationIp {
                values: each(entry, &vp, &c.values, p, parse_cidr),
                not: each(entry, &np, &c.not_values, p, parse_cidr),
            },
            "destination.port" => Condition::DestinationPort {
                values: each(entry, &vp, &c.values, p, parse_port),
                not: each(entry, &np, &c.not_values, p, parse_port),
            },
            "source.namespace" => Condition::SourceNamespace {
                values: each(entry, &vp, &c.values, p, StrMatch::parse),
                not: each(entry, &np, &c.not_values, p, StrMatch::parse),
            },
            "source.principal" => Condition::SourcePrincipal {
                values: each(entry, &vp, &c.values, p, parse_principal),
                not: each(entry, &np, &c.not_values, p, parse_principal),
            },
            _ if is_http_condition_key(key) => {
                each(entry, &vp, &c.values, p, |_| Ok(()));
                each(entry, &np, &c.not_values, p, |_| Ok(()));
                note(&[(key, true)], &mut http);
                Condition::NotL4
            }
            _ => {
                p.err(
                    entry,
                    format!("{cp}.key"),
                    format!(
                        "unknown attribute {key:?} (L4: source.ip, remote.ip, source.namespace, source.principal, destination.ip, destination.port; HTTP: request.headers[..], request.auth.*, connection.sni, experimental.envoy.filters.*)"
                    ),
                );
                continue;
            }
        };
        when.push(cond);
    }

    Rule {
        from,
        to,
        when,
        http_attributes: http,
    }
}

/// Records the HTTP attributes present in a rule (once each).
fn note(names: &[(&str, bool)], http: &mut Vec<String>) {
    for (n, present) in names {
        if *present && !http.iter().any(|h| h == n) {
            http.push(n.to_string());
        }
    }
}

/// Istio condition keys that only an HTTP-aware (or TLS-terminating) proxy
/// can evaluate.
fn is_http_condition_key(key: &str) -> bool {
    let bracketed = |prefix: &str| {
        key.strip_prefix(prefix)
            .and_then(|r| r.strip_suffix(']'))
            .is_some_and(|inner| !inner.is_empty())
    };
    matches!(
        key,
        "request.auth.principal"
            | "request.auth.audiences"
            | "request.auth.presenter"
            | "connection.sni"
    ) || bracketed("request.headers[")
        || bracketed("request.auth.claims[")
        || key.starts_with("experimental.envoy.filters.")
}
