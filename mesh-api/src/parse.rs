//! From YAML text to typed resources: documents, envelopes, and a lenient
//! serde pass that reports every shape problem (not just the first) with
//! its field path.

use serde::Deserialize;
use serde_yaml::Value;

use crate::core::CoreObject;
use crate::diag::{Code, Diagnostic, Findings, ObjectRef, SourceRef};
use crate::kinds::{Kind, Resolution};
use crate::lenient::{deserialize_lenient, deserialize_lenient_tracking};
use crate::meta::{Object, ObjectMeta, DEFAULT_NAMESPACE};
use crate::resource::Resource;
use crate::util::{check_label_name, check_subdomain_name, did_you_mean};

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

#[cfg(test)]
mod tests;
