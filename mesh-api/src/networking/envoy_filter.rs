//! `EnvoyFilter`: the local-rate-limit form, the one Ambit implements.

use serde::{Deserialize, Serialize};
use serde_yaml::Value;

use super::common::ONE_MS;
use crate::diag::{Code, Findings, Severity};
use crate::meta::LabelsSelector;
use crate::util::{check_duration, join, not_implemented};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvoyFilterSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<LabelsSelector>,
    #[serde(default)]
    pub target_refs: Vec<crate::meta::PolicyTargetReference>,
    #[serde(default)]
    pub config_patches: Vec<EnvoyConfigObjectPatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvoyConfigObjectPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply_to: Option<String>,
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_: Option<EnvoyConfigObjectMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<Patch>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvoyConfigObjectMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_configuration: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Patch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_class: Option<String>,
}

/// Envoy's `LocalRateLimit` filter config, the part Ambit implements.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalRateLimit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stat_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_bucket: Option<TokenBucket>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_enabled: Option<RuntimeFractionalPercent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_enforced: Option<RuntimeFractionalPercent>,
    #[serde(default)]
    pub response_headers_to_add: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_x_ratelimit_headers: Option<XRateLimitHeaders>,
}

/// Envoy's `x-ratelimit-*` response headers setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum XRateLimitHeaders {
    #[serde(rename = "DISABLE_X_RATELIMIT_HEADERS")]
    Disable,
    #[serde(rename = "DRAFT_VERSION_03")]
    DraftVersion03,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBucket {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_fill: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fill_interval: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeFractionalPercent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_value: Option<FractionalPercent>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FractionalPercent {
    #[serde(default)]
    pub numerator: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denominator: Option<FractionDenominator>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FractionDenominator {
    Hundred,
    TenThousand,
    Million,
}

impl FractionalPercent {
    /// The fraction as a percentage.
    pub fn percent(&self) -> f64 {
        let d = match self.denominator.unwrap_or(FractionDenominator::Hundred) {
            FractionDenominator::Hundred => 100.0,
            FractionDenominator::TenThousand => 10_000.0,
            FractionDenominator::Million => 1_000_000.0,
        };
        self.numerator as f64 * 100.0 / d
    }
}

pub const LOCAL_RATELIMIT_FILTER: &str = "envoy.filters.http.local_ratelimit";
const LOCAL_RATELIMIT_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit";
const TYPED_STRUCTS: &[&str] = &[
    "type.googleapis.com/udpa.type.v1.TypedStruct",
    "type.googleapis.com/xds.type.v3.TypedStruct",
];

/// One recognised local-rate-limit patch.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalRateLimitPatch {
    /// Index in `configPatches`.
    pub index: usize,
    pub context: Option<String>,
    pub config: LocalRateLimit,
}

impl EnvoyConfigObjectPatch {
    /// The LocalRateLimit config carried by this patch, if it has the
    /// local-rate-limit form (an HTTP_FILTER insert of
    /// `envoy.filters.http.local_ratelimit`). `Err` says why not.
    fn local_rate_limit_value(&self) -> Result<(Value, String), String> {
        if self.apply_to.as_deref() != Some("HTTP_FILTER") {
            return Err(format!(
                "applyTo {} (only HTTP_FILTER patches that insert envoy.filters.http.local_ratelimit are implemented)",
                self.apply_to.as_deref().unwrap_or("<unset>")
            ));
        }
        let patch = self.patch.as_ref().ok_or("no patch")?;
        let op = patch.operation.as_deref().unwrap_or("<unset>");
        if !matches!(
            op,
            "INSERT_BEFORE" | "INSERT_AFTER" | "INSERT_FIRST" | "ADD"
        ) {
            return Err(format!(
                "patch operation {op} (only inserting a local_ratelimit filter is implemented)"
            ));
        }
        let value = patch.value.as_ref().ok_or("patch without a value")?;
        let name = value.get("name").and_then(Value::as_str).unwrap_or("");
        if name != LOCAL_RATELIMIT_FILTER {
            return Err(format!(
                "filter {name:?} (only {LOCAL_RATELIMIT_FILTER} is implemented)"
            ));
        }
        let tc = value
            .get("typed_config")
            .or_else(|| value.get("typedConfig"))
            .ok_or("the local_ratelimit filter has no typed_config")?;
        let ty = tc.get("@type").and_then(Value::as_str).unwrap_or("");
        if TYPED_STRUCTS.contains(&ty) {
            let url = tc.get("type_url").and_then(Value::as_str).unwrap_or("");
            if url != LOCAL_RATELIMIT_TYPE {
                return Err(format!(
                    "TypedStruct type_url {url:?} is not LocalRateLimit"
                ));
            }
            let inner = tc.get("value").cloned().unwrap_or(Value::Null);
            Ok((inner, "patch.value.typed_config.value".into()))
        } else if ty == LOCAL_RATELIMIT_TYPE {
            let mut inner = tc.clone();
            if let Value::Mapping(m) = &mut inner {
                m.remove("@type");
            }
            Ok((inner, "patch.value.typed_config".into()))
        } else {
            Err(format!("typed_config @type {ty:?} is not LocalRateLimit"))
        }
    }
}

impl EnvoyFilterSpec {
    /// The local-rate-limit patches, parsed (those that do not parse are
    /// left out; `validate` reports them).
    pub fn local_rate_limits(&self) -> Vec<LocalRateLimitPatch> {
        let mut out = Vec::new();
        for (i, p) in self.config_patches.iter().enumerate() {
            if let Ok((v, _)) = p.local_rate_limit_value() {
                let mut scratch = Findings::default();
                if let Some(config) =
                    crate::lenient::deserialize_lenient::<LocalRateLimit>(v, "", &mut scratch)
                {
                    if !scratch.has_errors() {
                        out.push(LocalRateLimitPatch {
                            index: i,
                            context: p.match_.as_ref().and_then(|m| m.context.clone()),
                            config,
                        });
                    }
                }
            }
        }
        out
    }

    pub fn validate(&self, f: &mut Findings) {
        if self.config_patches.is_empty() {
            f.push(
                Code::MissingField,
                "spec.configPatches",
                "at least one patch is required",
            );
        }
        if self.workload_selector.is_some() && !self.target_refs.is_empty() {
            f.push(
                Code::ConflictingFields,
                "spec",
                "set only one of workloadSelector, targetRefs",
            );
        }
        if !self.target_refs.is_empty() {
            f.push(
                Code::NotImplemented,
                "spec.targetRefs",
                "EnvoyFilter targetRefs are not implemented by Ambit; the filter is ignored",
            );
        }
        if self.priority.is_some() {
            not_implemented(
                f,
                "spec.priority",
                "EnvoyFilter priority (local rate limits apply in resource order)",
            );
        }
        for (i, p) in self.config_patches.iter().enumerate() {
            let pp = format!("spec.configPatches[{i}]");
            match p.local_rate_limit_value() {
                Err(why) => f.push(
                    Code::NotImplemented,
                    &pp,
                    format!(
                        "EnvoyFilter patch not implemented by Ambit: {why}; the patch is ignored"
                    ),
                ),
                Ok((v, rel)) => {
                    let base = format!("{pp}.{rel}");
                    if let Some(ctx) = p.match_.as_ref().and_then(|m| m.context.as_deref()) {
                        if !matches!(ctx, "SIDECAR_INBOUND" | "ANY") {
                            f.push(
                                Code::NotImplemented,
                                format!("{pp}.match.context"),
                                format!("context {ctx}: Ambit applies local rate limits where the destination's traffic is received (SIDECAR_INBOUND); this patch is ignored"),
                            );
                        }
                    }
                    let before = f.items.len();
                    let rl: Option<LocalRateLimit> =
                        crate::lenient::deserialize_lenient_as(v, &base, f, Code::NotImplemented);
                    // Unknown LocalRateLimit fields are features Ambit does not
                    // implement, not schema errors (the schema is Envoy's).
                    for item in &mut f.items[before..] {
                        if item.code == Code::NotImplemented {
                            item.severity = Severity::Warning;
                            if !item.message.contains("not implemented") {
                                item.message = format!(
                                    "{} (LocalRateLimit field not implemented by Ambit; ignored)",
                                    item.message
                                );
                            }
                        }
                    }
                    if let Some(rl) = rl {
                        rl.validate(f, &base);
                    }
                }
            }
        }
    }
}

impl LocalRateLimit {
    fn validate(&self, f: &mut Findings, base: &str) {
        if self.stat_prefix.as_deref().unwrap_or("").is_empty() {
            f.push(Code::MissingField, join(base, "stat_prefix"), "required");
        }
        match &self.token_bucket {
            None => f.push(Code::MissingField, join(base, "token_bucket"), "required"),
            Some(tb) => {
                let tp = join(base, "token_bucket");
                match tb.max_tokens {
                    Some(n) if n > 0 => {}
                    Some(n) => f.push(
                        Code::InvalidValue,
                        join(&tp, "max_tokens"),
                        format!("{n} must be greater than 0"),
                    ),
                    None => f.push(Code::MissingField, join(&tp, "max_tokens"), "required"),
                }
                if let Some(n) = tb.tokens_per_fill {
                    if n <= 0 {
                        f.push(
                            Code::InvalidValue,
                            join(&tp, "tokens_per_fill"),
                            format!("{n} must be greater than 0"),
                        );
                    }
                }
                match &tb.fill_interval {
                    None => f.push(Code::MissingField, join(&tp, "fill_interval"), "required"),
                    Some(_) => {
                        check_duration(
                            f,
                            &join(&tp, "fill_interval"),
                            tb.fill_interval.as_ref(),
                            ONE_MS,
                        );
                    }
                }
            }
        }
        for (name, rf) in [
            ("filter_enabled", &self.filter_enabled),
            ("filter_enforced", &self.filter_enforced),
        ] {
            if let Some(FractionalPercent { numerator, .. }) =
                rf.as_ref().and_then(|r| r.default_value.as_ref())
            {
                if *numerator < 0 {
                    f.push(
                        Code::InvalidPercentage,
                        format!("{base}.{name}.default_value.numerator"),
                        format!("{numerator} is negative"),
                    );
                }
            }
        }
        for (i, v) in self.response_headers_to_add.iter().enumerate() {
            check_header_value_option(f, &format!("{base}.response_headers_to_add[{i}]"), v);
        }
    }
}

/// Envoy's `HeaderValueOption` as the waypoint reads it: `header.key`
/// (a header name), `header.value`, and `append` or `append_action`
/// (APPEND_IF_EXISTS_OR_ADD, OVERWRITE_IF_EXISTS_OR_ADD).
fn check_header_value_option(f: &mut Findings, path: &str, v: &Value) {
    let Some(h) = v.get("header") else {
        f.push(Code::MissingField, join(path, "header"), "required");
        return;
    };
    match h.get("key").and_then(Value::as_str) {
        None | Some("") => f.push(Code::MissingField, join(path, "header.key"), "required"),
        Some(k) => {
            if !crate::util::is_header_name(k) {
                f.push(
                    Code::InvalidValue,
                    join(path, "header.key"),
                    format!("{k:?} is not an HTTP header name"),
                );
            }
        }
    }
    match v.get("append_action").and_then(Value::as_str) {
        None | Some("APPEND_IF_EXISTS_OR_ADD") | Some("OVERWRITE_IF_EXISTS_OR_ADD") => {}
        Some(other) => f.push(
            Code::NotImplemented,
            join(path, "append_action"),
            format!("{other} is not implemented by Ambit (APPEND_IF_EXISTS_OR_ADD and OVERWRITE_IF_EXISTS_OR_ADD are); the header is not added"),
        ),
    }
}

#[cfg(test)]
mod tests;
