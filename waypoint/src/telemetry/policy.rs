//! The Telemetry resources the waypoint applies: trace sampling and access
//! logging, mesh-wide from the root namespace and per namespace over it.

use std::collections::HashMap;

use mesh_api::telemetry::TelemetrySpec;

use crate::issue::Issue;
use crate::namespace::{host_namespace, ROOT_NAMESPACE};
use crate::trace::DEFAULT_SAMPLING_PERCENT;

/// What one Telemetry resource sets.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Settings {
    sampling_percent: Option<f64>,
    access_log: Option<bool>,
}

impl Settings {
    fn or(self, base: Settings) -> Settings {
        Settings {
            sampling_percent: self.sampling_percent.or(base.sampling_percent),
            access_log: self.access_log.or(base.access_log),
        }
    }
}

/// The Telemetry settings the waypoint applies: a root-namespace
/// (`istio-system`) Telemetry for the mesh, a namespace's for the services
/// of that namespace (by the destination service's namespace), field by
/// field over the mesh's.
#[derive(Clone, Debug, Default)]
pub struct TelemetryPolicy {
    mesh: Settings,
    namespaces: HashMap<String, Settings>,
}

impl TelemetryPolicy {
    fn settings(&self, host: &str) -> Settings {
        match host_namespace(host).and_then(|ns| self.namespaces.get(ns)) {
            Some(s) => s.or(self.mesh),
            None => self.mesh,
        }
    }

    /// The sampling percentage for traces the waypoint starts.
    pub fn sampling_percent(&self, host: &str) -> f64 {
        self.settings(host)
            .sampling_percent
            .unwrap_or(DEFAULT_SAMPLING_PERCENT)
    }

    /// Access logging for requests to `host` (on unless disabled).
    pub fn access_log(&self, host: &str) -> bool {
        self.settings(host).access_log.unwrap_or(true)
    }

    /// Adds one Telemetry resource; what the waypoint does not implement is
    /// reported with its field path.
    pub fn add(
        &mut self,
        resource: &str,
        namespace: &str,
        spec: &TelemetrySpec,
        issues: &mut Vec<Issue>,
    ) {
        let mut ni = |path: &str, what: &str| {
            issues.push(Issue::new(
                resource,
                path,
                format!("{what} is not implemented by the waypoint; ignored"),
            ))
        };
        let targeted = [
            ("spec.selector", spec.selector.is_some()),
            ("spec.targetRef", spec.target_ref.is_some()),
            ("spec.targetRefs", !spec.target_refs.is_empty()),
        ];
        for (path, set) in targeted {
            if set {
                ni(
                    path,
                    "selecting workloads (the Telemetry is applied to its whole namespace)",
                );
            }
        }
        let mut s = Settings::default();
        for (i, t) in spec.tracing.iter().enumerate() {
            let p = format!("spec.tracing[{i}]");
            if !t.providers.is_empty() {
                ni(
                    &format!("{p}.providers"),
                    "span reporting (trace context is propagated and sampled, no spans are sent)",
                );
            }
            if t.match_.is_some() {
                ni(&format!("{p}.match"), "tracing match");
            }
            if !t.custom_tags.is_empty() {
                ni(&format!("{p}.customTags"), "custom span tags");
            }
            if t.disable_span_reporting.is_some() {
                ni(&format!("{p}.disableSpanReporting"), "span reporting");
            }
            if t.use_request_id_for_trace_sampling.is_some() {
                ni(
                    &format!("{p}.useRequestIdForTraceSampling"),
                    "sampling by request id",
                );
            }
            if let Some(pct) = t.random_sampling_percentage {
                s.sampling_percent = Some(pct.clamp(0.0, 100.0));
            }
        }
        for (i, m) in spec.metrics.iter().enumerate() {
            let p = format!("spec.metrics[{i}]");
            for (j, pr) in m.providers.iter().enumerate() {
                if pr.name.as_deref() != Some(mesh_api::telemetry::PROMETHEUS_PROVIDER) {
                    ni(
                        &format!("{p}.providers[{j}]"),
                        "a metrics provider other than prometheus",
                    );
                }
            }
            if !m.overrides.is_empty() {
                ni(&format!("{p}.overrides"), "metric overrides (the standard metrics are always on, with the standard labels)");
            }
            if m.reporting_interval.is_some() {
                ni(&format!("{p}.reportingInterval"), "a reporting interval");
            }
        }
        for (i, a) in spec.access_logging.iter().enumerate() {
            let p = format!("spec.accessLogging[{i}]");
            if a.match_.is_some() {
                ni(&format!("{p}.match"), "access log match");
            }
            if a.filter.is_some() {
                ni(&format!("{p}.filter"), "access log filters");
            }
            for (j, pr) in a.providers.iter().enumerate() {
                if pr.name.as_deref() != Some("envoy") {
                    ni(&format!("{p}.providers[{j}]"), "an access log provider other than envoy (the log goes to the waypoint's output)");
                }
            }
            s.access_log = Some(a.disabled != Some(true));
        }
        if namespace == ROOT_NAMESPACE {
            self.mesh = s.or(self.mesh);
        } else {
            let e = self.namespaces.entry(namespace.to_string()).or_default();
            *e = s.or(*e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> (TelemetryPolicy, Vec<Issue>) {
        let mut p = TelemetryPolicy::default();
        let mut issues = Vec::new();
        for d in mesh_api::parse_documents(yaml, "t.yaml") {
            if let Some(mesh_api::Resource::Telemetry(o)) = &d.resource {
                let ns = o.metadata.namespace_or_default().to_string();
                p.add("Telemetry t", &ns, &o.spec, &mut issues);
            }
        }
        (p, issues)
    }

    #[test]
    fn sampling_and_access_log_by_namespace() {
        let (p, _) = policy("");
        assert_eq!(p.sampling_percent("a.b"), DEFAULT_SAMPLING_PERCENT);
        assert!(p.access_log("a.b"));
        let (p, issues) = policy(
            r#"apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh, namespace: istio-system}
spec:
  tracing:
  - randomSamplingPercentage: 100
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: quiet, namespace: quiet}
spec:
  accessLogging:
  - disabled: true
"#,
        );
        assert!(issues.is_empty(), "{issues:?}");
        assert_eq!(p.sampling_percent("a.quiet.svc.cluster.local"), 100.0);
        assert!(!p.access_log("a.quiet.svc.cluster.local"));
        assert!(p.access_log("a.loud"));
    }

    #[test]
    fn seeds_report_what_is_not_implemented() {
        let read = crate::seed_config;
        let (p, issues) = policy(&read("14-000-telemetry-default-tracing.yaml"));
        assert_eq!(p.sampling_percent("x.y"), 100.0);
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].path, "spec.tracing[0].providers");
        let (p, issues) = policy(&read("38-002-telemetry-mesh-default.yaml"));
        assert!(issues.is_empty(), "{issues:?}");
        assert!(p.access_log("x.y"));
    }
}
