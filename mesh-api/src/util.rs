//! Small value parsers and checks shared by the kinds: durations,
//! percentages, ports, regexes, host names, did-you-mean.

use std::time::Duration;

use crate::diag::{Code, Findings};

/// Parses a duration as Istio accepts it (Go `time.ParseDuration` syntax,
/// which is what the CRDs' `duration()` check uses): one or more
/// `<number><unit>` with units `h`, `m`, `s`, `ms`, `us`/`µs`, `ns`, e.g.
/// `1s`, `3m`, `0.5s`, `10ms`, `1h30m`. Negative durations are refused.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let bad = || format!("{s:?} is not a duration (write a number and a unit: 10ms, 0.5s, 3m, 1h)");
    if t.is_empty() {
        return Err(bad());
    }
    if t.starts_with('-') {
        return Err(format!("{s:?}: a duration must not be negative"));
    }
    let t = t.strip_prefix('+').unwrap_or(t);
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total: f64 = 0.0;
    let mut rest = t;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let num: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let secs = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" | "μs" => 1e-6,
            "ns" => 1e-9,
            _ => return Err(bad()),
        };
        total += num * secs;
    }
    if !total.is_finite() || total > 1e12 {
        return Err(format!("{s:?} is too long"));
    }
    Ok(Duration::from_secs_f64(total))
}

/// Checks an optional duration field; `min` is the smallest accepted value.
pub(crate) fn check_duration(
    f: &mut Findings,
    path: &str,
    value: Option<&String>,
    min: Option<Duration>,
) -> Option<Duration> {
    let v = value?;
    match parse_duration(v) {
        Ok(d) => {
            if let Some(min) = min {
                if d < min {
                    f.push(
                        Code::InvalidDuration,
                        path,
                        format!("{v:?} is shorter than the minimum {min:?}"),
                    );
                }
            }
            Some(d)
        }
        Err(e) => {
            f.push(Code::InvalidDuration, path, e);
            None
        }
    }
}

pub(crate) fn check_percent(f: &mut Findings, path: &str, value: f64) {
    if !(0.0..=100.0).contains(&value) || value.is_nan() {
        f.push(
            Code::InvalidPercentage,
            path,
            format!("{value} is not a percentage (0-100)"),
        );
    }
}

pub(crate) fn check_port(f: &mut Findings, path: &str, value: i64) -> bool {
    if (1..=65535).contains(&value) {
        true
    } else {
        f.push(
            Code::InvalidPort,
            path,
            format!("{value} is not a port number (1-65535)"),
        );
        false
    }
}

/// A port given as text (`"8080"`) or a range (`"8000-8080"`, AuthorizationPolicy).
pub(crate) fn check_port_text(f: &mut Findings, path: &str, value: &str, allow_range: bool) {
    let one = |s: &str| {
        s.trim()
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=65535).contains(n))
    };
    if allow_range {
        if let Some((a, b)) = value.split_once('-') {
            match (one(a), one(b)) {
                (Some(a), Some(b)) if a <= b => return,
                (Some(_), Some(_)) => {
                    f.push(
                        Code::InvalidPort,
                        path,
                        format!("{value:?}: the range's start is after its end"),
                    );
                    return;
                }
                _ => {}
            }
            f.push(
                Code::InvalidPort,
                path,
                format!("{value:?} is not a port range (e.g. 8000-8080, ports 1-65535)"),
            );
            return;
        }
    }
    if one(value).is_none() {
        f.push(
            Code::InvalidPort,
            path,
            format!("{value:?} is not a port number (1-65535)"),
        );
    }
}

pub(crate) fn check_regex(f: &mut Findings, path: &str, value: &str) {
    if let Err(e) = regex::Regex::new(value) {
        let detail = e.to_string();
        let last = detail.lines().last().unwrap_or("").trim().to_string();
        f.push(
            Code::InvalidRegex,
            path,
            format!("{value:?} does not compile: {last}"),
        );
    }
}

const NAME_RULE: &str =
    "lower-case letters, digits and '-', starting and ending with a letter or digit";

pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

pub(crate) fn check_subdomain_name(f: &mut Findings, path: &str, s: &str) {
    if !is_dns_subdomain(s) {
        f.push(
            Code::InvalidObjectMeta,
            path,
            format!("{s:?} is not a valid name ({NAME_RULE}, '.' between parts)"),
        );
    }
}

pub(crate) fn check_label_name(f: &mut Findings, path: &str, s: &str) {
    if !is_dns_label(s) {
        f.push(
            Code::InvalidObjectMeta,
            path,
            format!("{s:?} is not a valid name (at most 63 {NAME_RULE})"),
        );
    }
}

