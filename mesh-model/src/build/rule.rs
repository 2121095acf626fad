//! One AuthorizationPolicy rule: sources, operations and conditions, and
//! which HTTP attributes it uses (the node proxy sees L4 only).

use mesh_authz::{Condition, OperationMatch, Rule, SourceMatch, StrMatch};
use mesh_proto::ambit::v1 as pb;

use crate::problems::Problems;
use crate::syntax::{
    each, is_dns_label, is_dns_subdomain, parse_cidr, parse_port, parse_principal,
};

fn service_account_match(
    policy_ns: &str,
) -> impl Fn(&str) -> Result<(String, String), String> + '_ {
    move |s: &str| {
        if s.contains('*') {
            return Err(format!(
                "{s:?}: wildcards are not allowed in serviceAccounts"
            ));
        }
        let (ns, sa) = match s.split_once('/') {
            Some((ns, sa)) => (ns, sa),
            None => (policy_ns, s),
        };
        if !is_dns_label(ns) || !is_dns_subdomain(sa) {
            return Err(format!(
                "{s:?} is not a service account (\"<namespace>/<name>\" or \"<name>\")"
            ));
        }
        Ok((ns.to_string(), sa.to_string()))
    }
}

fn compile_source(
    entry: &str,
    fp: &str,
    s: &pb::Source,
    policy_ns: &str,
    http: &mut Vec<String>,
    p: &mut Problems,
) -> Option<SourceMatch> {
    if s == &pb::Source::default() {
        p.err(entry, fp, "must not be empty");
        return None;
    }
    if !s.service_accounts.is_empty() && (!s.principals.is_empty() || !s.not_principals.is_empty())
    {
        p.err(
            entry,
            format!("{fp}.serviceAccounts"),
            "cannot be combined with principals or notPrincipals",
        );
    }
    note(
        &[
            ("requestPrincipals", !s.request_principals.is_empty()),
            ("notRequestPrincipals", !s.not_request_principals.is_empty()),
        ],
        http,
    );
    each(
        entry,
        &format!("{fp}.requestPrincipals"),
        &s.request_principals,
        p,
        StrMatch::parse,
    );
    each(
        entry,
        &format!("{fp}.notRequestPrincipals"),
        &s.not_request_principals,
        p,
        StrMatch::parse,
    );
    Some(SourceMatch {
        principals: each(
            entry,
            &format!("{fp}.principals"),
            &s.principals,
            p,
            parse_principal,
        ),
        not_principals: each(
            entry,
            &format!("{fp}.notPrincipals"),
            &s.not_principals,
            p,
            parse_principal,
        ),
        namespaces: each(
            entry,
            &format!("{fp}.namespaces"),
            &s.namespaces,
            p,
            StrMatch::parse,
        ),
        not_namespaces: each(
            entry,
            &format!("{fp}.notNamespaces"),
            &s.not_namespaces,
            p,
            StrMatch::parse,
        ),
        service_accounts: each(
            entry,
            &format!("{fp}.serviceAccounts"),
            &s.service_accounts,
            p,
            service_account_match(policy_ns),
        ),
        not_service_accounts: each(
            entry,
            &format!("{fp}.notServiceAccounts"),
            &s.not_service_accounts,
            p,
            service_account_match(policy_ns),
        ),
        ip_blocks: each(
            entry,
            &format!("{fp}.ipBlocks"),
            &s.ip_blocks,
            p,
            parse_cidr,
        ),
        not_ip_blocks: each(
            entry,
            &format!("{fp}.notIpBlocks"),
            &s.not_ip_blocks,
            p,
            parse_cidr,
        ),
        remote_ip_blocks: each(
            entry,
            &format!("{fp}.remoteIpBlocks"),
            &s.remote_ip_blocks,
            p,
            parse_cidr,
        ),
        not_remote_ip_blocks: each(
            entry,
            &format!("{fp}.notRemoteIpBlocks"),
            &s.not_remote_ip_blocks,
            p,
            parse_cidr,
        ),
    })
}

fn compile_operation(
    entry: &str,
    tp: &str,
    o: &pb::Operation,
    http: &mut Vec<String>,
    p: &mut Problems,
) -> Option<OperationMatch> {
    if o == &pb::Operation::default() {
        p.err(entry, tp, "must not be empty");
        return None;
    }
    note(
        &[
            ("hosts", !o.hosts.is_empty()),
            ("notHosts", !o.not_hosts.is_empty()),
            ("methods", !o.methods.is_empty()),
            ("notMethods", !o.not_methods.is_empty()),
            ("paths", !o.paths.is_empty()),
            ("notPaths", !o.not_paths.is_empty()),
        ],
        http,
    );
    for (field, list) in [
        ("hosts", &o.hosts),
        ("notHosts", &o.not_hosts),
        ("methods", &o.methods),
        ("notMethods", &o.not_methods),
        ("paths", &o.paths),
        ("notPaths", &o.not_paths),
    ] {
        each(entry, &format!("{tp}.{field}"), list, p, |_| Ok(()));
    }
    Some(OperationMatch {
        ports: each(entry, &format!("{tp}.ports"), &o.ports, p, parse_port),
        not_ports: each(
            entry,
            &format!("{tp}.notPorts"),
            &o.not_ports,
            p,
            parse_port,
        ),
    })
}

