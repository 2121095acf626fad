//! `security.istio.io`: PeerAuthentication, AuthorizationPolicy,
//! RequestAuthentication (v1 and v1beta1 share one schema).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::diag::{Code, Findings};
use crate::meta::{MatchLabelsSelector, PolicyTargetReference};
use crate::util::{check_cidr, check_duration, check_port_text, join};

fn check_selector_and_targets(
    f: &mut Findings,
    selector: &Option<MatchLabelsSelector>,
    target_ref: &Option<PolicyTargetReference>,
    target_refs: &[PolicyTargetReference],
) {
    if selector.is_some() && (target_ref.is_some() || !target_refs.is_empty()) {
        f.push(
            Code::ConflictingFields,
            "spec",
            "set only one of selector, targetRef/targetRefs",
        );
    }
    if target_ref.is_some() && !target_refs.is_empty() {
        f.push(
            Code::ConflictingFields,
            "spec",
            "set only one of targetRef, targetRefs",
        );
    }
    let all = target_ref
        .iter()
        .map(|t| ("spec.targetRef".to_string(), t))
        .chain(
            target_refs
                .iter()
                .enumerate()
                .map(|(i, t)| (format!("spec.targetRefs[{i}]"), t)),
        );
    for (p, t) in all {
        if t.kind.as_deref().unwrap_or("").is_empty() {
            f.push(Code::MissingField, join(&p, "kind"), "required");
        }
        if t.name.as_deref().unwrap_or("").is_empty() {
            f.push(Code::MissingField, join(&p, "name"), "required");
        }
    }
}

// ------------------------------------------------ PeerAuthentication --

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthenticationSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<MatchLabelsSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<Mtls>,
    /// Keyed by the workload port; YAML writes the keys as numbers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub port_level_mtls: BTreeMap<PortKey, Mtls>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mtls {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<MtlsMode>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    Unset,
    Disable,
    Permissive,
    Strict,
}

/// A map key that YAML may write as a number or a string.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct PortKey(pub String);

