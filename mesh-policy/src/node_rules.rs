//! What a node refuses beyond mesh-api's checks: it enforces policies
//! at L4, by exact rules, so it refuses what it cannot enforce as
//! written (CUSTOM, `source.serviceAccount` conditions, wildcards it
//! cannot match) and values Kubernetes itself would refuse (labels).

use std::collections::BTreeMap;

use mesh_api::security::{Action, AuthorizationPolicySpec, PeerAuthenticationSpec};
use mesh_api::util::{is_dns_label, is_dns_subdomain};

use crate::Policy;

/// (field, reason) for each rule broken.
pub type Problems = Vec<(String, String)>;

/// The metadata fields a node policy may carry (the object as written,
/// or as `kubectl get -o yaml` prints it).
const METADATA_FIELDS: &[&str] = &[
    "name",
    "namespace",
    "labels",
    "annotations",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
];

/// The `when` keys a node evaluates itself (L4).
const L4_KEYS: &[&str] = &[
    "source.ip",
    "remote.ip",
    "source.namespace",
    "source.principal",
    "destination.ip",
    "destination.port",
];

pub fn check(p: &Policy, raw: &serde_json::Value) -> Problems {
    let mut out = Problems::new();
    check_metadata(raw, &mut out);
    match p {
        Policy::PeerAuthentication(o) => peer_authentication(&o.spec, &mut out),
        Policy::AuthorizationPolicy(o) => {
            authorization(&o.spec, o.metadata.namespace_or_default(), raw, &mut out)
        }
    }
    out
}

