//! `meshctl proxy-status --node <admin-address>`: a node's own view, from its
//! admin server's `/enrolment` (mesh-node `--admin`): ready or not, the pods
//! it enrolled, and each pod it failed to enrol with the error.

use serde::{Deserialize, Serialize};

use crate::http::{self, HttpError};
use crate::table;

/// mesh-node's `admin::EnrolmentDump`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct NodeEnrolment {
    pub node: String,
    pub ready: bool,
    pub enrolled: Vec<String>,
    pub failures: Vec<EnrolmentFailure>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct EnrolmentFailure {
    pub pod: String,
    pub error: String,
    pub attempts: u64,
    pub first_failed_at: String,
    pub last_failed_at: String,
}

/// Why a node's status could not be read.
#[derive(Debug)]
pub enum NodeStatusError {
    Http(HttpError),
    /// It answered, but not the JSON mesh-node sends.
    Body(String),
}

impl std::fmt::Display for NodeStatusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeStatusError::Http(e) => write!(f, "{e}"),
            NodeStatusError::Body(m) => f.write_str(m),
        }
    }
}

/// `GET /enrolment` on the admin server at `address`.
pub fn fetch(address: &str) -> Result<NodeEnrolment, NodeStatusError> {
    let (authority, prefix) = http::parse_base(address).map_err(NodeStatusError::Http)?;
    let path = format!("{prefix}/enrolment");
    let body = http::get(&authority, &path).map_err(NodeStatusError::Http)?;
    serde_json::from_slice(&body).map_err(|e| {
        NodeStatusError::Body(format!(
            "http://{authority}{path} did not answer the expected JSON: {e}"
        ))
    })
}

/// One row per node, then each failing pod with its error.
pub fn render_human(nodes: &[NodeEnrolment]) -> String {
    let header = ["NODE", "READY", "ENROLLED", "FAILING"];
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            vec![
                n.node.clone(),
                if n.ready { "yes" } else { "NO" }.to_string(),
                n.enrolled.len().to_string(),
                n.failures.len().to_string(),
            ]
        })
        .collect();
    let mut out = table::render(&header, &rows);
    let failures: Vec<String> = nodes
        .iter()
        .flat_map(|n| {
            n.failures.iter().map(move |f| {
                format!(
                    "{} {} ({} attempts since {}): {}",
                    n.node,
                    f.pod,
                    f.attempts,
                    f.first_failed_at,
                    f.error.trim()
                )
            })
        })
        .collect();
    if !failures.is_empty() {
        out.push_str("\nEnrolment failures:\n");
        for f in failures {
            out.push_str("  ");
            out.push_str(&f);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_readiness_and_each_failing_pod() {
        let json = r#"[{"node":"node-a","ready":true,"enrolled":["demo/a"],"failures":[]},
          {"node":"node-b","ready":false,"enrolled":["demo/srv"],"failures":[
            {"pod":"demo/blocked","error":"pod demo/blocked: listening on 127.0.0.1:15001 in its netns: Address in use (os error 98)",
             "attempts":3,"first_failed_at":"2026-01-01T00:00:00Z","last_failed_at":"2026-01-01T00:00:02Z"}]}]"#;
        let nodes: Vec<NodeEnrolment> = serde_json::from_str(json).unwrap();
        let out = render_human(&nodes);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("NODE"), "{out}");
        assert!(
            lines[1].starts_with("node-a") && lines[1].contains("yes"),
            "{out}"
        );
        assert!(
            lines[2].starts_with("node-b") && lines[2].contains("NO"),
            "{out}"
        );
        assert!(
            out.contains("node-b demo/blocked (3 attempts since 2026-01-01T00:00:00Z): pod demo/blocked: listening on 127.0.0.1:15001"),
            "{out}"
        );
        let healthy = render_human(&nodes[..1]);
        assert!(!healthy.contains("Enrolment failures"), "{healthy}");
    }
}
