//! Core Kubernetes kinds that sit next to mesh config (Namespace, Service,
//! ServiceAccount, Deployment, ConfigMap) and IstioOperator. They are
//! recognised, not applied as mesh config; the `istio` ConfigMap's
//! MeshConfig gets a light check.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_yaml::Value;

use crate::diag::{Code, Findings, Severity};
use crate::kinds::Kind;
use crate::meta::ObjectMeta;
use crate::util::{check_regex, did_you_mean};

/// A recognised non-mesh object, kept as YAML.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CoreObject {
    #[serde(skip)]
    pub kind: Kind,
    pub api_version: String,
    pub metadata: ObjectMeta,
    /// Everything but apiVersion, kind and metadata (`spec`, `data`, ...).
    pub body: serde_yaml::Mapping,
}

/// Profiles istioctl ships.
const ISTIOCTL_PROFILES: &[&str] = &[
    "default",
    "demo",
    "minimal",
    "remote",
    "empty",
    "preview",
    "ambient",
    "openshift",
    "openshift-ambient",
    "stable",
];

/// The ConfigMap istiod reads MeshConfig from.
pub const MESH_CONFIGMAP: &str = "istio";
pub const INJECTOR_CONFIGMAP: &str = "istio-sidecar-injector";
/// Istio's label for a waypoint in another namespace than the Namespace's
/// or Service's own; Ambit's nodes and controller do not read it.
pub const USE_WAYPOINT_NAMESPACE_LABEL: &str = "istio.io/use-waypoint-namespace";

impl CoreObject {
    pub fn validate(&self, f: &mut Findings) {
        match self.kind {
            Kind::IstioOperator => {
                f.push(
                    Code::NotApplied,
                    "",
                    "installation config, not applied by Ambit (Ambit installs from its own manifests)",
                );
                if let Some(Value::String(p)) = self.body.get("spec").and_then(|s| s.get("profile"))
                {
                    if !ISTIOCTL_PROFILES.contains(&p.as_str()) && !p.contains('/') {
                        f.push(
                            Code::Advice,
                            "spec.profile",
                            format!(
                                "{p:?} is not one of istioctl's built-in profiles ({}); istioctl would refuse it",
                                ISTIOCTL_PROFILES.join(", ")
                            ),
                        );
                    }
                }
            }
            Kind::Namespace | Kind::Service => {
                let labels = &self.metadata.labels;
                if labels.contains_key(USE_WAYPOINT_NAMESPACE_LABEL) {
                    f.push(
                        Code::NotImplemented,
                        format!("metadata.labels.{USE_WAYPOINT_NAMESPACE_LABEL}"),
                        "a waypoint in another namespace is not supported: Ambit looks for the waypoint that istio.io/use-waypoint names in the object's own namespace; this label is ignored",
                    );
                }
                if self.kind == Kind::Namespace
                    && labels.get("istio-injection").map(String::as_str) == Some("enabled")
                    && !labels.contains_key("istio.io/dataplane-mode")
                {
                    f.push(
                        Code::Advice,
                        "metadata.labels.istio-injection",
                        "istio-injection=enabled asks for sidecar injection; Ambit enrols namespaces labelled istio.io/dataplane-mode=ambient",
                    );
                }
            }
            Kind::ConfigMap => {
                let name = self.metadata.name.as_deref().unwrap_or("");
                if name == MESH_CONFIGMAP {
                    f.push_with(
                        Severity::Info,
                        Code::NotApplied,
                        "",
                        "Istio MeshConfig: checked, but not used by Ambit",
                    );
                    match self.body.get("data").and_then(|d| d.get("mesh")) {
                        Some(Value::String(text)) => check_mesh_config(f, "data.mesh", text),
                        Some(_) => f.push(
                            Code::InvalidType,
                            "data.mesh",
                            "wrong type: expected a string (the MeshConfig as YAML text)",
                        ),
                        None => {}
                    }
                } else if name == INJECTOR_CONFIGMAP {
                    f.push_with(
                        Severity::Info,
                        Code::NotApplied,
                        "",
                        "sidecar injector config: Ambit injects no sidecars and does not use it",
                    );
                }
            }
            _ => {}
        }
    }

