//! `ServiceEntry`: hosts outside the registry, and their endpoints.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::common::{check_export_to, PROTOCOLS};
use crate::diag::{Code, Findings};
use crate::meta::LabelsSelector;
use crate::util::{check_cidr, check_host, check_port, join, not_implemented};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntrySpec {
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<ServiceEntryLocation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<ServiceEntryResolution>,
    #[serde(default)]
    pub endpoints: Vec<WorkloadEntrySpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<LabelsSelector>,
    #[serde(default)]
    pub export_to: Vec<String>,
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServiceEntryLocation {
    MeshExternal,
    MeshInternal,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServiceEntryResolution {
    None,
    Static,
    Dns,
    DnsRoundRobin,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEntrySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default)]
    pub ports: BTreeMap<String, i64>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
}

impl ServiceEntrySpec {
    pub fn validate(&self, f: &mut Findings) {
        if self.hosts.is_empty() {
            f.push(
                Code::MissingField,
                "spec.hosts",
                "at least one host is required",
            );
        }
        for (i, h) in self.hosts.iter().enumerate() {
            check_host(f, &format!("spec.hosts[{i}]"), h, true);
        }
        for (i, a) in self.addresses.iter().enumerate() {
            check_cidr(f, &format!("spec.addresses[{i}]"), a);
        }
        if self.ports.is_empty() {
            f.push(
                Code::MissingField,
                "spec.ports",
                "at least one port is required",
            );
        }
        let mut port_names = BTreeSet::new();
        for (i, p) in self.ports.iter().enumerate() {
            let pp = format!("spec.ports[{i}]");
            match p.number {
                Some(n) => {
                    check_port(f, &join(&pp, "number"), n);
                }
                None => f.push(Code::MissingField, join(&pp, "number"), "required"),
            }
            if let Some(t) = p.target_port {
                check_port(f, &join(&pp, "targetPort"), t);
            }
            if let Some(proto) = &p.protocol {
                if !PROTOCOLS.contains(&proto.to_ascii_uppercase().as_str()) {
                    f.push(
                        Code::InvalidValue,
                        join(&pp, "protocol"),
                        format!(
                            "{proto:?} is not a protocol (one of {})",
                            PROTOCOLS.join(", ")
                        ),
                    );
                }
            }
            if let Some(n) = &p.name {
                if !port_names.insert(n.as_str()) {
                    f.push(
                        Code::InvalidValue,
                        join(&pp, "name"),
                        format!("duplicate port name {n:?}"),
                    );
                }
            }
        }
        let resolution = self.resolution.unwrap_or(ServiceEntryResolution::None);
        if resolution == ServiceEntryResolution::Static
            && self.endpoints.is_empty()
            && self.workload_selector.is_none()
        {
            f.push(
                Code::MissingField,
                "spec.endpoints",
                "resolution STATIC needs endpoints (or a workloadSelector)",
            );
        }
        if !self.endpoints.is_empty() && self.workload_selector.is_some() {
            f.push(
                Code::ConflictingFields,
                "spec",
                "set only one of endpoints, workloadSelector",
            );
        }
        for (i, e) in self.endpoints.iter().enumerate() {
            let ep = format!("spec.endpoints[{i}]");
            let is_static = resolution == ServiceEntryResolution::Static;
            match &e.address {
                Some(a)
                    if is_static
                        && !a.starts_with("unix://")
                        && a.parse::<std::net::IpAddr>().is_err() =>
                {
                    f.push(
                        Code::InvalidValue,
                        join(&ep, "address"),
                        format!("{a:?} is not an IP address (resolution STATIC)"),
                    );
                }
                Some(_) if is_static => {}
                Some(a) => check_host(f, &join(&ep, "address"), a, false),
                None if resolution == ServiceEntryResolution::Static => {
                    f.push(Code::MissingField, join(&ep, "address"), "required")
                }
                None => {}
            }
            for (k, port) in &e.ports {
                check_port(f, &format!("{ep}.ports.{k}"), *port);
            }
        }
        if self.workload_selector.is_some() {
            not_implemented(f, "spec.workloadSelector", "ServiceEntry workloadSelector");
        }
        check_export_to(f, "spec.exportTo", &self.export_to);
    }
}

#[cfg(test)]
mod tests;
