//! Checks across a set of documents, in the spirit of `istioctl analyze`.

use std::collections::{BTreeMap, HashMap};

use crate::diag::{Code, Diagnostic, Findings};
use crate::kinds::Kind;
use crate::parse::ParsedDocument;
use crate::resource::Resource;

const CLUSTER_DOMAIN: &str = "cluster.local";

/// A service host written in `namespace` as Istio resolves short names:
/// `reviews` → `reviews.<ns>.svc.cluster.local`, `reviews.bookinfo` →
/// `reviews.bookinfo.svc.cluster.local`; anything else as written.
pub fn resolve_host(host: &str, namespace: &str) -> String {
    if host.contains('*') {
        return host.to_string();
    }
    let parts = host.split('.').count();
    if parts == 1 {
        format!("{host}.{namespace}.svc.{CLUSTER_DOMAIN}")
    } else if parts == 2 {
        format!("{host}.svc.{CLUSTER_DOMAIN}")
    } else if host.ends_with(".svc") {
        format!("{host}.{CLUSTER_DOMAIN}")
    } else {
        host.to_string()
    }
}

/// Every diagnostic for the set: each document's own, then the cross-resource
/// ones, in source order (document by document).
pub fn analyze(documents: &[ParsedDocument]) -> Vec<Diagnostic> {
    let mut extra: Vec<Vec<Diagnostic>> = vec![Vec::new(); documents.len()];
    let mut report = |i: usize, f: Findings| {
        let d = &documents[i];
        extra[i].extend(f.items.into_iter().map(|x| Diagnostic {
            severity: x.severity,
            code: x.code,
            object: d.object.clone(),
            location: Some(d.location.clone()),
            field: x.field,
            message: x.message,
        }));
    };

    let resources: Vec<(usize, &Resource)> = documents
        .iter()
        .enumerate()
        .filter_map(|(i, d)| d.resource.as_ref().map(|r| (i, r)))
        .collect();

    // Duplicates.
    let mut seen: HashMap<(Kind, String, String), usize> = HashMap::new();
    for &(i, r) in &resources {
        let Some(name) = r.name() else { continue };
        let key = (r.kind(), r.namespace().to_string(), name.to_string());
        if let Some(&first) = seen.get(&key) {
            let mut f = Findings::default();
            f.push(
                Code::DuplicateResource,
                "metadata.name",
                format!(
                    "{} {}/{} is also defined in {}; applied together, the later one replaces the earlier",
                    key.0, key.1, key.2, documents[first].location
                ),
            );
            report(i, f);
        } else {
            seen.insert(key, i);
        }
    }

    // DestinationRules by resolved host.
    let mut rules_by_host: BTreeMap<
        String,
        Vec<(
            usize,
            &crate::meta::Object<crate::networking::DestinationRuleSpec>,
        )>,
    > = BTreeMap::new();
    for &(i, r) in &resources {
        if let Resource::DestinationRule(dr) = r {
            if let Some(h) = &dr.spec.host {
                rules_by_host
                    .entry(resolve_host(h, dr.namespace()))
                    .or_default()
                    .push((i, dr));
            }
        }
    }

    // Conflicting DestinationRules (same host and namespace, both with a
    // top-level trafficPolicy).
    for rules in rules_by_host.values() {
        for (k, (i, dr)) in rules.iter().enumerate() {
            if dr.spec.traffic_policy.is_none() || dr.spec.workload_selector.is_some() {
                continue;
            }
            if let Some((j, _)) = rules[..k].iter().find(|(_, other)| {
                other.namespace() == dr.namespace()
                    && other.spec.traffic_policy.is_some()
                    && other.spec.workload_selector.is_none()
            }) {
                let mut f = Findings::default();
                f.push(
                    Code::ConflictingDestinationRules,
                    "spec.trafficPolicy",
                    format!(
                        "DestinationRule {}/{} ({}) also sets a trafficPolicy for host {}; Istio merges DestinationRules for one host but uses only the first trafficPolicy",
                        documents[*j].object.as_ref().map_or("", |o| o.namespace.as_str()),
                        documents[*j].object.as_ref().and_then(|o| o.name.as_deref()).unwrap_or("?"),
                        documents[*j].location,
                        dr.spec.host.as_deref().unwrap_or("")
                    ),
                );
                report(*i, f);
            }
        }
    }

    // Gateways present.
    let gateways: Vec<(String, String)> = resources
        .iter()
        .filter_map(|(_, r)| match r {
            Resource::Gateway(g) => g.name().map(|n| (g.namespace().to_string(), n.to_string())),
            _ => None,
        })
        .collect();

    // MeshConfig providers, if a mesh ConfigMap is in the set.
    let mesh_providers: Option<BTreeMap<String, String>> =
        resources.iter().find_map(|(_, r)| match r {
            Resource::Core(c) => c.mesh_config_providers(),
            _ => None,
        });

    for &(i, r) in &resources {
        let mut f = Findings::default();
        match r {
            Resource::VirtualService(vs) => {
                let ns = vs.namespace();
                for (path, d) in vs.spec.destinations() {
                    let (Some(host), Some(subset)) = (&d.host, &d.subset) else {
                        continue;
                    };
                    let Some(rules) = rules_by_host.get(&resolve_host(host, ns)) else {
                        continue;
                    };
                    let defined = rules
                        .iter()
                        .any(|(_, dr)| dr.spec.subset_names().any(|s| s == subset));
                    if !defined {
                        let names: Vec<String> = rules
                            .iter()
                            .map(|(_, dr)| {
                                format!("{}/{}", dr.namespace(), dr.name().unwrap_or("?"))
                            })
                            .collect();
                        let mut subsets: Vec<&str> = rules
                            .iter()
                            .flat_map(|(_, dr)| dr.spec.subset_names())
                            .collect();
                        subsets.sort();
                        subsets.dedup();
                        f.push(
                            Code::ReferencedSubsetNotFound,
                            format!("{path}.subset"),
                            format!(
                                "subset {subset:?} of host {host} is not defined by DestinationRule {} (defined: {})",
                                names.join(", "),
                                if subsets.is_empty() { "none".to_string() } else { subsets.join(", ") }
                            ),
                        );
                    }
                }
                let mut refs: Vec<(String, &String)> = vs
                    .spec
                    .gateways
                    .iter()
                    .enumerate()
                    .map(|(k, g)| (format!("spec.gateways[{k}]"), g))
                    .collect();
                for (k, h) in vs.spec.http.iter().enumerate() {
                    for (m, mr) in h.matches.iter().enumerate() {
                        for (x, g) in mr.gateways.iter().enumerate() {
                            refs.push((format!("spec.http[{k}].match[{m}].gateways[{x}]"), g));
                        }
                    }
                }
                for (path, g) in refs {
                    if g == "mesh" {
                        continue;
                    }
                    let (gns, gname) = match g.split_once('/') {
                        Some((a, b)) => (a, b),
                        None => (ns, g.as_str()),
                    };
                    if !gateways.iter().any(|(n, m)| n == gns && m == gname) {
                        f.push(
                            Code::ReferencedGatewayNotFound,
                            path,
                            format!("gateway {gns}/{gname} is not in the analyzed set"),
                        );
                    }
                }
            }
            Resource::Telemetry(t) => {
                if let Some(providers) = &mesh_providers {
                    for (path, section, name) in t.spec.provider_refs() {
                        crate::core::check_provider_ref(&mut f, &path, section, name, providers);
                    }
                }
            }
            _ => {}
        }
        if !f.items.is_empty() {
            report(i, f);
        }
    }

    let mut out = Vec::new();
    for (d, more) in documents.iter().zip(extra) {
        out.extend(d.diagnostics.iter().cloned());
        out.extend(more);
    }
    out
}

#[cfg(test)]
mod tests;