    /// For the `istio` ConfigMap: the extension providers its MeshConfig
    /// defines, name to provider type (`zipkin`, `envoyOtelAls`, ...).
    pub fn mesh_config_providers(&self) -> Option<BTreeMap<String, String>> {
        if self.kind != Kind::ConfigMap || self.metadata.name.as_deref() != Some(MESH_CONFIGMAP) {
            return None;
        }
        let text = self.body.get("data")?.get("mesh")?.as_str()?;
        let mesh: Value = serde_yaml::from_str(text).ok()?;
        Some(providers_of(&mesh))
    }
}

fn providers_of(mesh: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(Value::Sequence(list)) = mesh.get("extensionProviders") {
        for p in list {
            let Some(m) = p.as_mapping() else { continue };
            let Some(name) = m.get("name").and_then(Value::as_str) else {
                continue;
            };
            let ty = m
                .keys()
                .filter_map(Value::as_str)
                .find(|k| *k != "name")
                .unwrap_or("");
            out.insert(name.to_string(), ty.to_string());
        }
    }
    out
}

/// MeshConfig top-level fields (istio/api mesh/v1alpha1/config.proto).
const MESH_CONFIG_FIELDS: &[&str] = &[
    "proxyListenPort",
    "proxyInboundListenPort",
    "proxyHttpPort",
    "connectTimeout",
    "protocolDetectionTimeout",
    "tcpKeepalive",
    "ingressClass",
    "ingressService",
    "ingressControllerMode",
    "ingressSelector",
    "enableTracing",
    "accessLogFile",
    "accessLogFormat",
    "accessLogEncoding",
    "enableEnvoyAccessLogService",
    "disableEnvoyListenerLog",
    "defaultConfig",
    "outboundTrafficPolicy",
    "inboundTrafficPolicy",
    "configSources",
    "enableAutoMtls",
    "trustDomain",
    "trustDomainAliases",
    "caCertificates",
    "defaultServiceExportTo",
    "defaultVirtualServiceExportTo",
    "defaultDestinationRuleExportTo",
    "rootNamespace",
    "localityLbSetting",
    "dnsRefreshRate",
    "h2UpgradePolicy",
    "inboundClusterStatName",
    "outboundClusterStatName",
    "certificates",
    "thriftConfig",
    "serviceSettings",
    "enablePrometheusMerge",
    "verifyCertificateAtClient",
    "ca",
    "extensionProviders",
    "defaultProviders",
    "discoverySelectors",
    "pathNormalization",
    "defaultHttpRetryPolicy",
    "meshMTLS",
    "tlsDefaults",
    "serviceScopeConfigs",
];

/// ProxyConfig fields (istio/api mesh/v1alpha1/proxy.proto).
const PROXY_CONFIG_FIELDS: &[&str] = &[
    "configPath",
    "binaryPath",
    "serviceCluster",
    "tracingServiceName",
    "drainDuration",
    "parentShutdownDuration",
    "discoveryAddress",
    "discoveryRefreshDelay",
    "zipkinAddress",
    "statsdUdpAddress",
    "envoyMetricsServiceAddress",
    "proxyAdminPort",
    "availabilityZone",
    "controlPlaneAuthPolicy",
    "customConfigFile",
    "statNameLength",
    "concurrency",
    "proxyBootstrapTemplatePath",
    "interceptionMode",
    "tracing",
    "sds",
    "envoyAccessLogService",
    "envoyMetricsService",
    "proxyMetadata",
    "runtimeValues",
    "statusPort",
    "extraStatTags",
    "gatewayTopology",
    "terminationDrainDuration",
    "meshId",
    "readinessProbe",
    "proxyStatsMatcher",
    "holdApplicationUntilProxyStarts",
    "caCertificatesPem",
    "image",
    "privateKeyProvider",
    "proxyHeaders",
    "fileFlushInterval",
    "fileFlushMinSizeKb",
];

