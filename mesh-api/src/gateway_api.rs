//! Gateway API `HTTPRoute` (`gateway.networking.k8s.io` v1 and v1beta1).
//! Ambit applies HTTPRoutes attached to Services (GAMMA mesh routing, as
//! Istio ambient's waypoints do).

use serde::{Deserialize, Serialize};
use serde_yaml::Value;

use crate::diag::{Code, Findings};
use crate::util::{check_duration, check_host, check_port, check_regex, join, not_implemented};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteSpec {
    #[serde(default)]
    pub parent_refs: Vec<ParentReference>,
    #[serde(default)]
    pub hostnames: Vec<String>,
    #[serde(default)]
    pub rules: Vec<HttpRouteRule>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ParentReference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub matches: Vec<HttpRouteMatch>,
    #[serde(default)]
    pub filters: Vec<HttpRouteFilter>,
    #[serde(default)]
    pub backend_refs: Vec<HttpBackendRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<HttpRouteTimeouts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_persistence: Option<Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HttpPathMatch>,
    #[serde(default)]
    pub headers: Vec<HttpHeaderMatch>,
    #[serde(default)]
    pub query_params: Vec<HttpHeaderMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpPathMatch {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<PathMatchType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PathMatchType {
    Exact,
    PathPrefix,
    RegularExpression,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpHeaderMatch {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<HeaderMatchType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HeaderMatchType {
    Exact,
    RegularExpression,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteFilter {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_header_modifier: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_modifier: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_mirror: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_redirect: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_rewrite: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_ref: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Value>,
}

/// Filter types and the field each one carries.
const FILTERS: &[(&str, &str)] = &[
    ("RequestHeaderModifier", "requestHeaderModifier"),
    ("ResponseHeaderModifier", "responseHeaderModifier"),
    ("RequestMirror", "requestMirror"),
    ("RequestRedirect", "requestRedirect"),
    ("URLRewrite", "urlRewrite"),
    ("ExtensionRef", "extensionRef"),
    ("CORS", "cors"),
];

impl HttpRouteFilter {
    fn field_set(&self, field: &str) -> bool {
        match field {
            "requestHeaderModifier" => self.request_header_modifier.is_some(),
            "responseHeaderModifier" => self.response_header_modifier.is_some(),
            "requestMirror" => self.request_mirror.is_some(),
            "requestRedirect" => self.request_redirect.is_some(),
            "urlRewrite" => self.url_rewrite.is_some(),
            "extensionRef" => self.extension_ref.is_some(),
            "cors" => self.cors.is_some(),
            _ => false,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpBackendRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i64>,
    #[serde(default)]
    pub filters: Vec<HttpRouteFilter>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteTimeouts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_request: Option<String>,
}

fn check_filters(f: &mut Findings, base: &str, filters: &[HttpRouteFilter]) {
    for (i, flt) in filters.iter().enumerate() {
        let fp = format!("{base}[{i}]");
        let Some(t) = flt.type_.as_deref() else {
            f.push(Code::MissingField, join(&fp, "type"), "required");
            continue;
        };
        let Some((_, field)) = FILTERS.iter().find(|(name, _)| *name == t) else {
            let names: Vec<&str> = FILTERS.iter().map(|(n, _)| *n).collect();
            f.push(
                Code::InvalidValue,
                join(&fp, "type"),
                format!("{t:?} is not a filter type (one of {})", names.join(", ")),
            );
            continue;
        };
        if !flt.field_set(field) {
            f.push(
                Code::MissingField,
                join(&fp, field),
                format!("required for type {t}"),
            );
        }
        for (_, other) in FILTERS.iter().filter(|(_, o)| o != field) {
            if flt.field_set(other) {
                f.push(
                    Code::ConflictingFields,
                    join(&fp, other),
                    format!("not allowed with type {t}"),
                );
            }
        }
        if matches!(t, "ExtensionRef" | "CORS") {
            not_implemented(f, &fp, &format!("the {t} filter"));
        }
    }
}

impl HttpRouteSpec {
    pub fn validate(&self, f: &mut Findings) {
        if self.parent_refs.is_empty() {
            f.push(
                Code::Advice,
                "spec.parentRefs",
                "no parentRefs: the route is not attached to anything and has no effect",
            );
        }
        for (i, p) in self.parent_refs.iter().enumerate() {
            let pp = format!("spec.parentRefs[{i}]");
            if p.name.as_deref().unwrap_or("").is_empty() {
                f.push(Code::MissingField, join(&pp, "name"), "required");
            }
            if let Some(port) = p.port {
                check_port(f, &join(&pp, "port"), port);
            }
            let kind = p.kind.as_deref().unwrap_or("Gateway");
            let group = p.group.as_deref().unwrap_or("gateway.networking.k8s.io");
            let is_service = kind == "Service" && (group.is_empty() || group == "core");
            if !is_service {
                f.push(
                    Code::NotImplemented,
                    &pp,
                    format!("parent {kind} ({group}): Ambit applies HTTPRoutes attached to Services (mesh routing); Gateway parents are not served"),
                );
            }
        }
        for (i, h) in self.hostnames.iter().enumerate() {
            check_host(f, &format!("spec.hostnames[{i}]"), h, true);
        }
        for (i, r) in self.rules.iter().enumerate() {
            let rp = format!("spec.rules[{i}]");
            for (j, m) in r.matches.iter().enumerate() {
                let mp = format!("{rp}.matches[{j}]");
                if let Some(pm) = &m.path {
                    let t = pm.type_.unwrap_or(PathMatchType::PathPrefix);
                    let v = pm.value.as_deref().unwrap_or("/");
                    match t {
                        PathMatchType::RegularExpression => {
                            check_regex(f, &format!("{mp}.path.value"), v)
                        }
                        _ if !v.starts_with('/') => f.push(
                            Code::InvalidValue,
                            format!("{mp}.path.value"),
                            format!("{v:?} must start with '/'"),
                        ),
                        _ => {}
                    }
                }
                for (field, list) in [("headers", &m.headers), ("queryParams", &m.query_params)] {
                    for (k, h) in list.iter().enumerate() {
                        let hp = format!("{mp}.{field}[{k}]");
                        if h.name.as_deref().unwrap_or("").is_empty() {
                            f.push(Code::MissingField, join(&hp, "name"), "required");
                        }
                        match (&h.value, h.type_) {
                            (None, _) => f.push(Code::MissingField, join(&hp, "value"), "required"),
                            (Some(v), Some(HeaderMatchType::RegularExpression)) => {
                                check_regex(f, &join(&hp, "value"), v)
                            }
                            _ => {}
                        }
                    }
                }
                if let Some(method) = &m.method {
                    const METHODS: &[&str] = &[
                        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE",
                        "PATCH",
                    ];
                    if !METHODS.contains(&method.as_str()) {
                        f.push(
                            Code::InvalidValue,
                            join(&mp, "method"),
                            format!("{method:?} is not an HTTP method ({})", METHODS.join(", ")),
                        );
                    }
                }
            }
            check_filters(f, &join(&rp, "filters"), &r.filters);
            for (j, b) in r.backend_refs.iter().enumerate() {
                let bp = format!("{rp}.backendRefs[{j}]");
                if b.name.as_deref().unwrap_or("").is_empty() {
                    f.push(Code::MissingField, join(&bp, "name"), "required");
                }
                let kind = b.kind.as_deref().unwrap_or("Service");
                match b.port {
                    Some(p) => {
                        check_port(f, &join(&bp, "port"), p);
                    }
                    None if kind == "Service" => f.push(
                        Code::MissingField,
                        join(&bp, "port"),
                        "required for a Service backend",
                    ),
                    None => {}
                }
                if let Some(w) = b.weight {
                    if !(0..=1_000_000).contains(&w) {
                        f.push(
                            Code::InvalidValue,
                            join(&bp, "weight"),
                            format!("{w} is out of range (0-1000000)"),
                        );
                    }
                }
                check_filters(f, &join(&bp, "filters"), &b.filters);
            }
            if let Some(t) = &r.timeouts {
                let tp = join(&rp, "timeouts");
                check_duration(f, &join(&tp, "request"), t.request.as_ref(), None);
                check_duration(
                    f,
                    &join(&tp, "backendRequest"),
                    t.backend_request.as_ref(),
                    None,
                );
            }
            if r.retry.is_some() {
                not_implemented(f, &join(&rp, "retry"), "HTTPRoute retry (experimental)");
            }
            if r.session_persistence.is_some() {
                not_implemented(f, &join(&rp, "sessionPersistence"), "session persistence");
            }
        }
    }
}

#[cfg(test)]
mod tests;