fn check_metadata(raw: &serde_json::Value, out: &mut Problems) {
    let Some(meta) = raw.get("metadata").and_then(|m| m.as_object()) else {
        return;
    };
    for k in meta.keys() {
        if !METADATA_FIELDS.contains(&k.as_str()) {
            out.push((
                "metadata".into(),
                format!(
                    "unknown field `{k}`, expected one of {}",
                    METADATA_FIELDS
                        .iter()
                        .map(|f| format!("`{f}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }
}

/// Kubernetes' label syntax, as the node checks it.
pub fn check_labels(field: &str, labels: &BTreeMap<String, String>, out: &mut Problems) {
    for (k, v) in labels {
        let key_ok = !k.is_empty()
            && k.len() <= 317
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' || c == '/');
        if !key_ok {
            out.push((
                format!("{field}.{k}"),
                format!("{k:?} is not a valid label key"),
            ));
        }
        let val_ok = v.len() <= 63
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
        if !val_ok {
            out.push((
                format!("{field}.{k}"),
                format!("{v:?} is not a valid label value"),
            ));
        }
    }
}

fn peer_authentication(spec: &PeerAuthenticationSpec, out: &mut Problems) {
    if let Some(s) = &spec.selector {
        check_labels("spec.selector.matchLabels", &s.match_labels, out);
    }
    // An empty matchLabels selects the whole namespace: no per-port modes.
    let selects_all = spec
        .selector
        .as_ref()
        .is_some_and(|s| s.match_labels.is_empty());
    if selects_all && !spec.port_level_mtls.is_empty() {
        out.push((
            "spec.portLevelMtls".into(),
            "portLevelMtls requires a workload selector (spec.selector.matchLabels); namespace- and mesh-wide policies cannot set per-port modes".into(),
        ));
    }
}

/// Istio's wildcard syntax as the node matches it: `*` alone, at the
/// start or at the end.
fn wildcard(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("empty value is not allowed".into());
    }
    let rest = s
        .strip_prefix('*')
        .or_else(|| s.strip_suffix('*'))
        .unwrap_or(s);
    if s != "*" && rest.contains('*') {
        return Err(format!(
            "{s:?}: a wildcard `*` is only allowed alone, at the start or at the end"
        ));
    }
    Ok(())
}

fn principal(s: &str) -> Result<(), String> {
    if s.starts_with("spiffe://") {
        return Err(format!(
            "{s:?}: principals are written without the spiffe:// scheme (e.g. cluster.local/ns/demo/sa/client)"
        ));
    }
    wildcard(s)
}

fn service_account(policy_ns: &str) -> impl Fn(&str) -> Result<(), String> + '_ {
    move |s: &str| {
        if s.contains('*') {
            return Err(format!(
                "{s:?}: wildcards are not allowed in serviceAccounts"
            ));
        }
        let (ns, sa) = s.split_once('/').unwrap_or((policy_ns, s));
        if !is_dns_label(ns) || !is_dns_subdomain(sa) {
            return Err(format!(
                "{s:?} is not a service account (\"<namespace>/<name>\" or \"<name>\")"
            ));
        }
        Ok(())
    }
}

fn strs(v: &[String]) -> impl Iterator<Item = &str> {
    v.iter().map(String::as_str)
}

fn each<'a>(
    field: &str,
    values: impl IntoIterator<Item = &'a str>,
    out: &mut Problems,
    f: impl Fn(&str) -> Result<(), String>,
) {
    for (i, v) in values.into_iter().enumerate() {
        if v.is_empty() {
            out.push((format!("{field}[{i}]"), "empty value is not allowed".into()));
        } else if let Err(e) = f(v) {
            out.push((format!("{field}[{i}]"), e));
        }
    }
}

/// Condition keys only an HTTP-aware (or TLS-terminating) proxy can
/// evaluate; the node accepts them (and warns).
pub fn is_http_condition_key(key: &str) -> bool {
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

fn authorization(
    spec: &AuthorizationPolicySpec,
    policy_ns: &str,
    raw: &serde_json::Value,
    out: &mut Problems,
) {
    if spec.action() == Action::Custom {
        out.push((
            "spec.action".into(),
            "CUSTOM is not supported by Ambit (external authorization needs an HTTP-aware proxy); use ALLOW, DENY or AUDIT".into(),
        ));
    }
    if let Some(s) = &spec.selector {
        check_labels("spec.selector.matchLabels", &s.match_labels, out);
    }
    let raw_rules = raw
        .pointer("/spec/rules")
        .and_then(|r| r.as_array())
        .map(Vec::as_slice)
        .unwrap_or_default();
    for (j, r) in spec.rules.iter().flatten().enumerate() {
        let path = format!("spec.rules[{j}]");
        // mesh-api reads `from: []` as no `from`; the node refuses it
        // (it would match any source, which is rarely what was meant).
        let written_empty = |k: &str| {
            raw_rules
                .get(j)
                .and_then(|r| r.get(k))
                .and_then(|v| v.as_array())
                .is_some_and(Vec::is_empty)
        };
        if written_empty("from") {
            out.push((
                format!("{path}.from"),
                "must not be empty (omit it to match any source)".into(),
            ));
        }
        if written_empty("to") {
            out.push((
                format!("{path}.to"),
                "must not be empty (omit it to match any operation)".into(),
            ));
        }
        for (k, f) in r.from.iter().enumerate() {
            let Some(s) = &f.source else { continue };
            let fp = format!("{path}.from[{k}].source");
            each(
                &format!("{fp}.requestPrincipals"),
                strs(&s.request_principals),
                out,
                wildcard,
            );
            each(
                &format!("{fp}.notRequestPrincipals"),
                strs(&s.not_request_principals),
                out,
                wildcard,
            );
            each(
                &format!("{fp}.namespaces"),
                strs(&s.namespaces),
                out,
                wildcard,
            );
            each(
                &format!("{fp}.notNamespaces"),
                strs(&s.not_namespaces),
                out,
                wildcard,
            );
            each(
                &format!("{fp}.serviceAccounts"),
                strs(&s.service_accounts),
                out,
                service_account(policy_ns),
            );
            each(
                &format!("{fp}.notServiceAccounts"),
                strs(&s.not_service_accounts),
                out,
                service_account(policy_ns),
            );
        }
        for (k, c) in r.when.iter().enumerate() {
            let cp = format!("{path}.when[{k}]");
            let Some(key) = c.key.as_deref().filter(|k| !k.is_empty()) else {
                continue; // mesh-api: required
            };
            let values = c.values.iter().map(|v| v.0.as_str());
            let not_values = c.not_values.iter().map(|v| v.0.as_str());
            let (vp, np) = (format!("{cp}.values"), format!("{cp}.notValues"));
            let check: fn(&str) -> Result<(), String> = match key {
                "source.namespace" => wildcard,
                "source.principal" => principal,
                _ if L4_KEYS.contains(&key) || is_http_condition_key(key) => |_| Ok(()),
                _ => {
                    out.push((
                        format!("{cp}.key"),
                        format!(
                            "unknown attribute {key:?} (L4: source.ip, remote.ip, source.namespace, source.principal, destination.ip, destination.port; HTTP: request.headers[..], request.auth.*, connection.sni, experimental.envoy.filters.*)"
                        ),
                    ));
                    continue;
                }
            };
            each(&vp, values, out, check);
            each(&np, not_values, out, check);
        }
    }
}
