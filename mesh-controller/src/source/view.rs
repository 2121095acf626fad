//! Checks of the cluster view as a whole, as a node would hold it: names,
//! addresses and ports of the pods and Services that are part of the data
//! plane, and what must be unique across objects (pod IPs, Service VIPs,
//! object names). Each object is checked on its own by its source; these
//! are the checks that need the others.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use mesh_api::util::{is_dns_label, is_dns_subdomain};

use super::Snapshot;
use mesh_policy::node_rules::check_labels;

const NAME_RULE: &str =
    "lower-case letters, digits and '-', starting and ending with a letter or digit";

/// The object a problem is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    /// Index into [`Snapshot::pods`].
    Pod(usize),
    /// Index into [`Snapshot::services`].
    Service(usize),
    /// Index into [`Snapshot::policies`].
    Policy(usize),
    /// A namespace, by name; `index` is its place among every namespace
    /// the view holds (listed or implied by an object), sorted.
    Namespace { name: String, index: usize },
}

/// One problem of the view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub subject: Subject,
    /// Kubernetes field path (`status.podIP`); empty for the object itself.
    pub field: String,
    pub reason: String,
}

impl Problem {
    /// `<what>: field f: reason`, `what` naming the subject.
    pub fn describe(&self, snap: &Snapshot, with_file: bool) -> String {
        let file = |p: &Path| {
            if with_file {
                format!("{}: ", p.display())
            } else {
                String::new()
            }
        };
        let what = match &self.subject {
            Subject::Pod(i) => snap
                .pods
                .get(*i)
                .map(|p| format!("{}Pod {}/{}", file(&p.origin.file), p.namespace, p.name)),
            Subject::Service(i) => snap
                .services
                .get(*i)
                .map(|s| format!("{}Service {}/{}", file(&s.origin.file), s.namespace, s.name)),
            Subject::Policy(i) => snap
                .policies
                .get(*i)
                .map(|(p, o)| format!("{}{}", file(&o.file), p.describe())),
            Subject::Namespace { name, index } => Some(format!("namespaces[{index}] ({name})")),
        }
        .unwrap_or_default();
        if self.field.is_empty() {
            format!("{what}: {}", self.reason)
        } else {
            format!("{what}: field {}: {}", self.field, self.reason)
        }
    }
}

struct Out(Vec<Problem>);

impl Out {
    fn push(&mut self, subject: Subject, field: impl Into<String>, reason: impl Into<String>) {
        self.0.push(Problem {
            subject,
            field: field.into(),
            reason: reason.into(),
        });
    }

    fn labels(&mut self, subject: &Subject, field: &str, labels: &BTreeMap<String, String>) {
        let mut found = Vec::new();
        check_labels(field, labels, &mut found);
        for (f, r) in found {
            self.push(subject.clone(), f, r);
        }
    }

    fn label_name(&mut self, subject: &Subject, field: &str, s: &str) {
        if !is_dns_label(s) {
            self.push(
                subject.clone(),
                field,
                format!("{s:?} is not a valid name (at most 63 {NAME_RULE})"),
            );
        }
    }

    fn subdomain_name(&mut self, subject: &Subject, field: &str, s: &str) {
        if !is_dns_subdomain(s) {
            self.push(
                subject.clone(),
                field,
                format!("{s:?} is not a valid name ({NAME_RULE}, '.' between parts)"),
            );
        }
    }
}

fn port_number(n: i64) -> Result<u16, String> {
    u16::try_from(n)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{n} is out of range (1-65535)"))
}

