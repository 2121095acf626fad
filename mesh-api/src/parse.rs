//! From YAML text to typed resources: documents, envelopes, and a lenient
//! serde pass that reports every shape problem (not just the first) with
//! its field path.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_yaml::Value;

use crate::core::CoreObject;
use crate::diag::{Code, Diagnostic, Findings, ObjectRef, SourceRef};
use crate::kinds::{Kind, Resolution};
use crate::meta::{Object, ObjectMeta, DEFAULT_NAMESPACE};
use crate::util::{check_label_name, check_subdomain_name, did_you_mean};
use crate::Resource;

/// One YAML document of a source, as far as it could be read.
#[derive(Clone, Debug)]
pub struct ParsedDocument {
    pub location: SourceRef,
    /// The object the document describes, as far as its envelope says
    /// (`None` when the document is not a Kubernetes object at all).
    pub object: Option<ObjectRef>,
    /// The typed resource, when the kind is known and the document could be
    /// typed. It may still carry errors: see [`ParsedDocument::is_valid`].
    pub resource: Option<Resource>,
    /// What is wrong with (or worth knowing about) this document on its own.
    pub diagnostics: Vec<Diagnostic>,
}

impl ParsedDocument {
    /// No error-level diagnostic: the resource can be applied.
    pub fn is_valid(&self) -> bool {
        !self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Parses a multi-document YAML text (`---` separated, comments allowed).
/// `source_name` names the source in diagnostics (usually the file path).
/// Empty documents are skipped; a `kind: List` document yields one
/// [`ParsedDocument`] per item. A YAML syntax error ends the source (the
/// rest cannot be delimited reliably) and is reported as `AMB0001`.
pub fn parse_documents(text: &str, source_name: &str) -> Vec<ParsedDocument> {
    let mut raw: Vec<(usize, Result<Value, String>)> = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        match Value::deserialize(doc) {
            Ok(v) => raw.push((i, Ok(v))),
            Err(e) => {
                raw.push((i, Err(e.to_string())));
                break;
            }
        }
    }
    let documents_in_source = raw.len();
    let mut out = Vec::new();
    for (i, v) in raw {
        let location = SourceRef {
            source: source_name.to_string(),
            document: i,
            documents_in_source,
        };
        let v = match v {
            Ok(Value::Null) => continue,
            Ok(v) => v,
            Err(e) => {
                out.push(ParsedDocument {
                    location: location.clone(),
                    object: None,
                    resource: None,
                    diagnostics: vec![Diagnostic {
                        severity: Code::YamlSyntax.default_severity(),
                        code: Code::YamlSyntax,
                        object: None,
                        location: Some(location),
                        field: String::new(),
                        message: format!("not valid YAML: {e}"),
                    }],
                });
                continue;
            }
        };
        let is_list = v.get("kind").and_then(Value::as_str) == Some("List")
            && v.get("apiVersion").and_then(Value::as_str) == Some("v1");
        if is_list {
            match v.get("items") {
                Some(Value::Sequence(items)) => {
                    for item in items {
                        out.push(parse_object(item.clone(), &location));
                    }
                }
                _ => out.push(ParsedDocument {
                    location: location.clone(),
                    object: None,
                    resource: None,
                    diagnostics: vec![Diagnostic {
                        severity: Code::InvalidType.default_severity(),
                        code: Code::InvalidType,
                        object: None,
                        location: Some(location),
                        field: "items".into(),
                        message: "a List needs items (a list of objects)".into(),
                    }],
                }),
            }
        } else {
            out.push(parse_object(v, &location));
        }
    }
    out
}

fn finish(
    location: &SourceRef,
    object: Option<ObjectRef>,
    resource: Option<Resource>,
    mut f: Findings,
    suppressed: &[String],
) -> ParsedDocument {
    // A field reported as misspelt ("did you mean spec.hosts?") is not
    // reported again as missing.
    f.items
        .retain(|x| x.code == Code::UnknownField || !suppressed.contains(&x.field));
    let diagnostics = f
        .items
        .into_iter()
        .map(|x| Diagnostic {
            severity: x.severity,
            code: x.code,
            object: object.clone(),
            location: Some(location.clone()),
            field: x.field,
            message: x.message,
        })
        .collect();
    ParsedDocument {
        location: location.clone(),
        object,
        resource,
        diagnostics,
    }
}

const ENVELOPE_FIELDS: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];

