//! `meshctl proxy-config <node-admin-address> [workloads|services|policies|certificates|all] [-o human|json]`
//!
//! What one node holds, from its admin server's `/config_dump`
//! (mesh-node `--admin`, 127.0.0.1:15000 in the node's network namespace
//! by default): workloads, services and their endpoints, policies, and the
//! certificates of its identities with their expiry.

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use serde::Deserialize;

use crate::analyze::Output;
use crate::http::{self, HttpError};
use crate::table;
use crate::{EXIT_OK, EXIT_USAGE};

#[derive(Args, Debug)]
pub struct ProxyConfigArgs {
    /// The node's admin address (mesh-node --admin), e.g. 127.0.0.1:15000.
    #[arg(value_name = "NODE_ADMIN_ADDRESS")]
    pub address: String,
    /// What to show.
    #[arg(value_enum, default_value_t = Section::All)]
    pub section: Section,
    /// Output format (json: the section of /config_dump as the node sent it).
    #[arg(short, long, value_enum, default_value_t = Output::Human)]
    pub output: Output,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Section {
    Workloads,
    Services,
    Policies,
    Certificates,
    All,
}

impl Section {
    fn key(self) -> Option<&'static str> {
        match self {
            Section::Workloads => Some("workloads"),
            Section::Services => Some("services"),
            Section::Policies => Some("policies"),
            Section::Certificates => Some("certificates"),
            Section::All => None,
        }
    }

    fn shows(self, s: Section) -> bool {
        self == Section::All || self == s
    }
}

