//! PeerAuthentication and AuthorizationPolicy: names, precedence, modes,
//! actions, selectors and targets. Rules are [`super::rule`]'s.

use std::collections::{BTreeMap, HashMap};

use mesh_authz::{Action, AuthzPolicy, MtlsMode, PeerAuthnPolicy};
use mesh_proto::ambit::v1 as pb;

use super::rule::compile_rule;
use super::{PolicyMessage, Resources};
use crate::problems::Problems;
use crate::state::Namespace;
use crate::syntax::{check_label_name, check_labels, check_subdomain_name};

/// The API groups/versions accepted for the security resources.
pub const SECURITY_API_VERSIONS: &[&str] = &["security.istio.io/v1", "security.istio.io/v1beta1"];

pub(crate) const PORT_LEVEL_NEEDS_SELECTOR: &str = "portLevelMtls requires a workload selector (spec.selector.matchLabels); namespace- and mesh-wide policies cannot set per-port modes";

pub(super) struct Policies {
    pub(super) peer_authentications: Vec<PeerAuthnPolicy>,
    pub(super) authorization_policies: Vec<AuthzPolicy>,
}

/// `policies[i] Kind ns/name`
pub(crate) fn policy_entry_name(i: usize, kind: &str, namespace: &str, name: &str) -> String {
    format!("policies[{i}] {kind} {namespace}/{name}")
}

