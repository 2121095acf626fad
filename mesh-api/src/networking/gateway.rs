//! `Gateway`: servers, their ports, hosts and TLS.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_yaml::Value;

use super::common::{check_ns_host, Port, PROTOCOLS};
use crate::diag::{Code, Findings};
use crate::util::{join, not_implemented};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewaySpec {
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    #[serde(default)]
    pub servers: Vec<Server>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Server {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Port>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerTlsSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_redirect: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ServerTlsMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_certificate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_crl: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_name: Option<String>,
    #[serde(default)]
    pub credential_names: Vec<String>,
    #[serde(default)]
    pub tls_certificates: Vec<Value>,
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    #[serde(default)]
    pub verify_certificate_spki: Vec<String>,
    #[serde(default)]
    pub verify_certificate_hash: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_protocol_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_protocol_version: Option<String>,
    #[serde(default)]
    pub cipher_suites: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerTlsMode {
    Passthrough,
    Simple,
    Mutual,
    AutoPassthrough,
    IstioMutual,
    OptionalMutual,
}

/// Server protocols the gateway role serves (upper case).
const GATEWAY_PROTOCOLS: &[&str] = &["HTTP", "HTTP2", "GRPC", "HTTPS"];

impl ServerTlsMode {
    /// As written in YAML.
    pub fn name(self) -> &'static str {
        match self {
            ServerTlsMode::Passthrough => "PASSTHROUGH",
            ServerTlsMode::Simple => "SIMPLE",
            ServerTlsMode::Mutual => "MUTUAL",
            ServerTlsMode::AutoPassthrough => "AUTO_PASSTHROUGH",
            ServerTlsMode::IstioMutual => "ISTIO_MUTUAL",
            ServerTlsMode::OptionalMutual => "OPTIONAL_MUTUAL",
        }
    }
}

impl GatewaySpec {
    /// Served by the waypoint binary's ingress gateway role: HTTP, HTTP2,
    /// GRPC and HTTPS servers, TLS mode SIMPLE (credentialName, or
    /// serverCertificate + privateKey), httpsRedirect. What that role does
    /// not serve is named at its field.
    pub fn validate(&self, f: &mut Findings) {
        if self.servers.is_empty() {
            f.push(
                Code::MissingField,
                "spec.servers",
                "at least one server is required",
            );
        }
        for (i, s) in self.servers.iter().enumerate() {
            let sp = format!("spec.servers[{i}]");
            match &s.port {
                Some(p) => p.validate(f, &join(&sp, "port"), true),
                None => f.push(Code::MissingField, join(&sp, "port"), "required"),
            }
            if s.hosts.is_empty() {
                f.push(
                    Code::MissingField,
                    join(&sp, "hosts"),
                    "at least one host is required",
                );
            }
            for (j, h) in s.hosts.iter().enumerate() {
                check_ns_host(f, &format!("{sp}.hosts[{j}]"), h);
            }
            let proto = s
                .port
                .as_ref()
                .and_then(|p| p.protocol.as_deref())
                .map(str::to_ascii_uppercase);
            if let Some(p) = proto.as_deref() {
                // An unknown protocol is Port::validate's error already.
                if PROTOCOLS.contains(&p) && !GATEWAY_PROTOCOLS.contains(&p) {
                    f.push(
                        Code::NotImplemented,
                        format!("{sp}.port.protocol"),
                        format!("{p} servers are not implemented by Ambit's gateway (HTTP, HTTP2, GRPC and HTTPS are); this server is not served"),
                    );
                }
            }
            if s.bind.is_some() {
                not_implemented(f, &join(&sp, "bind"), "binding a server to an address");
            }
            if s.default_endpoint.is_some() {
                not_implemented(f, &join(&sp, "defaultEndpoint"), "defaultEndpoint");
            }
            let needs_tls = matches!(proto.as_deref(), Some("HTTPS") | Some("TLS"));
            match &s.tls {
                None if needs_tls => f.push(
                    Code::MissingField,
                    join(&sp, "tls"),
                    "required for HTTPS and TLS servers",
                ),
                Some(tls) => {
                    let tp = join(&sp, "tls");
                    if needs_tls
                        && matches!(
                            tls.mode,
                            Some(ServerTlsMode::Simple) | Some(ServerTlsMode::Mutual)
                        )
                        && tls.credential_name.is_none()
                        && tls.credential_names.is_empty()
                        && tls.tls_certificates.is_empty()
                        && (tls.server_certificate.is_none() || tls.private_key.is_none())
                    {
                        f.push(
                            Code::MissingField,
                            join(&tp, "credentialName"),
                            "SIMPLE and MUTUAL need credentialName, or serverCertificate and privateKey",
                        );
                    }
                    if needs_tls && tls.mode.is_none() && tls.https_redirect != Some(true) {
                        f.push(
                            Code::MissingField,
                            join(&tp, "mode"),
                            "required for HTTPS and TLS servers",
                        );
                    }
                    // Only HTTPS servers are terminated; a TLS server was
                    // reported by its protocol already.
                    if proto.as_deref() == Some("HTTPS") {
                        if let Some(m) = tls.mode.filter(|m| *m != ServerTlsMode::Simple) {
                            f.push(
                                Code::NotImplemented,
                                join(&tp, "mode"),
                                format!("{} is not implemented by Ambit's gateway (only SIMPLE is); this server is not served", m.name()),
                            );
                        }
                    }
                    if !tls.credential_names.is_empty() {
                        not_implemented(
                            f,
                            &join(&tp, "credentialNames"),
                            "credentialNames (use credentialName)",
                        );
                    }
                    if !tls.tls_certificates.is_empty() {
                        not_implemented(
                            f,
                            &join(&tp, "tlsCertificates"),
                            "tlsCertificates (use credentialName, or serverCertificate and privateKey)",
                        );
                    }
                    for (field, set) in [
                        ("minProtocolVersion", tls.min_protocol_version.is_some()),
                        ("maxProtocolVersion", tls.max_protocol_version.is_some()),
                        ("cipherSuites", !tls.cipher_suites.is_empty()),
                    ] {
                        if set {
                            not_implemented(
                                f,
                                &join(&tp, field),
                                &format!("{field} (the gateway uses its TLS library's defaults)"),
                            );
                        }
                    }
                }
                None => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
