//! `telemetry.istio.io` Telemetry (v1alpha1 and v1).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_yaml::Value;

use crate::diag::{Code, Findings};
use crate::meta::{MatchLabelsSelector, PolicyTargetReference};
use crate::util::{check_duration, check_percent, join};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TelemetrySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<MatchLabelsSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    #[serde(default)]
    pub target_refs: Vec<PolicyTargetReference>,
    #[serde(default)]
    pub tracing: Vec<Tracing>,
    #[serde(default)]
    pub metrics: Vec<Metrics>,
    #[serde(default)]
    pub access_logging: Vec<AccessLogging>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProviderRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tracing {
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_: Option<Value>,
    #[serde(default)]
    pub providers: Vec<ProviderRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random_sampling_percentage: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_span_reporting: Option<bool>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custom_tags: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_request_id_for_trace_sampling: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metrics {
    #[serde(default)]
    pub providers: Vec<ProviderRef>,
    #[serde(default)]
    pub overrides: Vec<MetricsOverrides>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reporting_interval: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricsOverrides {
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_: Option<MetricSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tag_overrides: BTreeMap<String, TagOverride>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<IstioMetric>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_metric: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<WorkloadMode>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IstioMetric {
    AllMetrics,
    RequestCount,
    RequestDuration,
    RequestSize,
    ResponseSize,
    TcpOpenedConnections,
    TcpClosedConnections,
    TcpSentBytes,
    TcpReceivedBytes,
    GrpcRequestMessages,
    GrpcResponseMessages,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkloadMode {
    ClientAndServer,
    Client,
    Server,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TagOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<TagOperation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TagOperation {
    Upsert,
    Remove,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLogging {
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_: Option<Value>,
    #[serde(default)]
    pub providers: Vec<ProviderRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<AccessLogFilter>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLogFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
}

/// The metrics provider Ambit implements: Prometheus, under Istio's
/// standard metric names.
pub const PROMETHEUS_PROVIDER: &str = "prometheus";
/// The access log provider Ambit implements: Istio's built-in `envoy`
/// (the waypoint's own log output).
pub const ENVOY_ACCESS_LOG_PROVIDER: &str = "envoy";

impl TelemetrySpec {
    /// What Ambit's waypoint applies: the sampling percentage of tracing
    /// (trace context is propagated), Istio's standard Prometheus metrics,
    /// and the envoy access log on or off, per namespace (root namespace
    /// for the mesh). Everything else is named as not implemented.
    pub fn validate(&self, f: &mut Findings) {
        for (path, set) in [
            ("spec.selector", self.selector.is_some()),
            ("spec.targetRef", self.target_ref.is_some()),
            ("spec.targetRefs", !self.target_refs.is_empty()),
        ] {
            if set {
                crate::util::not_implemented(
                    f,
                    path,
                    "selecting workloads (the Telemetry applies to its whole namespace)",
                );
            }
        }
        for (i, t) in self.tracing.iter().enumerate() {
            let tp = format!("spec.tracing[{i}]");
            if let Some(p) = t.random_sampling_percentage {
                check_percent(f, &join(&tp, "randomSamplingPercentage"), p);
            }
            check_provider_names(f, &tp, &t.providers);
            if !t.providers.is_empty() {
                crate::util::not_implemented(
                    f,
                    &join(&tp, "providers"),
                    "span reporting to tracing providers (trace context is propagated and sampled; no spans are sent)",
                );
            }
            if t.match_.is_some() {
                crate::util::not_implemented(f, &join(&tp, "match"), "tracing match");
            }
            if !t.custom_tags.is_empty() {
                crate::util::not_implemented(f, &join(&tp, "customTags"), "custom span tags");
            }
            // No spans are reported anyway, so only asking for them is a gap.
            if t.disable_span_reporting == Some(false) {
                crate::util::not_implemented(
                    f,
                    &join(&tp, "disableSpanReporting"),
                    "span reporting",
                );
            }
            if t.use_request_id_for_trace_sampling.is_some() {
                crate::util::not_implemented(
                    f,
                    &join(&tp, "useRequestIdForTraceSampling"),
                    "sampling by request id",
                );
            }
        }
        for (i, m) in self.metrics.iter().enumerate() {
            let mp = format!("spec.metrics[{i}]");
            check_provider_names(f, &mp, &m.providers);
            for (j, p) in m.providers.iter().enumerate() {
                if let Some(n) = &p.name {
                    if n != PROMETHEUS_PROVIDER {
                        f.push(
                            Code::NotImplemented,
                            format!("{mp}.providers[{j}].name"),
                            format!("metrics provider {n:?} is not implemented by Ambit (only prometheus); ignored"),
                        );
                    }
                }
            }
            for (j, o) in m.overrides.iter().enumerate() {
                let op = format!("{mp}.overrides[{j}]");
                if let Some(sel) = &o.match_ {
                    if sel.metric.is_some() && sel.custom_metric.is_some() {
                        f.push(
                            Code::ConflictingFields,
                            join(&op, "match"),
                            "set only one of metric, customMetric",
                        );
                    }
                }
                if o.disabled.is_some() {
                    crate::util::not_implemented(
                        f,
                        &join(&op, "disabled"),
                        "disabling Istio's standard metrics (they are always on)",
                    );
                }
                if !o.tag_overrides.is_empty() {
                    crate::util::not_implemented(
                        f,
                        &join(&op, "tagOverrides"),
                        "changing the labels of Istio's standard metrics",
                    );
                }
                for (tag, t) in &o.tag_overrides {
                    if t.operation != Some(TagOperation::Remove) && t.value.is_none() {
                        f.push(
                            Code::MissingField,
                            format!("{op}.tagOverrides.{tag}.value"),
                            "required unless operation is REMOVE",
                        );
                    }
                }
                if o.match_
                    .as_ref()
                    .and_then(|m| m.custom_metric.as_ref())
                    .is_some()
                {
                    crate::util::not_implemented(
                        f,
                        &join(&op, "match.customMetric"),
                        "custom metrics",
                    );
                }
            }
            if m.reporting_interval.is_some() {
                check_duration(
                    f,
                    &join(&mp, "reportingInterval"),
                    m.reporting_interval.as_ref(),
                    None,
                );
                crate::util::not_implemented(
                    f,
                    &join(&mp, "reportingInterval"),
                    "a metrics reporting interval",
                );
            }
        }
        for (i, a) in self.access_logging.iter().enumerate() {
            let ap = format!("spec.accessLogging[{i}]");
            check_provider_names(f, &ap, &a.providers);
            for (j, p) in a.providers.iter().enumerate() {
                if let Some(n) = p.name.as_deref().filter(|n| !n.is_empty()) {
                    if n != ENVOY_ACCESS_LOG_PROVIDER {
                        f.push(
                            Code::NotImplemented,
                            format!("{ap}.providers[{j}].name"),
                            format!("access log provider {n:?} is not implemented by Ambit (only envoy: the log goes to the waypoint's output); ignored"),
                        );
                    }
                }
            }
            if a.match_.is_some() {
                crate::util::not_implemented(
                    f,
                    &join(&ap, "match"),
                    "access log match (every request is logged)",
                );
            }
            if a.filter.is_some() {
                crate::util::not_implemented(f, &join(&ap, "filter"), "access log filters");
            }
        }
    }

    /// Provider names this Telemetry references, with their field path.
    pub fn provider_refs(&self) -> Vec<(String, &'static str, &str)> {
        let mut out = Vec::new();
        for (kind, field, lists) in [
            (
                "tracing",
                "spec.tracing",
                self.tracing
                    .iter()
                    .map(|t| &t.providers)
                    .collect::<Vec<_>>(),
            ),
            (
                "metrics",
                "spec.metrics",
                self.metrics.iter().map(|t| &t.providers).collect(),
            ),
            (
                "accessLogging",
                "spec.accessLogging",
                self.access_logging.iter().map(|t| &t.providers).collect(),
            ),
        ] {
            for (i, ps) in lists.iter().enumerate() {
                for (j, p) in ps.iter().enumerate() {
                    if let Some(n) = &p.name {
                        out.push((
                            format!("{field}[{i}].providers[{j}].name"),
                            kind,
                            n.as_str(),
                        ));
                    }
                }
            }
        }
        out
    }
}

fn check_provider_names(f: &mut Findings, base: &str, providers: &[ProviderRef]) {
    for (j, p) in providers.iter().enumerate() {
        if p.name.as_deref().unwrap_or("").is_empty() {
            f.push(
                Code::MissingField,
                format!("{base}.providers[{j}].name"),
                "required",
            );
        }
    }
}

#[cfg(test)]
mod tests;