pub(crate) fn check_api_version(entry: &str, api_version: &str, p: &mut Problems) {
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

pub(super) fn compile(
    input: &Resources,
    namespaces: &BTreeMap<String, Namespace>,
    p: &mut Problems,
) -> Policies {
    let mut peer_authentications = Vec::new();
    let mut authorization_policies = Vec::new();
    let mut names: HashMap<(&str, &str, &str), usize> = HashMap::new();
    // namespace -> the first namespace-wide PeerAuthentication there
    let mut ns_wide_pa: HashMap<&str, String> = HashMap::new();
    for (i, pol) in input.policies.iter().enumerate() {
        let (name, namespace, api_version) = pol.metadata();
        let entry = policy_entry_name(i, pol.kind(), namespace, name);
        check_api_version(&entry, api_version, p);
        check_subdomain_name(&entry, "metadata.name", name, p);
        check_label_name(&entry, "metadata.namespace", namespace, p);
        if namespace != input.root_namespace && !namespaces.contains_key(namespace) {
            p.warn(
                &entry,
                format!(
                    "namespace {namespace:?} is not listed under namespaces: this policy applies to no workload"
                ),
            );
        }
        if let Some(j) = names.insert((pol.kind(), namespace, name), i) {
            p.err(
                &entry,
                "metadata.name",
                format!(
                    "duplicate {} {namespace}/{name} (also policies[{j}])",
                    pol.kind(),
                ),
            );
        }
        match pol {
            PolicyMessage::PeerAuthentication(pa) => {
                if let Some(c) = compile_peer_authn(&entry, pa, &input.root_namespace, p) {
                    if c.selector.is_none() {
                        if let Some(first) = ns_wide_pa.get(namespace) {
                            p.warn(
                                &entry,
                                format!(
                                    "another namespace-wide PeerAuthentication in {namespace:?} comes first ({first}); this one is ignored"
                                ),
                            );
                        } else {
                            ns_wide_pa.insert(namespace, entry.clone());
                        }
                    }
                    peer_authentications.push(c);
                }
            }
            PolicyMessage::Authorization(ap) => {
                if let Some(c) = compile_authz(&entry, ap, p) {
                    authorization_policies.push(c);
                }
            }
        }
    }
    Policies {
        peer_authentications,
        authorization_policies,
    }
}

/// A mode from the wire; a value this build does not know is a problem,
/// never read as UNSET.
fn mtls_mode(entry: &str, field: &str, m: i32, p: &mut Problems) -> Option<MtlsMode> {
    match pb::MtlsMode::try_from(m) {
        Ok(pb::MtlsMode::Unset) => None,
        Ok(pb::MtlsMode::Disable) => Some(MtlsMode::Disable),
        Ok(pb::MtlsMode::Permissive) => Some(MtlsMode::Permissive),
        Ok(pb::MtlsMode::Strict) => Some(MtlsMode::Strict),
        Err(_) => {
            p.err(
                entry,
                field,
                format!("{m} is not an mTLS mode (UNSET, DISABLE, PERMISSIVE or STRICT)"),
            );
            None
        }
    }
}

fn compile_selector(
    entry: &str,
    sel: Option<&pb::WorkloadSelector>,
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
    pa: &pb::PeerAuthentication,
    root_namespace: &str,
    p: &mut Problems,
) -> Option<PeerAuthnPolicy> {
    let before = p.error_count();
    let selector = compile_selector(entry, pa.selector.as_ref(), p);
    let mode = pa
        .mode
        .and_then(|m| mtls_mode(entry, "spec.mtls.mode", m, p));
    if selector.is_none() && !pa.port_level_mtls.is_empty() {
        p.err(entry, "spec.portLevelMtls", PORT_LEVEL_NEEDS_SELECTOR);
    }
    let mut port_level = BTreeMap::new();
    for (&port, &m) in &pa.port_level_mtls {
        match u16::try_from(port).ok().filter(|p| *p != 0) {
            Some(n) => {
                let field = format!("spec.portLevelMtls.{port}.mode");
                port_level.insert(n, mtls_mode(entry, &field, m, p));
            }
            None => p.err(
                entry,
                format!("spec.portLevelMtls.{port}"),
                format!("{port} is out of range (1-65535)"),
            ),
        }
    }
    if pa.namespace == root_namespace && selector.is_some() {
        p.warn(
            entry,
            "a PeerAuthentication with a selector in the root namespace applies only to workloads of that namespace",
        );
    }
    (p.error_count() == before).then(|| PeerAuthnPolicy {
        name: pa.name.clone(),
        namespace: pa.namespace.clone(),
        selector,
        mode,
        port_level,
    })
}

fn compile_authz(entry: &str, ap: &pb::Authorization, p: &mut Problems) -> Option<AuthzPolicy> {
    let before = p.error_count();
    let decoded = pb::Action::try_from(ap.action);
    let action = match decoded {
        Ok(pb::Action::Allow) => Action::Allow,
        Ok(pb::Action::Deny) => Action::Deny,
        Ok(pb::Action::Audit) => Action::Audit,
        Ok(pb::Action::Custom) => {
            p.err(
                entry,
                "spec.action",
                "CUSTOM is not supported by Ambit (external authorization needs an HTTP-aware proxy); use ALLOW, DENY or AUDIT",
            );
            Action::Deny
        }
        // A value this build does not know is never read as ALLOW.
        Err(_) => {
            p.err(
                entry,
                "spec.action",
                format!(
                    "{} is not an action (ALLOW, DENY, AUDIT or CUSTOM)",
                    ap.action
                ),
            );
            Action::Deny
        }
    };
    if !ap.provider_json.is_empty() && decoded != Ok(pb::Action::Custom) {
        p.err(entry, "spec.provider", "is only valid with action CUSTOM");
    }
    let targeted = !ap.target_refs.is_empty();
    if targeted && ap.selector.is_some() {
        p.err(
            entry,
            "spec.selector",
            "selector and targetRef/targetRefs are mutually exclusive",
        );
    }
    if targeted {
        p.warn(
            entry,
            "targets a waypoint or gateway (targetRef/targetRefs): not enforced by the node proxy",
        );
    }
    let selector = compile_selector(entry, ap.selector.as_ref(), p);
    if ap.rules.is_empty() && action != Action::Allow {
        p.warn(
            entry,
            format!("a {action} policy without rules never matches"),
        );
    }
    let mut rules = Vec::with_capacity(ap.rules.len());
    for (j, r) in ap.rules.iter().enumerate() {
        let rule = compile_rule(entry, &format!("spec.rules[{j}]"), r, &ap.namespace, p);
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
    (p.error_count() == before).then(|| AuthzPolicy {
        name: ap.name.clone(),
        namespace: ap.namespace.clone(),
        selector,
        action,
        rules,
        node_enforced: !targeted,
    })
}