/// Every problem of `snap`, namespaces first, then pods, Services and
/// policies, each in order. Pods without a node or an IP and Services
/// without a cluster IP are not part of the data plane and not checked.
pub fn check(snap: &Snapshot) -> Vec<Problem> {
    let mut out = Out(Vec::new());

    // Namespaces: those listed and those the objects live in.
    let mut namespaces: BTreeMap<&str, Option<&BTreeMap<String, String>>> = snap
        .namespaces
        .values()
        .map(|n| (n.name.as_str(), Some(&n.labels)))
        .collect();
    let pods: Vec<usize> = (0..snap.pods.len())
        .filter(|i| snap.pods[*i].node.is_some() && snap.pods[*i].ip.is_some())
        .collect();
    let services: Vec<usize> = (0..snap.services.len())
        .filter(|i| !snap.services[*i].addresses.is_empty())
        .collect();
    let implied = pods
        .iter()
        .map(|i| snap.pods[*i].namespace.as_str())
        .chain(
            services
                .iter()
                .map(|i| snap.services[*i].namespace.as_str()),
        )
        .chain(snap.policies.iter().map(|(p, _)| p.namespace()));
    for ns in implied {
        namespaces.entry(ns).or_insert(None);
    }
    for (index, (name, labels)) in namespaces.iter().enumerate() {
        let subject = Subject::Namespace {
            name: name.to_string(),
            index,
        };
        out.label_name(&subject, "metadata.name", name);
        if let Some(labels) = labels {
            out.labels(&subject, "metadata.labels", labels);
        }
    }

    // Pods (as workloads[j] of the node's view: `j` names them in
    // duplicate and address conflicts).
    let entry =
        |j: usize, ns: &str, name: &str, section: &str| format!("{section}[{j}] ({ns}/{name})");
    let mut ip_owner: HashMap<IpAddr, String> = HashMap::new();
    let mut pod_names: HashMap<(&str, &str), usize> = HashMap::new();
    for (j, &i) in pods.iter().enumerate() {
        let p = &snap.pods[i];
        let subject = Subject::Pod(i);
        let before = out.0.len();
        out.subdomain_name(&subject, "metadata.name", &p.name);
        out.subdomain_name(&subject, "spec.serviceAccountName", &p.service_account);
        if p.node.as_deref().is_some_and(|n| n.trim().is_empty()) {
            out.push(subject.clone(), "spec.nodeName", "must not be empty");
        }
        let raw_ip = p.ip.as_deref().unwrap_or_default();
        let ip = match raw_ip.trim().parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                out.push(
                    subject.clone(),
                    "status.podIP",
                    format!("{raw_ip:?} is not an IP address"),
                );
                None
            }
        };
        if let Some(n) = &p.netns {
            if !Path::new(n).is_absolute() {
                out.push(
                    subject.clone(),
                    "metadata.annotations[ambit.io/netns]",
                    format!("{n:?} must be an absolute path"),
                );
            }
        }
        out.labels(&subject, "metadata.labels", &p.labels);
        if let Some(k) = pod_names.insert((&p.namespace, &p.name), j) {
            out.push(
                subject.clone(),
                "metadata.name",
                format!(
                    "duplicate workload {}/{} (also workloads[{k}])",
                    p.namespace, p.name
                ),
            );
        }
        if let Some(ip) = ip {
            if let Some(other) = ip_owner.get(&ip) {
                out.push(
                    subject.clone(),
                    "status.podIP",
                    format!("{ip} is already the address of {other}"),
                );
            }
        }
        if let (Some(ip), true) = (ip, out.0.len() == before) {
            ip_owner.insert(ip, entry(j, &p.namespace, &p.name, "workloads"));
        }
    }

    // Services.
    let mut vip_owner: HashMap<SocketAddr, String> = HashMap::new();
    let mut svc_names: HashMap<(&str, &str), usize> = HashMap::new();
    for (j, &i) in services.iter().enumerate() {
        let s = &snap.services[i];
        let subject = Subject::Service(i);
        let before = out.0.len();
        out.label_name(&subject, "metadata.name", &s.name);
        if let Some(k) = svc_names.insert((&s.namespace, &s.name), j) {
            out.push(
                subject.clone(),
                "metadata.name",
                format!(
                    "duplicate service {}/{} (also services[{k}])",
                    s.namespace, s.name
                ),
            );
        }
        let mut addresses = Vec::new();
        for (k, a) in s.addresses.iter().enumerate() {
            match a.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    if let Some(owner) = ip_owner.get(&ip) {
                        out.push(
                            subject.clone(),
                            format!("spec.clusterIPs[{k}]"),
                            format!("{ip} is already the address of {owner}"),
                        );
                    }
                    addresses.push(ip);
                }
                Err(_) => out.push(
                    subject.clone(),
                    format!("spec.clusterIPs[{k}]"),
                    format!("{a:?} is not an IP address"),
                ),
            }
        }
        if s.ports.is_empty() {
            out.push(
                subject.clone(),
                "spec.ports",
                "at least one port is required",
            );
        }
        // (port, protocol) of the valid ports, in order.
        let mut ports: Vec<(u16, &str)> = Vec::new();
        for (k, sp) in s.ports.iter().enumerate() {
            let port = port_number(sp.port)
                .map_err(|e| out.push(subject.clone(), format!("spec.ports[{k}].port"), e))
                .ok();
            let target = match sp.target_port {
                None => port,
                Some(t) => port_number(t)
                    .map_err(|e| {
                        out.push(subject.clone(), format!("spec.ports[{k}].targetPort"), e)
                    })
                    .ok(),
            };
            let protocol = match sp.protocol.as_deref() {
                None | Some("TCP") => Some("TCP"),
                Some("UDP") => Some("UDP"),
                Some("SCTP") => Some("SCTP"),
                Some(other) => {
                    out.push(
                        subject.clone(),
                        format!("spec.ports[{k}].protocol"),
                        format!("{other:?} is not one of TCP, UDP, SCTP"),
                    );
                    None
                }
            };
            if let Some(name) = &sp.name {
                out.label_name(&subject, &format!("spec.ports[{k}].name"), name);
            }
            let (Some(port), Some(_), Some(protocol)) = (port, target, protocol) else {
                continue;
            };
            if let Some(m) = ports.iter().position(|o| *o == (port, protocol)) {
                out.push(
                    subject.clone(),
                    format!("spec.ports[{k}].port"),
                    format!("port {port} is listed twice (also ports[{m}])"),
                );
            }
            ports.push((port, protocol));
        }
        out.labels(&subject, "spec.selector", &s.selector);
        out.labels(&subject, "metadata.labels", &s.labels);
        if out.0.len() != before {
            continue;
        }
        for ip in &addresses {
            for (k, (port, protocol)) in ports.iter().enumerate() {
                if *protocol != "TCP" {
                    continue;
                }
                let vip = SocketAddr::new(*ip, *port);
                if let Some(other) = vip_owner.get(&vip) {
                    out.push(
                        subject.clone(),
                        format!("spec.ports[{k}].port"),
                        format!("{vip} is already used by {other}"),
                    );
                    continue;
                }
                vip_owner.insert(vip, entry(j, &s.namespace, &s.name, "services"));
            }
        }
    }

    // Policies: each is checked alone when read; here, only uniqueness.
    let mut policy_names: HashMap<(&str, &str, &str), usize> = HashMap::new();
    for (i, (p, _)) in snap.policies.iter().enumerate() {
        if let Some(j) = policy_names.insert((p.kind(), p.namespace(), p.name()), i) {
            out.push(
                Subject::Policy(i),
                "metadata.name",
                format!("duplicate {} (also policies[{j}])", p.describe()),
            );
        }
    }
    out.0
}

/// The subjects of `problems`, by kind: (pods, services, policies); and
/// whether some problem is about no single object.
pub fn subjects(problems: &[Problem]) -> (BTreeSet<usize>, BTreeSet<usize>, BTreeSet<usize>, bool) {
    let (mut pods, mut svcs, mut pols, mut other) =
        (BTreeSet::new(), BTreeSet::new(), BTreeSet::new(), false);
    for p in problems {
        match p.subject {
            Subject::Pod(i) => {
                pods.insert(i);
            }
            Subject::Service(i) => {
                svcs.insert(i);
            }
            Subject::Policy(i) => {
                pols.insert(i);
            }
            Subject::Namespace { .. } => other = true,
        }
    }
    (pods, svcs, pols, other)
}
