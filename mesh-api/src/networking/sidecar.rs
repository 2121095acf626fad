//! `Sidecar`: egress listeners and the workloads they apply to.

use serde::{Deserialize, Serialize};
use serde_yaml::Value;

use super::common::{check_ns_host, Port};
use crate::diag::{Code, Findings};
use crate::meta::LabelsSelector;
use crate::util::join;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SidecarSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<LabelsSelector>,
    #[serde(default)]
    pub ingress: Vec<Value>,
    #[serde(default)]
    pub egress: Vec<IstioEgressListener>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_traffic_policy: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_connection_pool: Option<Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IstioEgressListener {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Port>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_mode: Option<String>,
    #[serde(default)]
    pub hosts: Vec<String>,
}

impl SidecarSpec {
    pub fn validate(&self, f: &mut Findings) {
        f.push(
            Code::NotApplied,
            "",
            "Sidecar configures sidecar proxies; Ambit is sidecarless and, like Istio ambient, does not apply it",
        );
        for (i, e) in self.egress.iter().enumerate() {
            let ep = format!("spec.egress[{i}]");
            if e.hosts.is_empty() {
                f.push(
                    Code::MissingField,
                    join(&ep, "hosts"),
                    "at least one host is required",
                );
            }
            for (j, h) in e.hosts.iter().enumerate() {
                let hp = format!("{ep}.hosts[{j}]");
                if !h.contains('/') {
                    f.push(
                        Code::InvalidValue,
                        &hp,
                        format!("{h:?} must be written <namespace>/<host> (e.g. \"./*\", \"istio-system/*\")"),
                    );
                } else {
                    check_ns_host(f, &hp, h);
                }
            }
            if let Some(p) = &e.port {
                p.validate(f, &join(&ep, "port"), false);
            }
        }
    }
}

#[cfg(test)]
mod tests;