fn compile_condition(
    entry: &str,
    cp: &str,
    c: &pb::Condition,
    http: &mut Vec<String>,
    p: &mut Problems,
) -> Option<Condition> {
    if c.key.is_empty() {
        p.err(entry, format!("{cp}.key"), "must not be empty");
        return None;
    }
    if c.values.is_empty() && c.not_values.is_empty() {
        p.err(
            entry,
            cp,
            format!(
                "at least one of values or notValues must be set for key {:?}",
                c.key
            ),
        );
        return None;
    }
    let vp = format!("{cp}.values");
    let np = format!("{cp}.notValues");
    let key = c.key.as_str();
    let cond = match key {
        "source.ip" | "remote.ip" => Condition::SourceIp {
            values: each(entry, &vp, &c.values, p, parse_cidr),
            not: each(entry, &np, &c.not_values, p, parse_cidr),
        },
        "destination.ip" => Condition::DestinationIp {
            values: each(entry, &vp, &c.values, p, parse_cidr),
            not: each(entry, &np, &c.not_values, p, parse_cidr),
        },
        "destination.port" => Condition::DestinationPort {
            values: each(entry, &vp, &c.values, p, parse_port),
            not: each(entry, &np, &c.not_values, p, parse_port),
        },
        "source.namespace" => Condition::SourceNamespace {
            values: each(entry, &vp, &c.values, p, StrMatch::parse),
            not: each(entry, &np, &c.not_values, p, StrMatch::parse),
        },
        "source.principal" => Condition::SourcePrincipal {
            values: each(entry, &vp, &c.values, p, parse_principal),
            not: each(entry, &np, &c.not_values, p, parse_principal),
        },
        _ if mesh_policy::node_rules::is_http_condition_key(key) => {
            each(entry, &vp, &c.values, p, |_| Ok(()));
            each(entry, &np, &c.not_values, p, |_| Ok(()));
            note(&[(key, true)], http);
            Condition::NotL4
        }
        _ => {
            p.err(
                entry,
                format!("{cp}.key"),
                format!(
                    "unknown attribute {key:?} (L4: source.ip, remote.ip, source.namespace, source.principal, destination.ip, destination.port; HTTP: request.headers[..], request.auth.*, connection.sni, experimental.envoy.filters.*)"
                ),
            );
            return None;
        }
    };
    Some(cond)
}

pub(super) fn compile_rule(
    entry: &str,
    path: &str,
    r: &pb::Rule,
    policy_ns: &str,
    p: &mut Problems,
) -> Rule {
    let mut http: Vec<String> = Vec::new();

    let from = r.has_from.then(|| {
        if r.from.is_empty() {
            p.err(
                entry,
                format!("{path}.from"),
                "must not be empty (omit it to match any source)",
            );
        }
        let mut out = Vec::new();
        for (k, f) in r.from.iter().enumerate() {
            let fp = format!("{path}.from[{k}].source");
            let Some(s) = &f.source else {
                p.err(entry, fp, "must be set");
                continue;
            };
            out.extend(compile_source(entry, &fp, s, policy_ns, &mut http, p));
        }
        out
    });

    let to = r.has_to.then(|| {
        if r.to.is_empty() {
            p.err(
                entry,
                format!("{path}.to"),
                "must not be empty (omit it to match any operation)",
            );
        }
        let mut out = Vec::new();
        for (k, t) in r.to.iter().enumerate() {
            let tp = format!("{path}.to[{k}].operation");
            let Some(o) = &t.operation else {
                p.err(entry, tp, "must be set");
                continue;
            };
            out.extend(compile_operation(entry, &tp, o, &mut http, p));
        }
        out
    });

    let mut when = Vec::new();
    for (k, c) in r.when.iter().enumerate() {
        let cp = format!("{path}.when[{k}]");
        when.extend(compile_condition(entry, &cp, c, &mut http, p));
    }

    Rule {
        from,
        to,
        when,
        http_attributes: http,
    }
}

/// Records the HTTP attributes present in a rule (once each).
fn note(names: &[(&str, bool)], http: &mut Vec<String>) {
    for (n, present) in names {
        if *present && !http.iter().any(|h| h == n) {
            http.push(n.to_string());
        }
    }
}
