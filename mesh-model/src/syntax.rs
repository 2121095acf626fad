//! The syntax of the values inside resources: Kubernetes names and labels,
//! ports, CIDR blocks, principals. Each check reports into [`Problems`] with
//! the message the operator sees, the same from a file or from the
//! controller.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use mesh_authz::StrMatch;

use crate::problems::Problems;

const NAME_RULE: &str =
    "lower-case letters, digits and '-', starting and ending with a letter or digit";

pub(crate) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub(crate) fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

pub(crate) fn check_label_name(entry: &str, field: &str, s: &str, p: &mut Problems) {
    if !is_dns_label(s) {
        p.err(
            entry,
            field,
            format!("{s:?} is not a valid name (at most 63 {NAME_RULE})"),
        );
    }
}

pub(crate) fn check_subdomain_name(entry: &str, field: &str, s: &str, p: &mut Problems) {
    if !is_dns_subdomain(s) {
        p.err(
            entry,
            field,
            format!("{s:?} is not a valid name ({NAME_RULE}, '.' between parts)"),
        );
    }
}

pub(crate) fn check_labels(
    entry: &str,
    field: &str,
    labels: &BTreeMap<String, String>,
    p: &mut Problems,
) {
    for (k, v) in labels {
        let key_ok = !k.is_empty()
            && k.len() <= 317
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' || c == '/');
        if !key_ok {
            p.err(
                entry,
                format!("{field}.{k}"),
                format!("{k:?} is not a valid label key"),
            );
        }
        let val_ok = v.len() <= 63
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
        if !val_ok {
            p.err(
                entry,
                format!("{field}.{k}"),
                format!("{v:?} is not a valid label value"),
            );
        }
    }
}

/// A port written as text (`"8080"`).
pub(crate) fn parse_port(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u32>() {
        Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
        Ok(n) => Err(format!("{n} is out of range (1-65535)")),
        Err(_) => Err(format!("{s:?} is not a port number (1-65535)")),
    }
}

pub(crate) fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let t = s.trim();
    if t.contains('/') {
        t.parse::<IpNet>()
            .map_err(|_| format!("{s:?} is not a CIDR block (e.g. 10.0.0.0/16)"))
    } else {
        t.parse::<IpAddr>()
            .map(IpNet::from)
            .map_err(|_| format!("{s:?} is not an IP address or CIDR block"))
    }
}

pub(crate) fn parse_principal(s: &str) -> Result<StrMatch, String> {
    if s.starts_with("spiffe://") {
        return Err(format!(
            "{s:?}: principals are written without the spiffe:// scheme (e.g. cluster.local/ns/demo/sa/client)"
        ));
    }
    StrMatch::parse(s)
}

/// Validates each string of a list with `f`, reporting `field[i]`.
pub(crate) fn each<T>(
    entry: &str,
    field: &str,
    values: &[String],
    p: &mut Problems,
    f: impl Fn(&str) -> Result<T, String>,
) -> Vec<T> {
    let mut out = Vec::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
        if v.is_empty() {
            p.err(entry, format!("{field}[{i}]"), "empty value is not allowed");
            continue;
        }
        match f(v) {
            Ok(t) => out.push(t),
            Err(e) => p.err(entry, format!("{field}[{i}]"), e),
        }
    }
    out
}
