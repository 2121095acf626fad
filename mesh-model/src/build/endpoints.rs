//! Workloads and services: addresses, ports, names, and who owns which IP
//! and VIP.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use mesh_authz::labels_match;
use mesh_proto::ambit::v1 as pb;

use super::Resources;
use crate::problems::Problems;
use crate::state::{Namespace, Protocol, Service, ServicePort, Workload};
use crate::syntax::{check_label_name, check_labels, check_subdomain_name};

pub(super) struct Endpoints {
    pub(super) workloads: Vec<Arc<Workload>>,
    pub(super) by_ip: HashMap<IpAddr, Arc<Workload>>,
    pub(super) services: Vec<Arc<Service>>,
    pub(super) by_vip: HashMap<SocketAddr, (Arc<Service>, usize)>,
}

pub(super) fn compile(
    input: &Resources,
    namespaces: &BTreeMap<String, Namespace>,
    p: &mut Problems,
) -> Endpoints {
    let mut ip_owner: HashMap<IpAddr, String> = HashMap::new();
    let (workloads, by_ip) = compile_workloads(&input.workloads, namespaces, &mut ip_owner, p);
    let (services, by_vip) = compile_services(input, namespaces, &workloads, &ip_owner, p);
    Endpoints {
        workloads,
        by_ip,
        services,
        by_vip,
    }
}

fn check_listed(
    entry: &str,
    namespace: &str,
    namespaces: &BTreeMap<String, Namespace>,
    p: &mut Problems,
) {
    if !namespaces.contains_key(namespace) {
        p.err(
            entry,
            "namespace",
            format!("namespace {namespace:?} is not listed under namespaces"),
        );
    }
}

type Workloads = (Vec<Arc<Workload>>, HashMap<IpAddr, Arc<Workload>>);

fn compile_workloads(
    list: &[pb::Workload],
    namespaces: &BTreeMap<String, Namespace>,
    ip_owner: &mut HashMap<IpAddr, String>,
    p: &mut Problems,
) -> Workloads {
    let mut workloads: Vec<Arc<Workload>> = Vec::new();
    let mut by_ip: HashMap<IpAddr, Arc<Workload>> = HashMap::new();
    let mut names: HashMap<(String, String), usize> = HashMap::new();
    for (i, w) in list.iter().enumerate() {
        let entry = format!("workloads[{i}] ({}/{})", w.namespace, w.name);
        let before = p.error_count();
        check_subdomain_name(&entry, "name", &w.name, p);
        check_listed(&entry, &w.namespace, namespaces, p);
        // Not set: `default`, as in Kubernetes.
        let sa = if w.service_account.is_empty() {
            "default".to_string()
        } else {
            w.service_account.clone()
        };
        check_subdomain_name(&entry, "serviceAccount", &sa, p);
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
        let netns = (!w.netns.is_empty()).then(|| PathBuf::from(&w.netns));
        if let Some(n) = &netns {
            if !n.is_absolute() {
                p.err(
                    &entry,
                    "netns",
                    format!("{:?} must be an absolute path", n.display().to_string()),
                );
            }
        }
        check_labels(&entry, "labels", &w.labels, p);
        if let Some(j) = names.insert((w.namespace.clone(), w.name.clone()), i) {
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
        let (Some(ip), true) = (ip, p.error_count() == before) else {
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
    (workloads, by_ip)
}

/// A port number from the wire (`0` is not a port).
fn check_port(n: u32) -> Result<u16, String> {
    u16::try_from(n)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{n} is out of range (1-65535)"))
}

type Services = (
    Vec<Arc<Service>>,
    HashMap<SocketAddr, (Arc<Service>, usize)>,
);

fn compile_services(
    input: &Resources,
    namespaces: &BTreeMap<String, Namespace>,
    workloads: &[Arc<Workload>],
    ip_owner: &HashMap<IpAddr, String>,
    p: &mut Problems,
) -> Services {
    let mut services: Vec<Arc<Service>> = Vec::new();
    let mut by_vip: HashMap<SocketAddr, (Arc<Service>, usize)> = HashMap::new();
    let mut vip_owner: HashMap<SocketAddr, String> = HashMap::new();
    let mut names: HashMap<(String, String), usize> = HashMap::new();
    for (i, s) in input.services.iter().enumerate() {
        let entry = format!("services[{i}] ({}/{})", s.namespace, s.name);
        let before = p.error_count();
        check_label_name(&entry, "name", &s.name, p);
        check_listed(&entry, &s.namespace, namespaces, p);
        if let Some(j) = names.insert((s.namespace.clone(), s.name.clone()), i) {
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
            let port = check_port(sp.port)
                .map_err(|e| p.err(&entry, format!("ports[{k}].port"), e))
                .ok();
            // Not set (0): the service port.
            let target = match sp.target_port {
                0 => port,
                t => check_port(t)
                    .map_err(|e| p.err(&entry, format!("ports[{k}].targetPort"), e))
                    .ok(),
            };
            let protocol = match sp.protocol.as_str() {
                "" | "TCP" => Some(Protocol::Tcp),
                "UDP" => Some(Protocol::Udp),
                "SCTP" => Some(Protocol::Sctp),
                other => {
                    p.err(
                        &entry,
                        format!("ports[{k}].protocol"),
                        format!("{other:?} is not one of TCP, UDP, SCTP"),
                    );
                    None
                }
            };
            let name = (!sp.name.is_empty()).then(|| sp.name.clone());
            if let Some(name) = &name {
                check_label_name(&entry, &format!("ports[{k}].name"), name, p);
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
                name,
                port,
                target_port,
                protocol,
            });
        }
        check_labels(&entry, "selector", &s.selector, p);
        check_labels(&entry, "labels", &s.labels, p);
        if p.error_count() != before {
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
            hostname: format!("{}.{}.svc.{}", s.name, s.namespace, input.cluster_domain),
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
    (services, by_vip)
}