fn parse_object(v: Value, location: &SourceRef) -> ParsedDocument {
    let mut f = Findings::default();
    let mut suppressed = Vec::new();
    let Value::Mapping(mut map) = v else {
        f.push(
            Code::YamlSyntax,
            "",
            "the document is not a Kubernetes object (expected a mapping with apiVersion, kind and metadata)",
        );
        return finish(location, None, None, f, &suppressed);
    };

    let text_of = |key: &str, f: &mut Findings| -> Option<String> {
        match map.get(key) {
            None | Some(Value::Null) => {
                f.push(
                    Code::InvalidObjectMeta,
                    key,
                    "missing: every object needs one",
                );
                None
            }
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(_) => {
                f.push(Code::InvalidObjectMeta, key, "must be a non-empty string");
                None
            }
        }
    };
    let api_version = text_of("apiVersion", &mut f);
    let kind_name = text_of("kind", &mut f);

    let raw_meta = map.get("metadata").cloned();
    let raw_name = raw_meta
        .as_ref()
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let raw_ns = raw_meta
        .as_ref()
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_NAMESPACE)
        .to_string();
    let object = Some(ObjectRef {
        kind: kind_name.clone().unwrap_or_else(|| "<no kind>".into()),
        namespace: raw_ns,
        name: raw_name,
    });

    // metadata
    let metadata: ObjectMeta = match raw_meta {
        None | Some(Value::Null) => {
            f.push(
                Code::InvalidObjectMeta,
                "metadata.name",
                "missing: the document has no metadata, and every object needs metadata.name",
            );
            ObjectMeta::default()
        }
        Some(m) => deserialize_lenient(m, "metadata", &mut f).unwrap_or_default(),
    };
    if map.get("metadata").is_some_and(|m| !m.is_null()) {
        match &metadata.name {
            None => f.push(
                Code::InvalidObjectMeta,
                "metadata.name",
                "missing: every object needs a name",
            ),
            Some(n) => check_subdomain_name(&mut f, "metadata.name", n),
        }
    }
    if let Some(ns) = &metadata.namespace {
        check_label_name(&mut f, "metadata.namespace", ns);
    }

    let (Some(api_version), Some(kind_name)) = (api_version, kind_name) else {
        return finish(location, object, None, f, &suppressed);
    };
    let kind = match Kind::resolve(&api_version, &kind_name) {
        Resolution::Known(k) => k,
        Resolution::WrongVersion(k) => {
            f.push(
                Code::UnsupportedApiVersion,
                "apiVersion",
                format!(
                    "{api_version} does not serve {kind_name} (Istio serves it as {})",
                    k.api_versions().join(", ")
                ),
            );
            k
        }
        Resolution::Unknown => {
            f.push(
                Code::UnknownKind,
                "",
                format!("{kind_name} ({api_version}) is not an Istio, Gateway API or core Kubernetes kind that Ambit knows; ignored"),
            );
            return finish(location, object, None, f, &suppressed);
        }
    };

    map.remove("apiVersion");
    map.remove("kind");
    map.remove("metadata");

    if !kind.is_mesh_config() {
        let resource = Resource::Core(CoreObject {
            kind,
            api_version,
            metadata,
            body: map,
        });
        resource.validate(&mut f);
        return finish(location, object, Some(resource), f, &suppressed);
    }

    for k in map.keys() {
        let name = k
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("{k:?}"));
        if !ENVELOPE_FIELDS.contains(&name.as_str()) {
            let msg = match did_you_mean(&name, ENVELOPE_FIELDS) {
                Some(s) => {
                    suppressed.push(s.to_string());
                    format!("unknown field; did you mean {s}?")
                }
                None => "unknown field (an object has apiVersion, kind, metadata, spec and status)"
                    .to_string(),
            };
            f.push(Code::UnknownField, name, msg);
        }
    }
    let spec = match map.remove("spec") {
        None | Some(Value::Null) => Value::Mapping(Default::default()),
        Some(s) => s,
    };

    macro_rules! typed {
        ($variant:ident) => {{
            let spec = deserialize_lenient_tracking(spec, "spec", &mut f, &mut suppressed)
                .unwrap_or_default();
            Resource::$variant(Object {
                api_version,
                metadata,
                spec,
            })
        }};
    }
    let resource = match kind {
        Kind::VirtualService => typed!(VirtualService),
        Kind::DestinationRule => typed!(DestinationRule),
        Kind::Gateway => typed!(Gateway),
        Kind::ServiceEntry => typed!(ServiceEntry),
        Kind::Sidecar => typed!(Sidecar),
        Kind::EnvoyFilter => typed!(EnvoyFilter),
        Kind::PeerAuthentication => typed!(PeerAuthentication),
        Kind::AuthorizationPolicy => typed!(AuthorizationPolicy),
        Kind::RequestAuthentication => typed!(RequestAuthentication),
        Kind::Telemetry => typed!(Telemetry),
        Kind::HttpRoute => typed!(HttpRoute),
        Kind::Namespace
        | Kind::Service
        | Kind::ServiceAccount
        | Kind::Deployment
        | Kind::ConfigMap
        | Kind::IstioOperator => unreachable!("core kinds are handled above"),
    };
    resource.validate(&mut f);
    finish(location, object, Some(resource), f, &suppressed)
}

// ------------------------------------------------------------ lenient --

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

fn deserialize_lenient_tracking<T: DeserializeOwned>(
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