/// mesh-node's `admin::ConfigDump`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ConfigDump {
    pub node: String,
    pub trust_domain: String,
    pub generated_at: String,
    pub workloads: Vec<Workload>,
    pub services: Vec<Service>,
    pub policies: Vec<Policy>,
    pub certificates: Vec<Certificate>,
    pub trust_roots: usize,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Workload {
    pub name: String,
    pub namespace: String,
    pub ip: String,
    pub node: String,
    pub service_account: String,
    pub identity: String,
    pub ambient: bool,
    pub enrolled_here: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Service {
    pub name: String,
    pub namespace: String,
    pub host: String,
    pub addresses: Vec<String>,
    pub ports: Vec<Port>,
    pub endpoints: Vec<Endpoint>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Port {
    pub name: Option<String>,
    pub port: u16,
    pub target_port: u16,
    pub protocol: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Endpoint {
    pub workload: String,
    pub ip: String,
    pub node: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Policy {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub action: String,
    pub selector: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Certificate {
    pub identity: String,
    pub not_after: String,
    pub seconds_remaining: i64,
    pub chain_length: usize,
}

fn expires_in(secs: i64) -> String {
    if secs < 0 {
        format!("EXPIRED {} ago", table::duration(secs.unsigned_abs()))
    } else {
        table::duration(secs.unsigned_abs())
    }
}

fn selector(s: &Option<BTreeMap<String, String>>) -> String {
    match s {
        None => "(all)".into(),
        Some(m) => m
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
    }
}

/// At most three items, then `+N more`.
fn few(items: Vec<String>) -> String {
    if items.is_empty() {
        return "-".into();
    }
    let n = items.len();
    let mut shown: Vec<String> = items.into_iter().take(3).collect();
    if n > 3 {
        shown.push(format!("+{} more", n - 3));
    }
    shown.join(", ")
}

pub fn render_human(d: &ConfigDump, section: Section) -> String {
    let mut out = format!(
        "Node {} (trust domain {}), as of {}\n",
        d.node, d.trust_domain, d.generated_at
    );
    if section.shows(Section::Workloads) {
        let here = d.workloads.iter().filter(|w| w.enrolled_here).count();
        out.push_str(&format!(
            "\nWORKLOADS ({}, {here} enrolled here)\n",
            d.workloads.len()
        ));
        let rows: Vec<Vec<String>> = d
            .workloads
            .iter()
            .map(|w| {
                vec![
                    w.namespace.clone(),
                    w.name.clone(),
                    w.ip.clone(),
                    w.node.clone(),
                    w.identity.clone(),
                    if w.enrolled_here {
                        "yes".into()
                    } else if w.ambient {
                        "no".into()
                    } else {
                        "no (not ambient)".into()
                    },
                ]
            })
            .collect();
        out.push_str(&table::render(
            &[
                "NAMESPACE",
                "NAME",
                "IP",
                "NODE",
                "IDENTITY",
                "ENROLLED HERE",
            ],
            &rows,
        ));
    }
    if section.shows(Section::Services) {
        out.push_str(&format!("\nSERVICES ({})\n", d.services.len()));
        let rows: Vec<Vec<String>> = d
            .services
            .iter()
            .map(|s| {
                vec![
                    s.host.clone(),
                    s.addresses.join(","),
                    s.ports
                        .iter()
                        .map(|p| format!("{}->{}/{}", p.port, p.target_port, p.protocol))
                        .collect::<Vec<_>>()
                        .join(","),
                    few(s
                        .endpoints
                        .iter()
                        .map(|e| format!("{} ({})", e.ip, e.node))
                        .collect()),
                ]
            })
            .collect();
        out.push_str(&table::render(
            &["HOST", "ADDRESSES", "PORTS", "ENDPOINTS"],
            &rows,
        ));
    }
    if section.shows(Section::Policies) {
        out.push_str(&format!("\nPOLICIES ({})\n", d.policies.len()));
        let rows: Vec<Vec<String>> = d
            .policies
            .iter()
            .map(|p| {
                vec![
                    p.kind.clone(),
                    p.namespace.clone(),
                    p.name.clone(),
                    p.action.clone(),
                    selector(&p.selector),
                ]
            })
            .collect();
        out.push_str(&table::render(
            &["KIND", "NAMESPACE", "NAME", "ACTION/MODE", "SELECTOR"],
            &rows,
        ));
    }
    if section.shows(Section::Certificates) {
        out.push_str(&format!(
            "\nCERTIFICATES ({}, {} trust root(s))\n",
            d.certificates.len(),
            d.trust_roots
        ));
        let rows: Vec<Vec<String>> = d
            .certificates
            .iter()
            .map(|c| {
                vec![
                    c.identity.clone(),
                    c.not_after.clone(),
                    expires_in(c.seconds_remaining),
                    c.chain_length.to_string(),
                ]
            })
            .collect();
        out.push_str(&table::render(
            &["IDENTITY", "NOT AFTER", "EXPIRES IN", "CHAIN"],
            &rows,
        ));
    }
    out
}

pub fn run(args: &ProxyConfigArgs) -> ExitCode {
    let (authority, prefix) = match http::parse_base(&args.address) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("meshctl proxy-config: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let url = format!("http://{authority}{prefix}/config_dump");
    let body = match http::get(&authority, &format!("{prefix}/config_dump")) {
        Ok(b) => b,
        Err(e @ HttpError::Unreachable(_)) => {
            eprintln!(
                "meshctl proxy-config: the node's admin server is unreachable: {e}\n\
                 It listens on mesh-node --admin (127.0.0.1:15000 in the node's network namespace)."
            );
            return ExitCode::from(EXIT_USAGE);
        }
        Err(HttpError::Status(404, _)) => {
            eprintln!("meshctl proxy-config: {url}: not found (a mesh-node without /config_dump?)");
            return ExitCode::from(EXIT_USAGE);
        }
        Err(e) => {
            eprintln!("meshctl proxy-config: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let value: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("meshctl proxy-config: {url} did not answer JSON: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match args.output {
        Output::Json => {
            let shown = match args.section.key() {
                Some(k) => value.get(k).cloned().unwrap_or(serde_json::Value::Null),
                None => value,
            };
            match serde_json::to_string_pretty(&shown) {
                Ok(s) => println!("{s}"),
                Err(e) => {
                    eprintln!("meshctl proxy-config: {e}");
                    return ExitCode::from(EXIT_USAGE);
                }
            }
        }
        Output::Human => {
            let dump: ConfigDump = match serde_json::from_value(value) {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("meshctl proxy-config: {url}: unexpected shape: {e}");
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            print!("{}", render_human(&dump, args.section));
        }
    }
    ExitCode::from(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_sections() {
        let d: ConfigDump = serde_json::from_str(
            r#"{"node":"node-a","trust_domain":"cluster.local","generated_at":"2026-01-01T00:00:00Z",
            "workloads":[{"name":"client","namespace":"demo","ip":"10.0.0.1","node":"node-a","service_account":"client",
              "identity":"spiffe://cluster.local/ns/demo/sa/client","ambient":true,"enrolled_here":true}],
            "services":[{"name":"s","namespace":"demo","host":"s.demo.svc.cluster.local","addresses":["10.96.0.1"],
              "ports":[{"name":null,"port":80,"target_port":8080,"protocol":"TCP"}],
              "endpoints":[{"workload":"demo/a","ip":"1.1.1.1","node":"n"},{"workload":"demo/b","ip":"1.1.1.2","node":"n"},
                {"workload":"demo/c","ip":"1.1.1.3","node":"n"},{"workload":"demo/d","ip":"1.1.1.4","node":"n"}]}],
            "policies":[{"kind":"AuthorizationPolicy","namespace":"demo","name":"allow","action":"ALLOW","selector":{"app":"s"}}],
            "certificates":[{"identity":"spiffe://cluster.local/ns/demo/sa/client","not_after":"2026-01-02T00:00:00Z",
              "seconds_remaining":86399,"chain_length":2}],
            "trust_roots":1}"#,
        )
        .unwrap();
        let all = render_human(&d, Section::All);
        assert!(all.contains("WORKLOADS (1, 1 enrolled here)"), "{all}");
        assert!(all.contains("80->8080/TCP"), "{all}");
        assert!(all.contains("+1 more"), "{all}");
        assert!(all.contains("app=s"), "{all}");
        assert!(all.contains("2026-01-02T00:00:00Z  23h59m"), "{all}");
        let certs = render_human(&d, Section::Certificates);
        assert!(!certs.contains("WORKLOADS") && certs.contains("CERTIFICATES"));
        assert_eq!(expires_in(-61), "EXPIRED 1m1s ago");
    }
}
