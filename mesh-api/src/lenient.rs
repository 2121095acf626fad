//! A lenient serde pass: deserializes a YAML value into a typed spec and
//! reports every shape problem (not just the first) with its field path.

use serde::de::DeserializeOwned;
use serde_yaml::Value;

use crate::diag::{Code, Findings};
use crate::util::did_you_mean;

#[derive(Clone, Debug, PartialEq)]
enum Seg {
    Key(String),
    Index(usize),
}

fn path_string(base: &str, segs: &[Seg]) -> String {
    let mut s = base.to_string();
    for seg in segs {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

fn key_matches(k: &Value, want: &str) -> bool {
    match k {
        Value::String(s) => s == want,
        Value::Number(n) => n.to_string() == want,
        Value::Bool(b) => b.to_string() == want,
        _ => false,
    }
}

/// Removes the node at `segs`; false if it is not there.
fn remove_at(v: &mut Value, segs: &[Seg]) -> bool {
    let Some((last, parents)) = segs.split_last() else {
        return false;
    };
    let mut cur = v;
    for seg in parents {
        let next = match (seg, cur) {
            (Seg::Key(k), Value::Mapping(m)) => m
                .iter_mut()
                .find(|(mk, _)| key_matches(mk, k))
                .map(|(_, v)| v),
            (Seg::Index(i), Value::Sequence(s)) => s.get_mut(*i),
            _ => None,
        };
        match next {
            Some(n) => cur = n,
            None => return false,
        }
    }
    match (last, cur) {
        (Seg::Key(k), Value::Mapping(m)) => {
            let key = m.keys().find(|mk| key_matches(mk, k)).cloned();
            key.is_some_and(|key| m.remove(&key).is_some())
        }
        (Seg::Index(i), Value::Sequence(s)) if *i < s.len() => {
            s.remove(*i);
            true
        }
        _ => false,
    }
}

/// The names between backticks in a serde message.
fn backticked(msg: &str) -> Vec<&str> {
    msg.split('`').skip(1).step_by(2).collect()
}

fn pretty_expected(e: &str) -> String {
    let e = e.trim();
    match e {
        "i64" | "i32" | "u64" | "u32" | "u16" | "u8" | "usize" | "isize" => "an integer".into(),
        "f64" | "f32" => "a number".into(),
        "a sequence" => "a list".into(),
        "a map" => "a mapping".into(),
        "a boolean" | "a string" => e.into(),
        _ if e.starts_with("struct ") || e.starts_with("a map") => "a mapping".into(),
        _ if e.starts_with("enum ") => "one of the allowed values".into(),
        _ => e.into(),
    }
}

fn pretty_found(found: &str) -> String {
    let found = found.trim();
    if found == "map" {
        "a mapping".into()
    } else if found == "sequence" {
        "a list".into()
    } else if found == "unit value" {
        "null".into()
    } else if let Some(rest) = found.strip_prefix("string ") {
        format!("the string {rest}")
    } else if let Some((what, val)) = found.split_once(" `") {
        format!("the {what} {}", val.trim_end_matches('`'))
    } else {
        found.into()
    }
}

/// Deserializes `v` as `T`, reporting every shape problem: on each serde
/// error the offending field is recorded and removed, and the rest is
/// tried again. Unknown fields are reported with `UnknownField`.
pub(crate) fn deserialize_lenient<T: DeserializeOwned>(
    v: Value,
    base: &str,
    f: &mut Findings,
) -> Option<T> {
    let mut suppressed = Vec::new();
    deserialize_lenient_impl(v, base, f, Code::UnknownField, &mut suppressed)
}

/// As [`deserialize_lenient`], with the code to use for unknown fields.
pub(crate) fn deserialize_lenient_as<T: DeserializeOwned>(
    v: Value,
    base: &str,
    f: &mut Findings,
    unknown: Code,
) -> Option<T> {
    let mut suppressed = Vec::new();
    deserialize_lenient_impl(v, base, f, unknown, &mut suppressed)
}

pub(crate) fn deserialize_lenient_tracking<T: DeserializeOwned>(
    v: Value,
    base: &str,
    f: &mut Findings,
    suppressed: &mut Vec<String>,
) -> Option<T> {
    deserialize_lenient_impl(v, base, f, Code::UnknownField, suppressed)
}

/// Field names that operators write by mistake, with what to say.
const UNKNOWN_FIELD_HINTS: &[(&str, &str)] = &[(
    "dimensions",
    "`dimensions` is not a Telemetry field (it belongs to the old stats-filter config); use overrides[].tagOverrides to add or change metric labels",
)];

fn deserialize_lenient_impl<T: DeserializeOwned>(
    mut v: Value,
    base: &str,
    f: &mut Findings,
    unknown: Code,
    suppressed: &mut Vec<String>,
) -> Option<T> {
    const MAX_PROBLEMS: usize = 50;
    for _ in 0..MAX_PROBLEMS {
        let err = match serde_path_to_error::deserialize::<_, T>(v.clone()) {
            Ok(t) => return Some(t),
            Err(e) => e,
        };
        let mut segs: Vec<Seg> = err
            .path()
            .iter()
            .filter_map(|s| match s {
                serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
                serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
                _ => None,
            })
            .collect();
        let msg = err.inner().to_string();
        if msg.starts_with("unknown field `") {
            let names = backticked(&msg);
            let field = names.first().copied().unwrap_or("").to_string();
            let expected: Vec<&str> = names.iter().skip(1).copied().collect();
            if segs.last() != Some(&Seg::Key(field.clone())) {
                segs.push(Seg::Key(field.clone()));
            }
            let parent = path_string(base, &segs[..segs.len() - 1]);
            let text = if let Some((_, h)) = UNKNOWN_FIELD_HINTS.iter().find(|(n, _)| *n == field) {
                format!("unknown field; {h}")
            } else if let Some(s) = did_you_mean(&field, &expected) {
                let full = crate::util::join(&parent, s);
                suppressed.push(full.clone());
                format!("unknown field; did you mean {full}?")
            } else if expected.is_empty() {
                "unknown field".to_string()
            } else {
                format!("unknown field (expected one of: {})", expected.join(", "))
            };
            f.push(unknown, path_string(base, &segs), text);
        } else if msg.starts_with("unknown variant `") {
            let names = backticked(&msg);
            let value = names.first().copied().unwrap_or("");
            let expected: Vec<&str> = names.iter().skip(1).copied().collect();
            let hint = did_you_mean(value, &expected)
                .map(|s| format!("; did you mean {s}?"))
                .unwrap_or_default();
            f.push(
                Code::InvalidType,
                path_string(base, &segs),
                format!("{value:?} is not one of {}{hint}", expected.join(", ")),
            );
        } else if let Some(rest) = msg.strip_prefix("missing field `") {
            let field = rest.split('`').next().unwrap_or("");
            segs.push(Seg::Key(field.to_string()));
            f.push(Code::MissingField, path_string(base, &segs), "required");
            return None;
        } else if let Some(rest) = msg.strip_prefix("invalid type: ") {
            let text = match rest.rsplit_once(", expected ") {
                Some((found, exp)) => format!(
                    "wrong type: expected {}, found {}",
                    pretty_expected(exp),
                    pretty_found(found)
                ),
                None => format!("wrong type: {rest}"),
            };
            f.push(Code::InvalidType, path_string(base, &segs), text);
        } else if let Some(rest) = msg.strip_prefix("invalid value: ") {
            let text = match rest.rsplit_once(", expected ") {
                Some((found, exp)) => format!(
                    "invalid value: expected {}, found {}",
                    pretty_expected(exp),
                    pretty_found(found)
                ),
                None => format!("invalid value: {rest}"),
            };
            f.push(Code::InvalidType, path_string(base, &segs), text);
        } else {
            f.push(Code::InvalidType, path_string(base, &segs), msg);
        }
        if !remove_at(&mut v, &segs) {
            return None;
        }
    }
    f.push(
        Code::InvalidType,
        base,
        format!("more than {MAX_PROBLEMS} problems; the rest is not checked"),
    );
    None
}
