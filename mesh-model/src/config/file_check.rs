//! What the file can say and the mesh-proto messages cannot carry: a
//! negative port (or one beyond `u32`), `targetPort: 0`, an optional string
//! written empty, a policy without `metadata.namespace`. (What a policy
//! may say is mesh-policy's to check, in [`super::shape`].)
//! Checked here, before the conversion loses them; everything else is the
//! builder's ([`crate::build`]). [`merge`] puts both findings in file order.

use crate::build::policy_entry_name;
use crate::problems::{Invalid, Problems};
use crate::state::ProxyState;
use crate::syntax::{check_label_name, check_subdomain_name};

use super::types::LocalConfig;
use super::ConfigError;

/// A port written as a number.
fn check_port_number(n: i64) -> Result<u16, String> {
    u16::try_from(n)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{n} is out of range (1-65535)"))
}

pub(super) fn check(cfg: &LocalConfig, p: &mut Problems) {
    for (i, w) in cfg.workloads.iter().enumerate() {
        let entry = format!("workloads[{i}] ({}/{})", w.namespace, w.name);
        if w.service_account.as_deref() == Some("") {
            check_subdomain_name(&entry, "serviceAccount", "", p);
        }
        if w.netns.as_deref() == Some("") {
            p.err(
                &entry,
                "netns",
                format!("{:?} must be an absolute path", ""),
            );
        }
    }
    for (i, s) in cfg.services.iter().enumerate() {
        let entry = format!("services[{i}] ({}/{})", s.namespace, s.name);
        for (k, sp) in s.ports.iter().enumerate() {
            if u32::try_from(sp.port).is_err() {
                if let Err(e) = check_port_number(sp.port) {
                    p.err(&entry, format!("ports[{k}].port"), e);
                }
            }
            if let Some(t) = sp.target_port {
                if t == 0 || u32::try_from(t).is_err() {
                    if let Err(e) = check_port_number(t) {
                        p.err(&entry, format!("ports[{k}].targetPort"), e);
                    }
                }
            }
            if sp.name.as_deref() == Some("") {
                check_label_name(&entry, &format!("ports[{k}].name"), "", p);
            }
            if sp.protocol.as_deref() == Some("") {
                p.err(
                    &entry,
                    format!("ports[{k}].protocol"),
                    format!("{:?} is not one of TCP, UDP, SCTP", ""),
                );
            }
        }
    }
    for (i, pol) in cfg.policies.iter().enumerate() {
        let meta = pol.metadata();
        if meta.namespace.as_deref().is_none_or(str::is_empty) {
            let entry = policy_entry_name(i, pol.kind(), pol.namespace(), pol.name());
            p.warn(
                &entry,
                "metadata.namespace is not set: using \"default\", as kubectl would",
            );
        }
    }
}

/// The place of an entry in the file (`services[2] ...` -> (services, 2)),
/// to interleave this module's findings with the builder's, which come in
/// file order.
fn position(entry: &str) -> (usize, usize) {
    const SECTIONS: [&str; 6] = [
        "top level",
        "namespaces",
        "certificates",
        "workloads",
        "services",
        "policies",
    ];
    let Some(section) = SECTIONS.iter().position(|s| entry.starts_with(s)) else {
        return (SECTIONS.len(), 0);
    };
    let index = entry[SECTIONS[section].len()..]
        .strip_prefix('[')
        .and_then(|r| r.split(']').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    (section, index)
}

/// This module's findings (`file`) with the builder's result. Where both
/// name the same field, the file's reason wins: the builder saw the value
/// only as the conversion left it (a negative port as `0`). The file's
/// warnings come first within an entry (`metadata.namespace is not set`
/// explains the others).
pub(super) fn merge(
    file: Problems,
    built: Result<ProxyState, Invalid>,
) -> Result<ProxyState, ConfigError> {
    match built {
        Ok(mut state) if file.errors.is_empty() => {
            let mut warnings = file.warnings;
            warnings.append(&mut state.warnings);
            warnings.sort_by_key(|w| position(w));
            state.warnings = warnings;
            Ok(state)
        }
        built => {
            let mut errors = built.err().map(|e| e.0).unwrap_or_default();
            let mut extra = Vec::new();
            for e in file.errors {
                match errors
                    .iter_mut()
                    .find(|b| b.entry == e.entry && b.field == e.field)
                {
                    Some(b) => *b = e,
                    None => extra.push(e),
                }
            }
            // Within an entry: the builder's first (the fields it checks
            // come first in the file's entries), then the file's own.
            errors.append(&mut extra);
            errors.sort_by_key(|e| position(&e.entry));
            Err(ConfigError::Invalid(errors))
        }
    }
}
