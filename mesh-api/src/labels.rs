//! Istio's well-known label names and namespace, and how ambient mode reads
//! them. mesh-api owns Istio's names, so the controller, the node and the
//! waypoint take them from here.

use std::collections::BTreeMap;

/// The label that enrolls a namespace (or one pod) in the ambient mesh
/// (`ambient`), or opts a pod out (`none`).
pub const DATAPLANE_MODE_LABEL: &str = "istio.io/dataplane-mode";

/// The [`DATAPLANE_MODE_LABEL`] value that enrolls.
pub const DATAPLANE_MODE_AMBIENT: &str = "ambient";

/// The [`DATAPLANE_MODE_LABEL`] value that opts a pod out.
pub const DATAPLANE_MODE_NONE: &str = "none";

/// The label that sends a service's traffic through a waypoint: the value
/// is the waypoint workload's name, in the service's namespace. On a
/// Service it overrides its namespace's (see [`waypoint_name`]).
pub const USE_WAYPOINT_LABEL: &str = "istio.io/use-waypoint";

/// The value of [`USE_WAYPOINT_LABEL`] that opts out of any waypoint.
pub const NO_WAYPOINT: &str = "none";

/// Istio's default root namespace: policies there apply mesh-wide.
pub const ROOT_NAMESPACE: &str = "istio-system";

/// The waypoint a service asks for, by name, as Istio ambient decides it:
/// the Service's own [`USE_WAYPOINT_LABEL`] wins, else its namespace's; an
/// empty value or [`NO_WAYPOINT`] (on the Service, even when the namespace
/// names one) means no waypoint.
pub fn waypoint_name<'a>(
    service_labels: &'a BTreeMap<String, String>,
    namespace_labels: Option<&'a BTreeMap<String, String>>,
) -> Option<&'a str> {
    let name = service_labels
        .get(USE_WAYPOINT_LABEL)
        .or_else(|| namespace_labels?.get(USE_WAYPOINT_LABEL))?;
    (!name.is_empty() && name != NO_WAYPOINT).then_some(name.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn service_label_wins_and_none_opts_out() {
        let ns = labels(&[(USE_WAYPOINT_LABEL, "ns-wp")]);
        assert_eq!(waypoint_name(&labels(&[]), Some(&ns)), Some("ns-wp"));
        let svc = labels(&[(USE_WAYPOINT_LABEL, "svc-wp")]);
        assert_eq!(waypoint_name(&svc, Some(&ns)), Some("svc-wp"));
        let none = labels(&[(USE_WAYPOINT_LABEL, NO_WAYPOINT)]);
        assert_eq!(waypoint_name(&none, Some(&ns)), None);
        let empty = labels(&[(USE_WAYPOINT_LABEL, "")]);
        assert_eq!(waypoint_name(&empty, None), None);
        assert_eq!(waypoint_name(&labels(&[]), None), None);
    }
}