const PROXY_STATS_MATCHER_FIELDS: &[&str] =
    &["inclusionPrefixes", "inclusionSuffixes", "inclusionRegexps"];

const TRACING_PROVIDERS: &[&str] = &[
    "zipkin",
    "lightstep",
    "datadog",
    "stackdriver",
    "opencensus",
    "skywalking",
    "opentelemetry",
];
const ACCESS_LOG_PROVIDERS: &[&str] = &[
    "envoyFileAccessLog",
    "envoyHttpAls",
    "envoyTcpAls",
    "envoyOtelAls",
    "stackdriver",
];
const METRICS_PROVIDERS: &[&str] = &["prometheus", "stackdriver"];
const AUTHZ_PROVIDERS: &[&str] = &["envoyExtAuthzHttp", "envoyExtAuthzGrpc"];

/// Provider names Istio defines without an `extensionProviders` entry.
pub const BUILTIN_PROVIDERS: &[(&str, &str)] = &[
    ("prometheus", "prometheus"),
    ("envoy", "envoyFileAccessLog"),
    ("stackdriver", "stackdriver"),
];

/// Which Telemetry section a provider type can serve.
pub fn provider_serves(ty: &str, section: &str) -> bool {
    match section {
        "tracing" => TRACING_PROVIDERS.contains(&ty),
        "accessLogging" => ACCESS_LOG_PROVIDERS.contains(&ty),
        "metrics" => METRICS_PROVIDERS.contains(&ty),
        _ => false,
    }
}

fn unknown_keys(
    f: &mut Findings,
    base: &str,
    v: &Value,
    known: &[&str],
    what: &str,
    hints: &[(&str, &str)],
) {
    let Some(m) = v.as_mapping() else { return };
    for k in m.keys() {
        let Some(k) = k.as_str() else { continue };
        if known.contains(&k) {
            continue;
        }
        let msg = if let Some((_, h)) = hints.iter().find(|(name, _)| *name == k) {
            format!("unknown field: not a {what} field; {h}")
        } else if let Some(s) = did_you_mean(k, known) {
            format!("unknown field: not a {what} field; did you mean {base}.{s}?")
        } else {
            format!("unknown field: not a {what} field")
        };
        f.push(Code::UnknownField, format!("{base}.{k}"), msg);
    }
}

