//! Types and checks shared by the networking resources: string and port
//! matches, destinations, percentages, header operations, and the
//! `exportTo` / `[namespace/]host` checks.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::diag::{Code, Findings};
use crate::util::{check_host, check_label_name, check_port, check_regex, join};

pub(super) const ONE_MS: Option<Duration> = Some(Duration::from_millis(1));

pub(super) fn check_export_to(f: &mut Findings, path: &str, export_to: &[String]) {
    if !export_to.is_empty() {
        f.push(
            Code::NotImplemented,
            path,
            "exportTo is not implemented by Ambit: the resource is visible to the whole mesh",
        );
    }
}

/// `{exact|prefix|regex}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StringMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

impl StringMatch {
    /// `allow_empty`: header matches may be `{}` (presence match).
    pub(super) fn validate(&self, f: &mut Findings, path: &str, allow_empty: bool) {
        let set = [&self.exact, &self.prefix, &self.regex]
            .iter()
            .filter(|o| o.is_some())
            .count();
        if set > 1 {
            f.push(
                Code::ConflictingFields,
                path,
                "set only one of exact, prefix, regex",
            );
        } else if set == 0 && !allow_empty {
            f.push(
                Code::MissingField,
                path,
                "one of exact, prefix, regex is required",
            );
        }
        if let Some(r) = &self.regex {
            check_regex(f, &join(path, "regex"), r);
        }
    }
}

/// `port: {number}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<i64>,
}

/// `Port` of Gateway servers and Sidecar listeners.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Port {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<i64>,
}

pub(super) const PROTOCOLS: &[&str] = &[
    "HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "TCP", "TLS", "UDP",
];

impl Port {
    pub(super) fn validate(&self, f: &mut Findings, path: &str, need_protocol: bool) {
        match self.number {
            Some(n) => {
                check_port(f, &join(path, "number"), n);
            }
            None => f.push(Code::MissingField, join(path, "number"), "required"),
        }
        if let Some(t) = self.target_port {
            check_port(f, &join(path, "targetPort"), t);
        }
        match &self.protocol {
            Some(p) if !PROTOCOLS.contains(&p.to_ascii_uppercase().as_str()) => f.push(
                Code::InvalidValue,
                join(path, "protocol"),
                format!("{p:?} is not a protocol (one of {})", PROTOCOLS.join(", ")),
            ),
            None if need_protocol => f.push(Code::MissingField, join(path, "protocol"), "required"),
            _ => {}
        }
    }
}

/// `Destination`: host, subset, port.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Destination {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
}

impl Destination {
    pub(super) fn validate(&self, f: &mut Findings, path: &str) {
        match &self.host {
            Some(h) if !h.is_empty() => check_host(f, &join(path, "host"), h, false),
            _ => f.push(Code::MissingField, join(path, "host"), "required"),
        }
        if let Some(s) = &self.subset {
            check_label_name(f, &join(path, "subset"), s);
        }
        if let Some(PortSelector { number: Some(n) }) = &self.port {
            check_port(f, &join(path, "port.number"), *n);
        }
    }
}

/// `Percent`: `{value: 0-100}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Percent {
    #[serde(default)]
    pub value: f64,
}

/// `Headers`: request/response header manipulation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Headers {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<HeaderOperations>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<HeaderOperations>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderOperations {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// `[namespace/]host` as Gateway servers and Sidecar listeners write hosts.
pub(super) fn check_ns_host(f: &mut Findings, path: &str, h: &str) {
    let host = match h.split_once('/') {
        Some((ns, host)) => {
            if !(ns == "*" || ns == "." || ns == "~" || crate::util::is_dns_label(ns)) {
                f.push(
                    Code::InvalidValue,
                    path,
                    format!("{h:?}: {ns:?} is not a namespace (a name, \".\", \"~\" or \"*\")"),
                );
                return;
            }
            host
        }
        None => h,
    };
    check_host(f, path, host, true);
}