/// A host as VirtualService/DestinationRule/ServiceEntry write it: a DNS
/// name, optionally with a leading `*.` wildcard, or `*`. (Istio also
/// accepts `ns/host` in some places; callers handle that.)
pub(crate) fn check_host(f: &mut Findings, path: &str, host: &str, allow_wildcard: bool) {
    if host == "*" {
        if !allow_wildcard {
            f.push(Code::InvalidValue, path, "\"*\" is not allowed here");
        }
        return;
    }
    let name = match host.strip_prefix("*.") {
        Some(rest) if allow_wildcard => rest,
        Some(_) => {
            f.push(
                Code::InvalidValue,
                path,
                format!("{host:?}: wildcards are not allowed here"),
            );
            return;
        }
        None => host,
    };
    if host.parse::<std::net::IpAddr>().is_ok() {
        return;
    }
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if !ok {
        f.push(
            Code::InvalidValue,
            path,
            format!("{host:?} is not a valid host name"),
        );
    }
}

/// Checks an IP address or CIDR block (`10.0.0.0/16`, `2001:db8::/32`).
pub(crate) fn check_cidr(f: &mut Findings, path: &str, s: &str) {
    let t = s.trim();
    let ok = match t.split_once('/') {
        Some((ip, len)) => match (ip.parse::<std::net::IpAddr>(), len.parse::<u8>()) {
            (Ok(std::net::IpAddr::V4(_)), Ok(l)) => l <= 32,
            (Ok(std::net::IpAddr::V6(_)), Ok(l)) => l <= 128,
            _ => false,
        },
        None => t.parse::<std::net::IpAddr>().is_ok(),
    };
    if !ok {
        f.push(
            Code::InvalidValue,
            path,
            format!("{s:?} is not an IP address or CIDR block (e.g. 10.0.0.0/16)"),
        );
    }
}

/// Levenshtein distance, ignoring ASCII case: `Mode` and `mode` are the
/// same word, `hosts` is one edit from `host`.
fn edit_distance(a: &str, b: &str) -> usize {
    strsim::levenshtein(&a.to_ascii_lowercase(), &b.to_ascii_lowercase())
}

/// The closest of `candidates` to `word`, if it is close enough to be a
/// likely typo (or differs only in case or plural).
pub fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let mut best: Option<(&str, usize)> = None;
    for c in candidates {
        let d = edit_distance(word, c);
        if best.is_none_or(|(_, bd)| d < bd) {
            best = Some((c, d));
        }
    }
    let (c, d) = best?;
    let limit = match word.chars().count() {
        0..=3 => 1,
        4..=7 => 2,
        _ => 3,
    };
    (d <= limit).then_some(c)
}

/// Whether `name` is an HTTP header name (an RFC 9110 token).
pub fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Reports a field Ambit accepts but does not implement.
pub(crate) fn not_implemented(f: &mut Findings, path: &str, what: &str) {
    f.push(
        Code::NotImplemented,
        path,
        format!("{what} is not implemented by Ambit; the field is accepted and ignored"),
    );
}

/// Joins a field path: `join("spec", "hosts")` is `spec.hosts`.
pub(crate) fn join(base: &str, field: &str) -> String {
    if base.is_empty() {
        field.to_string()
    } else {
        format!("{base}.{field}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_duration("3m").unwrap(), Duration::from_secs(180));
        assert_eq!(parse_duration("0.5s").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10ms").unwrap(), Duration::from_millis(10));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        for bad in ["", "10", "s", "1x", "-1s", "1.2.3s", "ms10"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn suggestions() {
        assert_eq!(did_you_mean("host", &["hosts", "gateways"]), Some("hosts"));
        assert_eq!(
            did_you_mean("consecutiveErrors", &["consecutive5xxErrors", "interval"]),
            Some("consecutive5xxErrors")
        );
        assert_eq!(
            did_you_mean("dimensions", &["providers", "overrides"]),
            None
        );
    }

    #[test]
    fn edit_distance_ignores_ascii_case() {
        assert_eq!(edit_distance("PERMISSIVE", "permissive"), 0);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn ports_and_cidrs() {
        let mut f = Findings::default();
        check_port_text(&mut f, "p", "8080", false);
        check_port_text(&mut f, "p", "8000-8080", true);
        assert!(f.items.is_empty());
        check_port_text(&mut f, "p", "0", false);
        check_port_text(&mut f, "p", "9000-8000", true);
        check_cidr(&mut f, "c", "10.0.0.0/33");
        assert_eq!(f.items.len(), 3);
    }
}