impl<'de> Deserialize<'de> for PortKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = PortKey;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a port number")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<PortKey, E> {
                Ok(PortKey(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<PortKey, E> {
                Ok(PortKey(v.to_string()))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PortKey, E> {
                Ok(PortKey(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

impl PeerAuthenticationSpec {
    pub fn validate(&self, f: &mut Findings) {
        if !self.port_level_mtls.is_empty() && self.selector.is_none() {
            f.push(
                Code::MissingField,
                "spec.selector",
                "portLevelMtls needs a selector (Istio refuses port-level mTLS on namespace- or mesh-wide policies)",
            );
        }
        for port in self.port_level_mtls.keys() {
            // A port entry without `mode` is UNSET: it inherits, as in Istio.
            check_port_text(f, &format!("spec.portLevelMtls.{}", port.0), &port.0, false);
        }
    }
}

// ----------------------------------------------- AuthorizationPolicy --

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<MatchLabelsSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    #[serde(default)]
    pub target_refs: Vec<PolicyTargetReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ExtensionProvider>,
    /// `None` (no rules): ALLOW matches nothing, DENY matches nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<Rule>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    #[default]
    Allow,
    Deny,
    Audit,
    Custom,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtensionProvider {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    #[serde(default)]
    pub from: Vec<RuleFrom>,
    #[serde(default)]
    pub to: Vec<RuleTo>,
    #[serde(default)]
    pub when: Vec<Condition>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleFrom {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Source {
    #[serde(default)]
    pub principals: Vec<String>,
    #[serde(default)]
    pub not_principals: Vec<String>,
    #[serde(default)]
    pub request_principals: Vec<String>,
    #[serde(default)]
    pub not_request_principals: Vec<String>,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub not_namespaces: Vec<String>,
    #[serde(default)]
    pub service_accounts: Vec<String>,
    #[serde(default)]
    pub not_service_accounts: Vec<String>,
    #[serde(default)]
    pub ip_blocks: Vec<String>,
    #[serde(default)]
    pub not_ip_blocks: Vec<String>,
    #[serde(default)]
    pub remote_ip_blocks: Vec<String>,
    #[serde(default)]
    pub not_remote_ip_blocks: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleTo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Operation {
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub not_hosts: Vec<String>,
    #[serde(default)]
    pub ports: Vec<PortKey>,
    #[serde(default)]
    pub not_ports: Vec<PortKey>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub not_methods: Vec<String>,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub not_paths: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default)]
    pub values: Vec<PortKey>,
    #[serde(default)]
    pub not_values: Vec<PortKey>,
}

/// The `when` keys Istio supports (the bracketed ones take a name).
const CONDITION_KEYS: &[&str] = &[
    "source.ip",
    "remote.ip",
    "source.namespace",
    "source.principal",
    "source.serviceAccount",
    "request.auth.principal",
    "request.auth.audiences",
    "request.auth.presenter",
    "destination.ip",
    "destination.port",
    "connection.sni",
];
const CONDITION_PREFIXES: &[&str] = &[
    "request.headers[",
    "request.auth.claims[",
    "experimental.envoy.filters.",
];

fn check_principal(f: &mut Findings, path: &str, p: &str) {
    if p.is_empty() {
        f.push(Code::InvalidValue, path, "empty value is not allowed");
    } else if p.starts_with("spiffe://") {
        f.push(
            Code::InvalidValue,
            path,
            format!("{p:?}: principals are written without the spiffe:// scheme (e.g. cluster.local/ns/demo/sa/client)"),
        );
    } else if p.matches('*').count() > 1
        || (p.contains('*') && !p.starts_with('*') && !p.ends_with('*'))
    {
        f.push(
            Code::InvalidValue,
            path,
            format!("{p:?}: a wildcard '*' is allowed only as a whole value, a prefix or a suffix"),
        );
    }
}

impl AuthorizationPolicySpec {
    pub fn action(&self) -> Action {
        self.action.unwrap_or_default()
    }

    pub fn validate(&self, f: &mut Findings) {
        check_selector_and_targets(f, &self.selector, &self.target_ref, &self.target_refs);
        match (self.action(), &self.provider) {
            (Action::Custom, None) => f.push(
                Code::MissingField,
                "spec.provider",
                "action CUSTOM needs a provider",
            ),
            (Action::Custom, Some(_)) => f.push(
                Code::NotImplemented,
                "spec.action",
                "CUSTOM (external authorization) is not implemented by Ambit; this policy is not enforced",
            ),
            (_, Some(_)) => f.push(
                Code::ConflictingFields,
                "spec.provider",
                "provider is only allowed with action CUSTOM",
            ),
            // AUDIT is implemented (the waypoint evaluates and logs it, never
            // denies), so it needs no warning.
            _ => {}
        }
        let Some(rules) = &self.rules else {
            if self.action() == Action::Deny {
                f.push(
                    Code::Advice,
                    "spec.rules",
                    "a DENY policy without rules matches nothing and denies nothing",
                );
            }
            return;
        };
        for (i, r) in rules.iter().enumerate() {
            let rp = format!("spec.rules[{i}]");
            for (j, from) in r.from.iter().enumerate() {
                let fp = format!("{rp}.from[{j}].source");
                let Some(s) = &from.source else {
                    f.push(Code::MissingField, fp, "required");
                    continue;
                };
                if s == &Source::default() {
                    f.push(
                        Code::MissingField,
                        &fp,
                        "an empty source is not allowed: set at least one field",
                    );
                }
                for (field, list) in [
                    ("principals", &s.principals),
                    ("notPrincipals", &s.not_principals),
                ] {
                    for (k, p) in list.iter().enumerate() {
                        check_principal(f, &format!("{fp}.{field}[{k}]"), p);
                    }
                }
                for (field, list) in [
                    ("requestPrincipals", &s.request_principals),
                    ("notRequestPrincipals", &s.not_request_principals),
                    ("namespaces", &s.namespaces),
                    ("notNamespaces", &s.not_namespaces),
                    ("serviceAccounts", &s.service_accounts),
                    ("notServiceAccounts", &s.not_service_accounts),
                ] {
                    for (k, v) in list.iter().enumerate() {
                        if v.is_empty() {
                            f.push(
                                Code::InvalidValue,
                                format!("{fp}.{field}[{k}]"),
                                "empty value is not allowed",
                            );
                        }
                    }
                }
                let has_service_accounts =
                    !s.service_accounts.is_empty() || !s.not_service_accounts.is_empty();
                let has_principals = !s.principals.is_empty() || !s.not_principals.is_empty();
                if has_service_accounts && has_principals {
                    f.push(
                        Code::ConflictingFields,
                        &fp,
                        "serviceAccounts and principals cannot be used together",
                    );
                }
                for (field, list) in [
                    ("ipBlocks", &s.ip_blocks),
                    ("notIpBlocks", &s.not_ip_blocks),
                    ("remoteIpBlocks", &s.remote_ip_blocks),
                    ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
                ] {
                    for (k, v) in list.iter().enumerate() {
                        check_cidr(f, &format!("{fp}.{field}[{k}]"), v);
                    }
                }
            }
            for (j, to) in r.to.iter().enumerate() {
                let op = format!("{rp}.to[{j}].operation");
                let Some(o) = &to.operation else {
                    f.push(Code::MissingField, op, "required");
                    continue;
                };
                if o == &Operation::default() {
                    f.push(
                        Code::MissingField,
                        &op,
                        "an empty operation is not allowed: set at least one field",
                    );
                }
                for (field, list) in [("ports", &o.ports), ("notPorts", &o.not_ports)] {
                    for (k, p) in list.iter().enumerate() {
                        check_port_text(f, &format!("{op}.{field}[{k}]"), &p.0, false);
                    }
                }
                for (field, list) in [
                    ("hosts", &o.hosts),
                    ("notHosts", &o.not_hosts),
                    ("methods", &o.methods),
                    ("notMethods", &o.not_methods),
                    ("paths", &o.paths),
                    ("notPaths", &o.not_paths),
                ] {
                    for (k, v) in list.iter().enumerate() {
                        if v.is_empty() {
                            f.push(
                                Code::InvalidValue,
                                format!("{op}.{field}[{k}]"),
                                "empty value is not allowed",
                            );
                        }
                    }
                }
                for (field, list) in [("paths", &o.paths), ("notPaths", &o.not_paths)] {
                    for (k, v) in list.iter().enumerate() {
                        if !v.is_empty() && !v.starts_with('/') && !v.starts_with('*') {
                            f.push(
                                Code::InvalidValue,
                                format!("{op}.{field}[{k}]"),
                                format!("{v:?}: a path starts with '/' (or is a '*' suffix match)"),
                            );
                        }
                    }
                }
            }
            for (j, c) in r.when.iter().enumerate() {
                let cp = format!("{rp}.when[{j}]");
                match c.key.as_deref() {
                    None | Some("") => f.push(Code::MissingField, join(&cp, "key"), "required"),
                    Some(k) => {
                        let known = CONDITION_KEYS.contains(&k)
                            || CONDITION_PREFIXES.iter().any(|p| {
                                k.starts_with(p) && (p.ends_with('.') || k.ends_with(']'))
                            });
                        if !known {
                            let hint = if let Some(rest) = k.strip_prefix("request.header[") {
                                format!("; did you mean request.headers[{rest}?")
                            } else {
                                crate::util::did_you_mean(k, CONDITION_KEYS)
                                    .map(|s| format!("; did you mean {s}?"))
                                    .unwrap_or_default()
                            };
                            f.push(
                                Code::InvalidValue,
                                join(&cp, "key"),
                                format!("{k:?} is not a condition key Istio supports{hint}"),
                            );
                        }
                        if k == "destination.port" {
                            for (x, v) in c.values.iter().chain(&c.not_values).enumerate() {
                                check_port_text(f, &format!("{cp}.values[{x}]"), &v.0, false);
                            }
                        }
                        if matches!(k, "source.ip" | "remote.ip" | "destination.ip") {
                            for (x, v) in c.values.iter().enumerate() {
                                check_cidr(f, &format!("{cp}.values[{x}]"), &v.0);
                            }
                            for (x, v) in c.not_values.iter().enumerate() {
                                check_cidr(f, &format!("{cp}.notValues[{x}]"), &v.0);
                            }
                        }
                    }
                }
                if c.values.is_empty() && c.not_values.is_empty() {
                    f.push(
                        Code::MissingField,
                        join(&cp, "values"),
                        "one of values, notValues is required",
                    );
                }
            }
        }
    }
}

// --------------------------------------------- RequestAuthentication --

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestAuthenticationSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<MatchLabelsSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    #[serde(default)]
    pub target_refs: Vec<PolicyTargetReference>,
    #[serde(default)]
    pub jwt_rules: Vec<JwtRule>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<String>,
    #[serde(default)]
    pub from_headers: Vec<JwtHeader>,
    #[serde(default)]
    pub from_params: Vec<String>,
    #[serde(default)]
    pub from_cookies: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_payload_to_header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_original_token: Option<bool>,
    #[serde(default)]
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtHeader {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimToHeader {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
}

impl RequestAuthenticationSpec {
    pub fn validate(&self, f: &mut Findings) {
        check_selector_and_targets(f, &self.selector, &self.target_ref, &self.target_refs);
        let mut issuers = BTreeMap::new();
        for (i, r) in self.jwt_rules.iter().enumerate() {
            let rp = format!("spec.jwtRules[{i}]");
            let issuer = r.issuer.as_deref().unwrap_or("");
            if issuer.is_empty() && r.jwks_uri.is_none() && r.jwks.is_none() {
                f.push(
                    Code::MissingField,
                    join(&rp, "issuer"),
                    "a JWT rule needs an issuer (and jwksUri or jwks)",
                );
            } else if issuer.is_empty() {
                f.push(Code::MissingField, join(&rp, "issuer"), "required");
            } else if let Some(j) = issuers.insert(issuer.to_string(), i) {
                f.push(
                    Code::InvalidValue,
                    join(&rp, "issuer"),
                    format!("issuer {issuer:?} is already used by jwtRules[{j}]"),
                );
            }
            if let Some(u) = &r.jwks_uri {
                if !(u.starts_with("https://") || u.starts_with("http://")) {
                    f.push(
                        Code::InvalidValue,
                        join(&rp, "jwksUri"),
                        format!("{u:?} is not an http(s) URL"),
                    );
                }
            }
            if let Some(j) = &r.jwks {
                if serde_json::from_str::<serde_json::Value>(j)
                    .ok()
                    .and_then(|v| v.get("keys").cloned())
                    .is_none()
                {
                    f.push(
                        Code::InvalidValue,
                        join(&rp, "jwks"),
                        "not a JSON Web Key Set (a JSON object with \"keys\")",
                    );
                }
            }
            if r.jwks.is_some() && r.jwks_uri.is_some() {
                f.push(
                    Code::Advice,
                    join(&rp, "jwksUri"),
                    "both jwks and jwksUri are set; jwks is used and jwksUri ignored (as in Istio)",
                );
            }
            if r.jwks.is_none() && r.jwks_uri.is_none() && !issuer.is_empty() {
                f.push(
                    Code::NotImplemented,
                    join(&rp, "jwksUri"),
                    "neither jwksUri nor jwks: Istio would find the keys by OpenID discovery from the issuer; Ambit does not implement discovery, so tokens of this issuer fail verification (set jwksUri or jwks)",
                );
            }
            for (k, h) in r.from_headers.iter().enumerate() {
                let np = format!("{rp}.fromHeaders[{k}].name");
                match h.name.as_deref() {
                    None | Some("") => f.push(Code::MissingField, np, "required"),
                    Some(n) => check_header_name(f, &np, n),
                }
            }
            if !r.from_cookies.is_empty() {
                crate::util::not_implemented(
                    f,
                    &join(&rp, "fromCookies"),
                    "reading JWTs from cookies",
                );
            }
            if let Some(h) = &r.output_payload_to_header {
                check_header_name(f, &join(&rp, "outputPayloadToHeader"), h);
            }
            for (k, c) in r.output_claim_to_headers.iter().enumerate() {
                let cp = format!("{rp}.outputClaimToHeaders[{k}]");
                match c.header.as_deref() {
                    None | Some("") => f.push(Code::MissingField, join(&cp, "header"), "required"),
                    Some(h) => check_header_name(f, &join(&cp, "header"), h),
                }
                if c.claim.as_deref().unwrap_or("").is_empty() {
                    f.push(Code::MissingField, join(&cp, "claim"), "required");
                }
            }
            check_duration(f, &join(&rp, "timeout"), r.timeout.as_ref(), None);
        }
    }
}

/// The waypoint drops a header it cannot name (and with it the token
/// location or the output), so a bad name is an error here.
fn check_header_name(f: &mut Findings, path: &str, h: &str) {
    if !crate::util::is_header_name(h) {
        f.push(
            Code::InvalidValue,
            path,
            format!("{h:?} is not an HTTP header name"),
        );
    }
}
