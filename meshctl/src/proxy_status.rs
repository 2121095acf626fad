//! `meshctl proxy-status [--controller http://127.0.0.1:15014] [--node ADDR]... [-o human|json]`
//!
//! Every xDS client the controller knows (nodes, and waypoints as
//! `waypoint~<ns>~<name>` with their L7Resource column), from its
//! `/debug/syncz`: connected or not, per resource type the last version it
//! ACKed and whether that is the last one sent (SYNCED), is still awaited
//! (STALE) or was refused (NACK), and the last NACK's message.
//!
//! `--node <admin-address>` (repeatable) adds each node's own view (see
//! `node_status`): ready or not, and the pods it failed to enrol.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Args;
use serde::Deserialize;

use crate::analyze::Output;
use crate::http::{self, HttpError};
use crate::node_status;
use crate::table;
use crate::{EXIT_OK, EXIT_USAGE};

/// The controller's status server when neither --controller nor --node is given.
pub const DEFAULT_CONTROLLER: &str = "http://127.0.0.1:15014";

#[derive(Args, Debug)]
pub struct ProxyStatusArgs {
    /// The controller's status server (mesh-controller --status-listen)
    /// [default: http://127.0.0.1:15014 when no --node is given].
    #[arg(long, value_name = "URL")]
    pub controller: Option<String>,
    /// A node's admin address (mesh-node --admin, e.g. 127.0.0.1:15000),
    /// repeatable: whether it is ready, and each pod it failed to enrol
    /// with the error.
    #[arg(long = "node", value_name = "NODE_ADMIN_ADDRESS")]
    pub nodes: Vec<String>,
    /// Output format (json: the controller's /debug/syncz as is; with
    /// --node, `{"controller": ..., "nodes": [...]}`).
    #[arg(short, long, value_enum, default_value_t = Output::Human)]
    pub output: Output,
}

