//! `DestinationRule`: subsets and traffic policies (load balancing,
//! connection pools, outlier detection, client TLS).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_yaml::Value;

use super::common::{check_export_to, PortSelector, ONE_MS};
use crate::diag::{Code, Findings, Severity};
use crate::meta::LabelsSelector;
use crate::util::{
    check_duration, check_host, check_label_name, check_percent, check_port, join, not_implemented,
};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationRuleSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
    #[serde(default)]
    pub subsets: Vec<Subset>,
    #[serde(default)]
    pub export_to: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<LabelsSelector>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTlsSettings>,
    #[serde(default)]
    pub port_level_settings: Vec<PortTrafficPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortTrafficPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTlsSettings>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancerSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simple: Option<SimpleLb>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent_hash: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality_lb_setting: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_duration_secs: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<Value>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SimpleLb {
    Unspecified,
    LeastConn,
    Random,
    Passthrough,
    RoundRobin,
    LeastRequest,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionPoolSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSettings>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connection_duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http1_max_pending_requests: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_max_requests: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_connection: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h2_upgrade_policy: Option<H2UpgradePolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_client_protocol: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_streams: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum H2UpgradePolicy {
    Default,
    DoNotUpgrade,
    Upgrade,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    /// Deprecated: Istio treats it as `consecutive5xxErrors`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_errors: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_5xx_errors: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_gateway_errors: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_local_origin_failures: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_external_local_origin_errors: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_health_percent: Option<i64>,
}

impl OutlierDetection {
    /// The effective `consecutive5xxErrors`: the deprecated
    /// `consecutiveErrors` counts when the new field is absent (as in Istio).
    pub fn effective_consecutive_5xx_errors(&self) -> Option<i64> {
        self.consecutive_5xx_errors.or(self.consecutive_errors)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientTlsSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ClientTlsMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_name: Option<String>,
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_crl: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClientTlsMode {
    Disable,
    Simple,
    Mutual,
    IstioMutual,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subset {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
}

impl DestinationRuleSpec {
    pub fn validate(&self, f: &mut Findings) {
        match &self.host {
            Some(h) if !h.is_empty() => check_host(f, "spec.host", h, true),
            _ => f.push(Code::MissingField, "spec.host", "required"),
        }
        if let Some(tp) = &self.traffic_policy {
            tp.validate(f, "spec.trafficPolicy");
        }
        let mut names = BTreeSet::new();
        for (i, s) in self.subsets.iter().enumerate() {
            let sp = format!("spec.subsets[{i}]");
            match &s.name {
                Some(n) => {
                    check_label_name(f, &join(&sp, "name"), n);
                    if !names.insert(n.as_str()) {
                        f.push(
                            Code::InvalidValue,
                            join(&sp, "name"),
                            format!("duplicate subset name {n:?}"),
                        );
                    }
                }
                None => f.push(Code::MissingField, join(&sp, "name"), "required"),
            }
            if let Some(tp) = &s.traffic_policy {
                tp.validate(f, &join(&sp, "trafficPolicy"));
            }
        }
        if self.workload_selector.is_some() {
            not_implemented(
                f,
                "spec.workloadSelector",
                "DestinationRule workloadSelector",
            );
        }
        check_export_to(f, "spec.exportTo", &self.export_to);
    }

    /// Subset names defined by this rule.
    pub fn subset_names(&self) -> impl Iterator<Item = &str> {
        self.subsets.iter().filter_map(|s| s.name.as_deref())
    }
}

impl TrafficPolicy {
    fn validate(&self, f: &mut Findings, p: &str) {
        validate_policy_parts(
            f,
            p,
            self.load_balancer.as_ref(),
            self.connection_pool.as_ref(),
            self.outlier_detection.as_ref(),
            self.tls.as_ref(),
        );
        for (i, pl) in self.port_level_settings.iter().enumerate() {
            let pp = format!("{p}.portLevelSettings[{i}]");
            match &pl.port {
                Some(PortSelector { number: Some(n) }) => {
                    check_port(f, &join(&pp, "port.number"), *n);
                }
                _ => f.push(Code::MissingField, join(&pp, "port.number"), "required"),
            }
            validate_policy_parts(
                f,
                &pp,
                pl.load_balancer.as_ref(),
                pl.connection_pool.as_ref(),
                pl.outlier_detection.as_ref(),
                pl.tls.as_ref(),
            );
        }
        if self.tunnel.is_some() {
            not_implemented(f, &join(p, "tunnel"), "tunnel settings");
        }
        if self.proxy_protocol.is_some() {
            not_implemented(f, &join(p, "proxyProtocol"), "PROXY protocol");
        }
    }
}

fn non_negative(f: &mut Findings, path: &str, v: Option<i64>) {
    if let Some(v) = v {
        if v < 0 {
            f.push(Code::InvalidValue, path, format!("{v} is negative"));
        }
    }
}

fn validate_policy_parts(
    f: &mut Findings,
    p: &str,
    lb: Option<&LoadBalancerSettings>,
    pool: Option<&ConnectionPoolSettings>,
    od: Option<&OutlierDetection>,
    tls: Option<&ClientTlsSettings>,
) {
    if let Some(lb) = lb {
        let lp = join(p, "loadBalancer");
        if lb.simple.is_some() && lb.consistent_hash.is_some() {
            f.push(
                Code::ConflictingFields,
                &lp,
                "set only one of simple, consistentHash",
            );
        }
        if lb.consistent_hash.is_some() {
            not_implemented(
                f,
                &join(&lp, "consistentHash"),
                "consistent-hash load balancing",
            );
        }
        if lb.locality_lb_setting.is_some() {
            not_implemented(
                f,
                &join(&lp, "localityLbSetting"),
                "locality load balancing",
            );
        }
        if lb.warmup_duration_secs.is_some() || lb.warmup.is_some() {
            check_duration(
                f,
                &join(&lp, "warmupDurationSecs"),
                lb.warmup_duration_secs.as_ref(),
                None,
            );
            not_implemented(f, &join(&lp, "warmupDurationSecs"), "slow-start warmup");
        }
    }
    if let Some(pool) = pool {
        let cp = join(p, "connectionPool");
        if let Some(tcp) = &pool.tcp {
            let tp = join(&cp, "tcp");
            non_negative(f, &join(&tp, "maxConnections"), tcp.max_connections);
            check_duration(
                f,
                &join(&tp, "connectTimeout"),
                tcp.connect_timeout.as_ref(),
                ONE_MS,
            );
            check_duration(
                f,
                &join(&tp, "maxConnectionDuration"),
                tcp.max_connection_duration.as_ref(),
                ONE_MS,
            );
            check_duration(
                f,
                &join(&tp, "idleTimeout"),
                tcp.idle_timeout.as_ref(),
                None,
            );
            if tcp.tcp_keepalive.is_some() {
                not_implemented(f, &join(&tp, "tcpKeepalive"), "TCP keepalive settings");
            }
        }
        if let Some(http) = &pool.http {
            let hp = join(&cp, "http");
            non_negative(
                f,
                &join(&hp, "http1MaxPendingRequests"),
                http.http1_max_pending_requests,
            );
            non_negative(f, &join(&hp, "http2MaxRequests"), http.http2_max_requests);
            non_negative(
                f,
                &join(&hp, "maxRequestsPerConnection"),
                http.max_requests_per_connection,
            );
            non_negative(f, &join(&hp, "maxRetries"), http.max_retries);
            non_negative(
                f,
                &join(&hp, "maxConcurrentStreams"),
                http.max_concurrent_streams,
            );
            check_duration(
                f,
                &join(&hp, "idleTimeout"),
                http.idle_timeout.as_ref(),
                ONE_MS,
            );
            // h2UpgradePolicy: the waypoint follows the caller's protocol
            // (DEFAULT, DO_NOT_UPGRADE) or upgrades HTTP/1.1 (UPGRADE).
            if http.use_client_protocol.is_some() {
                not_implemented(f, &join(&hp, "useClientProtocol"), "useClientProtocol");
            }
        }
    }
    if let Some(od) = od {
        let op = join(p, "outlierDetection");
        if od.consecutive_errors.is_some() {
            let msg = if od.consecutive_5xx_errors.is_some() {
                "deprecated: use consecutive5xxErrors (both are set; consecutive5xxErrors wins and consecutiveErrors is ignored)"
            } else {
                "deprecated: use consecutive5xxErrors (it is accepted and treated as consecutive5xxErrors, as Istio does)"
            };
            f.push(Code::Deprecated, join(&op, "consecutiveErrors"), msg);
        }
        non_negative(f, &join(&op, "consecutiveErrors"), od.consecutive_errors);
        non_negative(
            f,
            &join(&op, "consecutive5xxErrors"),
            od.consecutive_5xx_errors,
        );
        non_negative(
            f,
            &join(&op, "consecutiveGatewayErrors"),
            od.consecutive_gateway_errors,
        );
        non_negative(
            f,
            &join(&op, "consecutiveLocalOriginFailures"),
            od.consecutive_local_origin_failures,
        );
        if od.split_external_local_origin_errors == Some(true) {
            not_implemented(
                f,
                &join(&op, "splitExternalLocalOriginErrors"),
                "separate counting of local-origin failures",
            );
        }
        check_duration(f, &join(&op, "interval"), od.interval.as_ref(), ONE_MS);
        check_duration(
            f,
            &join(&op, "baseEjectionTime"),
            od.base_ejection_time.as_ref(),
            ONE_MS,
        );
        if let Some(v) = od.max_ejection_percent {
            check_percent(f, &join(&op, "maxEjectionPercent"), v as f64);
        }
        if let Some(v) = od.min_health_percent {
            check_percent(f, &join(&op, "minHealthPercent"), v as f64);
        }
    }
    if let Some(tls) = tls {
        let tp = join(p, "tls");
        match tls.mode {
            Some(ClientTlsMode::Simple) | Some(ClientTlsMode::Mutual) => not_implemented(
                f,
                &join(&tp, "mode"),
                "TLS origination (SIMPLE/MUTUAL) to the destination",
            ),
            Some(ClientTlsMode::Disable) => f.push_with(
                Severity::Warning,
                Code::NotImplemented,
                join(&tp, "mode"),
                "DISABLE is not honoured: Ambit always carries mesh traffic over mutual TLS (HBONE)",
            ),
            _ => {}
        }
        if tls.mode == Some(ClientTlsMode::Mutual)
            && tls.credential_name.is_none()
            && (tls.client_certificate.is_none() || tls.private_key.is_none())
        {
            f.push(
                Code::MissingField,
                join(&tp, "credentialName"),
                "MUTUAL needs credentialName, or clientCertificate and privateKey",
            );
        }
    }
}

#[cfg(test)]
mod tests;