fn check_mesh_config(f: &mut Findings, base: &str, text: &str) {
    let mesh: Value = match serde_yaml::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            f.push(
                Code::YamlSyntax,
                base,
                format!("the MeshConfig is not YAML: {e}"),
            );
            return;
        }
    };
    if mesh.is_null() {
        return;
    }
    if !mesh.is_mapping() {
        f.push(Code::InvalidType, base, "the MeshConfig must be a mapping");
        return;
    }
    unknown_keys(f, base, &mesh, MESH_CONFIG_FIELDS, "MeshConfig", &[]);
    if let Some(dc) = mesh.get("defaultConfig") {
        let dp = format!("{base}.defaultConfig");
        unknown_keys(
            f,
            &dp,
            dc,
            PROXY_CONFIG_FIELDS,
            "ProxyConfig",
            &[(
                "proxyResources",
                "proxy resources are set at install time (values.global.proxy.resources) or per pod with the sidecar.istio.io/proxyCPU and proxyMemory annotations",
            )],
        );
        if let Some(psm) = dc.get("proxyStatsMatcher") {
            let pp = format!("{dp}.proxyStatsMatcher");
            unknown_keys(
                f,
                &pp,
                psm,
                PROXY_STATS_MATCHER_FIELDS,
                "ProxyStatsMatcher",
                &[
                    ("exclusionRegexps", "ProxyStatsMatcher has only inclusion lists (inclusionPrefixes, inclusionSuffixes, inclusionRegexps); there is no exclusion"),
                    ("exclusionPrefixes", "ProxyStatsMatcher has only inclusion lists (inclusionPrefixes, inclusionSuffixes, inclusionRegexps); there is no exclusion"),
                    ("exclusionSuffixes", "ProxyStatsMatcher has only inclusion lists (inclusionPrefixes, inclusionSuffixes, inclusionRegexps); there is no exclusion"),
                ],
            );
            if let Some(Value::Sequence(rs)) = psm.get("inclusionRegexps") {
                for (i, r) in rs.iter().enumerate() {
                    match r.as_str() {
                        Some(r) => check_regex(f, &format!("{pp}.inclusionRegexps[{i}]"), r),
                        None => f.push(
                            Code::InvalidType,
                            format!("{pp}.inclusionRegexps[{i}]"),
                            "wrong type: expected a string",
                        ),
                    }
                }
            }
        }
    }
    let providers = providers_of(&mesh);
    if let Some(Value::Sequence(list)) = mesh.get("extensionProviders") {
        let all: Vec<&str> = TRACING_PROVIDERS
            .iter()
            .chain(ACCESS_LOG_PROVIDERS)
            .chain(METRICS_PROVIDERS)
            .chain(AUTHZ_PROVIDERS)
            .copied()
            .collect();
        for (i, p) in list.iter().enumerate() {
            let pp = format!("{base}.extensionProviders[{i}]");
            let Some(m) = p.as_mapping() else {
                f.push(Code::InvalidType, pp, "wrong type: expected a mapping");
                continue;
            };
            if m.get("name").and_then(Value::as_str).is_none() {
                f.push(Code::MissingField, format!("{pp}.name"), "required");
            }
            let types: Vec<&str> = m
                .keys()
                .filter_map(Value::as_str)
                .filter(|k| *k != "name")
                .collect();
            if types.len() != 1 {
                f.push(
                    Code::ConflictingFields,
                    &pp,
                    format!(
                        "exactly one provider type is required (found {})",
                        types.len()
                    ),
                );
            }
            for t in types {
                if !all.contains(&t) {
                    f.push(
                        Code::UnknownField,
                        format!("{pp}.{t}"),
                        "unknown field: not an extension provider type",
                    );
                }
            }
        }
    }
    if let Some(dp) = mesh.get("defaultProviders") {
        let dpp = format!("{base}.defaultProviders");
        unknown_keys(
            f,
            &dpp,
            dp,
            &["tracing", "metrics", "accessLogging"],
            "DefaultProviders",
            &[],
        );
        for section in ["tracing", "metrics", "accessLogging"] {
            let Some(Value::Sequence(names)) = dp.get(section) else {
                continue;
            };
            for (i, n) in names.iter().enumerate() {
                let Some(n) = n.as_str() else { continue };
                let path = format!("{dpp}.{section}[{i}]");
                check_provider_ref(f, &path, section, n, &providers);
            }
        }
    }
}

/// Checks that provider `name`, used for `section`, is defined and of a
/// type that serves that section.
pub(crate) fn check_provider_ref(
    f: &mut Findings,
    path: &str,
    section: &str,
    name: &str,
    providers: &BTreeMap<String, String>,
) {
    let ty = providers.get(name).map(String::as_str).or_else(|| {
        BUILTIN_PROVIDERS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| *t)
    });
    match ty {
        None => f.push(
            Code::ReferencedProviderInvalid,
            path,
            format!("provider {name:?} is not defined in the MeshConfig's extensionProviders"),
        ),
        Some(t) if !provider_serves(t, section) => f.push(
            Code::ReferencedProviderInvalid,
            path,
            format!("provider {name:?} has type {t}, which does not serve {section}"),
        ),
        _ => {}
    }
}

#[cfg(test)]
mod tests;
