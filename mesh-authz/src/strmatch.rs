//! Istio's value match and the positive/negative list rule every matcher uses.

/// Istio's string match: `*` alone (any non-empty value), `*suffix`,
/// `prefix*`, or exact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StrMatch {
    Any,
    Prefix(String),
    Suffix(String),
    Exact(String),
}

impl StrMatch {
    /// Parses Istio's wildcard syntax; a `*` anywhere but at one end is refused.
    pub fn parse(s: &str) -> Result<StrMatch, String> {
        if s.is_empty() {
            return Err("empty value is not allowed".into());
        }
        let m = StrMatch::lenient(s);
        let rest = match &m {
            StrMatch::Any => return Ok(m),
            StrMatch::Prefix(r) | StrMatch::Suffix(r) | StrMatch::Exact(r) => r,
        };
        if rest.contains('*') {
            return Err(format!(
                "{s:?}: a wildcard `*` is only allowed alone, at the start or at the end"
            ));
        }
        Ok(m)
    }

    /// Istio's wildcard syntax without refusing anything, for policies that
    /// were not validated (the waypoint's): a trailing `*` wins over a
    /// leading one, and a `*` elsewhere is a literal character.
    pub fn lenient(s: &str) -> StrMatch {
        if s == "*" {
            StrMatch::Any
        } else if let Some(p) = s.strip_suffix('*') {
            StrMatch::Prefix(p.to_string())
        } else if let Some(p) = s.strip_prefix('*') {
            StrMatch::Suffix(p.to_string())
        } else {
            StrMatch::Exact(s.to_string())
        }
    }

    pub fn matches(&self, v: &str) -> bool {
        match self {
            StrMatch::Any => !v.is_empty(),
            StrMatch::Prefix(p) => !v.is_empty() && v.starts_with(p.as_str()),
            StrMatch::Suffix(p) => !v.is_empty() && v.ends_with(p.as_str()),
            StrMatch::Exact(e) => v == e,
        }
    }
}

/// Positive list must contain a match (if not empty) and the negative list
/// must not (if not empty). Plaintext peers match no principal or namespace,
/// so a `not...` list with them matches (as in ztunnel).
pub(crate) fn pos_neg<T>(pos: &[T], neg: &[T], mut f: impl FnMut(&T) -> bool) -> bool {
    (pos.is_empty() || pos.iter().any(&mut f)) && (neg.is_empty() || !neg.iter().any(&mut f))
}
