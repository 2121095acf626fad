//! What the waypoint could not apply from a resource, and how it names the
//! resource. Every compiler (routes, policies, security, rate limits,
//! telemetry, gateway) reports into a `Vec<Issue>`; this module depends on
//! none of them.

use std::fmt;

use mesh_api::Resource;

/// Something in a resource the waypoint could not apply (the rest of the
/// resource still applies).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issue {
    /// `Kind namespace/name`.
    pub resource: String,
    pub path: String,
    pub message: String,
}

impl Issue {
    pub fn new(resource: &str, path: &str, message: impl Into<String>) -> Self {
        Issue {
            resource: resource.to_string(),
            path: path.to_string(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: field {}: {}",
            self.resource, self.path, self.message
        )
    }
}

/// `Kind namespace/name`, as [`Issue::resource`] names a resource.
pub(crate) fn res_name(r: &Resource) -> String {
    format!(
        "{:?} {}/{}",
        r.kind(),
        r.namespace(),
        r.name().unwrap_or("<unnamed>")
    )
}