/// One client of `/debug/syncz` (mesh-controller's `status::ClientStatus`).
#[derive(Debug, Deserialize)]
pub struct ClientStatus {
    pub node: String,
    #[serde(default)]
    pub connected: bool,
    #[serde(default)]
    pub peer: String,
    #[serde(default)]
    pub connected_at_unix: u64,
    #[serde(default)]
    pub disconnected_at_unix: Option<u64>,
    #[serde(default)]
    pub types: BTreeMap<String, TypeStatus>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TypeStatus {
    pub sent_version: String,
    pub sent_nonce: String,
    pub resources: usize,
    pub acked_version: String,
    pub acked_nonce: String,
    pub last_nack: Option<Nack>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Nack {
    pub nonce: String,
    pub version: String,
    pub message: String,
    pub at_unix: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sync {
    /// Nothing sent yet.
    None,
    Synced,
    /// Sent, not answered yet.
    Stale,
    /// The latest answer was a NACK.
    Nack,
}

/// The sequence number of a nonce (`<connection>-<n>`), to order an ACK and
/// a NACK of the same stream.
fn seq(nonce: &str) -> Option<u64> {
    nonce.rsplit('-').next()?.parse().ok()
}

impl TypeStatus {
    fn nack_is_current(&self) -> bool {
        let Some(n) = &self.last_nack else {
            return false;
        };
        if self.acked_nonce.is_empty() {
            return true;
        }
        match (seq(&n.nonce), seq(&self.acked_nonce)) {
            (Some(a), Some(b)) => a > b,
            // Unknown nonce shapes: a NACK of what was sent last is current.
            _ => n.nonce == self.sent_nonce,
        }
    }

    fn sync(&self) -> Sync {
        if self.nack_is_current() {
            Sync::Nack
        } else if self.sent_nonce.is_empty() {
            Sync::None
        } else if self.acked_nonce == self.sent_nonce {
            Sync::Synced
        } else {
            Sync::Stale
        }
    }

    fn cell(&self) -> String {
        let acked = if self.acked_version.is_empty() {
            "-".to_string()
        } else {
            format!("v{}", self.acked_version)
        };
        match self.sync() {
            Sync::None => "-".into(),
            Sync::Synced => acked,
            Sync::Stale => format!("{acked} STALE"),
            Sync::Nack => format!("{acked} NACK"),
        }
    }
}

/// `type.googleapis.com/ambit.v1.Workload` -> `Workload`.
fn short_type(url: &str) -> &str {
    url.rsplit(['/', '.']).next().unwrap_or(url)
}

/// Column order: the order a node applies types in, then anything else.
fn type_rank(short: &str) -> usize {
    const ORDER: &[&str] = &[
        "MeshConfig",
        "Namespace",
        "Workload",
        "Service",
        "PeerAuthentication",
        "Authorization",
        "L7Resource",
    ];
    ORDER
        .iter()
        .position(|t| *t == short)
        .unwrap_or(ORDER.len())
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn ago(at: u64, now: u64) -> String {
    format!("{} ago", table::duration(now.saturating_sub(at)))
}

/// The table and the NACK messages.
pub fn render_human(clients: &[ClientStatus], now: u64) -> String {
    let mut types: Vec<&str> = clients
        .iter()
        .flat_map(|c| c.types.keys().map(String::as_str))
        .collect();
    types.sort_by_key(|t| (type_rank(short_type(t)), *t));
    types.dedup();

    let mut header: Vec<&str> = vec!["NODE", "CONNECTED", "PEER", "SYNC"];
    header.extend(types.iter().map(|t| short_type(t)));
    header.push("LAST NACK");
    let mut rows = Vec::new();
    let mut nacks = Vec::new();
    for c in clients {
        let connected = if c.connected {
            format!("yes ({})", ago(c.connected_at_unix, now))
        } else {
            match c.disconnected_at_unix {
                Some(t) => format!("NO ({})", ago(t, now)),
                None => "NO".into(),
            }
        };
        let states: Vec<Sync> = c.types.values().map(TypeStatus::sync).collect();
        let sync = if !c.connected {
            "DISCONNECTED"
        } else if states.contains(&Sync::Nack) {
            "NACK"
        } else if states.contains(&Sync::Stale) {
            "STALE"
        } else if states.contains(&Sync::Synced) {
            "SYNCED"
        } else {
            "-"
        };
        let peer = if c.peer.is_empty() { "-" } else { &c.peer };
        let mut row = vec![
            c.node.clone(),
            connected,
            peer.to_string(),
            sync.to_string(),
        ];
        for t in &types {
            row.push(c.types.get(*t).map(TypeStatus::cell).unwrap_or("-".into()));
        }
        // The most recent NACK of any type.
        let last = c
            .types
            .iter()
            .filter_map(|(t, s)| s.last_nack.as_ref().map(|n| (t, s, n)))
            .max_by_key(|(_, _, n)| n.at_unix);
        row.push(match last {
            Some((t, _, n)) => table::truncate(&format!("{}: {}", short_type(t), n.message), 60),
            None => "-".into(),
        });
        rows.push(row);
        for (t, s, n) in c
            .types
            .iter()
            .filter_map(|(t, s)| s.last_nack.as_ref().map(|n| (t, s, n)))
        {
            let when = if n.at_unix > 0 {
                ago(n.at_unix, now)
            } else {
                "time unknown".into()
            };
            let superseded = if s.nack_is_current() {
                ""
            } else {
                ", a later version was ACKed"
            };
            nacks.push(format!(
                "{} {} NACKed v{} (nonce {}, {when}{superseded}): {}",
                c.node,
                short_type(t),
                n.version,
                n.nonce,
                n.message.trim()
            ));
        }
    }
    let mut out = table::render(&header, &rows);
    if !nacks.is_empty() {
        out.push_str("\nNACKs:\n");
        for n in nacks {
            out.push_str("  ");
            out.push_str(&n);
            out.push('\n');
        }
    }
    out
}

/// The controller's `/debug/syncz`: the raw JSON and its clients, or the
/// message to print.
fn fetch_syncz(controller: &str) -> Result<(serde_json::Value, Vec<ClientStatus>), String> {
    let (authority, prefix) =
        http::parse_base(controller).map_err(|e| format!("--controller {e}"))?;
    let body = match http::get(&authority, &format!("{prefix}/debug/syncz")) {
        Ok(b) => b,
        Err(e @ HttpError::Unreachable(_)) => {
            return Err(format!(
                "the controller's status server is unreachable: {e}\n\
                 Is mesh-controller running, and is --controller its --status-listen address?"
            ))
        }
        Err(e) => return Err(e.to_string()),
    };
    let clients: Vec<ClientStatus> = serde_json::from_slice(&body).map_err(|e| {
        format!("http://{authority}{prefix}/debug/syncz did not answer the expected JSON: {e}")
    })?;
    // As the controller sent it (validated above).
    let value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    Ok((value, clients))
}

pub fn run(args: &ProxyStatusArgs) -> ExitCode {
    let controller = match (&args.controller, args.nodes.is_empty()) {
        (Some(c), _) => Some(c.as_str()),
        (None, true) => Some(DEFAULT_CONTROLLER),
        (None, false) => None,
    };
    let syncz = match controller.map(fetch_syncz).transpose() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("meshctl proxy-status: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let mut nodes = Vec::new();
    let mut unreachable = false;
    for address in &args.nodes {
        match node_status::fetch(address) {
            Ok(n) => nodes.push(n),
            Err(e) => {
                eprintln!("meshctl proxy-status: node {address}: {e}");
                unreachable = true;
            }
        }
    }
    match args.output {
        Output::Json => {
            let value = match (&syncz, args.nodes.is_empty()) {
                (Some((v, _)), true) => v.clone(),
                (syncz, _) => serde_json::json!({
                    "controller": syncz.as_ref().map(|(v, _)| v.clone()),
                    "nodes": nodes,
                }),
            };
            match serde_json::to_string_pretty(&value) {
                Ok(s) => println!("{s}"),
                Err(e) => {
                    eprintln!("meshctl proxy-status: {e}");
                    return ExitCode::from(EXIT_USAGE);
                }
            }
        }
        Output::Human => {
            if let (Some((_, clients)), Some(c)) = (&syncz, controller) {
                if clients.is_empty() {
                    println!("No xDS client has connected to the controller at {c}.");
                } else {
                    print!("{}", render_human(clients, now_unix()));
                }
                if !nodes.is_empty() {
                    println!();
                }
            }
            if !nodes.is_empty() {
                print!("{}", node_status::render_human(&nodes));
            }
        }
    }
    if unreachable {
        return ExitCode::from(EXIT_USAGE);
    }
    ExitCode::from(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(sent: &str, acked: &str, nack: Option<&str>) -> TypeStatus {
        TypeStatus {
            sent_version: "3".into(),
            sent_nonce: sent.into(),
            resources: 1,
            acked_version: "2".into(),
            acked_nonce: acked.into(),
            last_nack: nack.map(|n| Nack {
                nonce: n.into(),
                version: "3".into(),
                message: "bad".into(),
                at_unix: 100,
            }),
        }
    }

    #[test]
    fn classifies_types() {
        assert_eq!(ts("1-5", "1-5", None).sync(), Sync::Synced);
        assert_eq!(ts("1-6", "1-5", None).sync(), Sync::Stale);
        assert_eq!(ts("1-6", "1-5", Some("1-6")).sync(), Sync::Nack);
        // A NACK followed by a later ACK is history, not the current state.
        assert_eq!(ts("1-12", "1-12", Some("1-9")).sync(), Sync::Synced);
        assert_eq!(ts("", "", None).sync(), Sync::None);
        assert_eq!(
            short_type("type.googleapis.com/ambit.v1.Workload"),
            "Workload"
        );
    }

    #[test]
    fn lists_a_waypoint_like_a_node() {
        let json = r#"[{"node":"node-a","connected":true,"peer":"127.0.0.1:1","connected_at_unix":90,
          "types":{"type.googleapis.com/ambit.v1.Workload":{"sent_version":"3","sent_nonce":"1-6","resources":3,
              "acked_version":"3","acked_nonce":"1-6"}}},
          {"node":"waypoint~demo~waypoint","connected":true,"peer":"127.0.0.1:2","connected_at_unix":90,
          "types":{"type.googleapis.com/ambit.v1.Workload":{"sent_version":"3","sent_nonce":"2-6","resources":3,
              "acked_version":"3","acked_nonce":"2-6"},
            "type.googleapis.com/ambit.v1.L7Resource":{"sent_version":"3","sent_nonce":"2-7","resources":2,
              "acked_version":"3","acked_nonce":"2-7"}}}]"#;
        let clients: Vec<ClientStatus> = serde_json::from_str(json).unwrap();
        let out = render_human(&clients, 100);
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[0].find("Workload") < lines[0].find("L7Resource"),
            "{out}"
        );
        assert!(lines[2].starts_with("waypoint~demo~waypoint"), "{out}");
        assert!(lines[2].contains("SYNCED"), "{out}");
    }

    #[test]
    fn renders_nodes_and_nacks() {
        let json = r#"[{"node":"node-a","connected":true,"peer":"127.0.0.1:1","connected_at_unix":90,
          "disconnected_at_unix":null,"types":{
            "type.googleapis.com/ambit.v1.Workload":{"sent_version":"3","sent_nonce":"1-6","resources":3,
              "acked_version":"2","acked_nonce":"1-5","last_nack":{"nonce":"1-6","version":"3","message":"field ip: nope","at_unix":95}},
            "type.googleapis.com/ambit.v1.MeshConfig":{"sent_version":"2","sent_nonce":"1-1","resources":1,
              "acked_version":"2","acked_nonce":"1-1","last_nack":null}}},
          {"node":"node-b","connected":false,"peer":"","connected_at_unix":1,"disconnected_at_unix":40,"types":{}}]"#;
        let clients: Vec<ClientStatus> = serde_json::from_str(json).unwrap();
        let out = render_human(&clients, 100);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("NODE"), "{out}");
        assert!(
            lines[0].find("MeshConfig") < lines[0].find("Workload"),
            "{out}"
        );
        assert!(
            lines[1].contains("node-a") && lines[1].contains("yes (10s ago)"),
            "{out}"
        );
        assert!(
            lines[1].contains("NACK") && lines[1].contains("v2 NACK"),
            "{out}"
        );
        assert!(
            lines[2].contains("NO (1m0s ago)") && lines[2].contains("DISCONNECTED"),
            "{out}"
        );
        assert!(
            out.contains("node-a Workload NACKed v3 (nonce 1-6, 5s ago): field ip: nope"),
            "{out}"
        );
    }
}
