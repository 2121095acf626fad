//! The Istio security resources the nodes enforce (PeerAuthentication,
//! AuthorizationPolicy): parsed and validated once with mesh-api, then held
//! to the node's narrower rules ([`node_rules`]), which refuse what mesh-api
//! accepts but a node cannot enforce as written.

use std::collections::BTreeMap;

use mesh_api::security::{AuthorizationPolicySpec, PeerAuthenticationSpec};
use mesh_api::{Object, ObjectMeta, Resource};

use super::{L7Object, Origin};

/// The kinds the nodes enforce.
pub const NODE_KINDS: &[&str] = &["PeerAuthentication", "AuthorizationPolicy"];

/// A validated node policy.
#[derive(Clone, Debug, PartialEq)]
pub enum Policy {
    PeerAuthentication(Object<PeerAuthenticationSpec>),
    AuthorizationPolicy(Object<AuthorizationPolicySpec>),
}

impl Policy {
    pub fn kind(&self) -> &'static str {
        match self {
            Policy::PeerAuthentication(_) => "PeerAuthentication",
            Policy::AuthorizationPolicy(_) => "AuthorizationPolicy",
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Policy::PeerAuthentication(p) => &p.metadata,
            Policy::AuthorizationPolicy(p) => &p.metadata,
        }
    }

    /// `default` when the object does not say.
    pub fn namespace(&self) -> &str {
        self.metadata().namespace_or_default()
    }

    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or_default()
    }

    /// `spec.selector.matchLabels`, when a selector is written.
    pub fn selector(&self) -> Option<&BTreeMap<String, String>> {
        match self {
            Policy::PeerAuthentication(p) => p.spec.selector.as_ref(),
            Policy::AuthorizationPolicy(p) => p.spec.selector.as_ref(),
        }
        .map(|s| &s.match_labels)
    }

    /// `Kind ns/name`, as problems name it.
    pub fn describe(&self) -> String {
        format!("{} {}/{}", self.kind(), self.namespace(), self.name())
    }
}

/// What one node-policy document yields: the policy, and for an
/// AuthorizationPolicy its L7 form for the waypoints (which enforce its
/// HTTP rules and `targetRefs`).
#[derive(Debug)]
pub struct Parsed {
    pub policy: Policy,
    pub l7: Option<L7Object>,
}

/// Parses `doc` (one object) with mesh-api, once, and checks it: mesh-api's
/// errors, and the node's rules at the fields mesh-api found no fault
/// with. Problems read `Kind ns/name: field f: reason`.
pub fn parse(doc: &serde_json::Value, origin: &Origin) -> Result<Parsed, Vec<String>> {
    let checked = L7Object::check(doc, origin)?;
    let mut problems: Vec<String> = checked.errors.iter().map(ToString::to_string).collect();
    let policy = match checked.resource {
        Some(Resource::PeerAuthentication(o)) => Some(Policy::PeerAuthentication(o)),
        Some(Resource::AuthorizationPolicy(o)) => Some(Policy::AuthorizationPolicy(o)),
        _ => None,
    };
    let Some(policy) = policy else {
        if problems.is_empty() {
            let l7 = &checked.l7;
            problems.push(format!(
                "{} {}/{}: not a PeerAuthentication or AuthorizationPolicy",
                l7.kind, l7.namespace, l7.name
            ));
        }
        return Err(problems);
    };
    let what = policy.describe();
    for (field, reason) in node_rules::check(&policy, doc) {
        if checked.errors.iter().any(|d| d.field == field) {
            continue; // mesh-api's word on this field stands
        }
        if field.is_empty() {
            problems.push(format!("{what}: {reason}"));
        } else {
            problems.push(format!("{what}: field {field}: {reason}"));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let l7 = matches!(policy, Policy::AuthorizationPolicy(_)).then_some(checked.l7);
    Ok(Parsed { policy, l7 })
}

pub mod node_rules {
    //! What a node refuses beyond mesh-api's checks: it enforces policies
    //! at L4, by exact rules, so it refuses what it cannot enforce as
    //! written (CUSTOM, `source.serviceAccount` conditions, wildcards it
    //! cannot match) and values Kubernetes itself would refuse (labels).

    use std::collections::BTreeMap;

    use mesh_api::security::{Action, AuthorizationPolicySpec, PeerAuthenticationSpec};
    use mesh_api::util::{is_dns_label, is_dns_subdomain};

    use super::Policy;

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
                && k.chars().all(|c| {
                    c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' || c == '/'
                });
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
}
