//! Diagnostics: what `meshctl analyze` and the controller report about a
//! config set. Every diagnostic has a severity, a stable code, the resource
//! it is about (kind, namespace/name), where that resource came from (source
//! and document index), the field path and the reason.

use std::fmt;

use serde::Serialize;

/// How bad a diagnostic is.
///
/// * `Error`: the resource is refused (Istio would refuse it too, or it
///   cannot mean what the operator wrote). `meshctl analyze` exits 1.
/// * `Warning`: the resource is accepted, but part of it is ignored by
///   Ambit (not implemented, not applied) or is probably a mistake
///   (deprecated form, dangling reference).
/// * `Info`: worth knowing, nothing to fix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Severity {
    Error,
    Warning,
    Info,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Severity::Error => "Error",
            Severity::Warning => "Warning",
            Severity::Info => "Info",
        })
    }
}

macro_rules! codes {
    ($( $(#[$doc:meta])* $variant:ident = $num:literal, $sev:ident, $title:literal; )*) => {
        /// Stable diagnostic codes (`AMB0001`, ...). The numbers never change
        /// meaning; new codes get new numbers.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Code {
            $( $(#[$doc])* $variant, )*
        }

        impl Code {
            /// Every code, in number order.
            pub const ALL: &'static [Code] = &[ $( Code::$variant, )* ];

            /// `AMB0003`
            pub fn as_str(self) -> &'static str {
                match self { $( Code::$variant => concat!("AMB", $num), )* }
            }

            /// The severity this code normally carries.
            pub fn default_severity(self) -> Severity {
                match self { $( Code::$variant => Severity::$sev, )* }
            }

            /// A short title for docs and `--help`.
            pub fn title(self) -> &'static str {
                match self { $( Code::$variant => $title, )* }
            }
        }
    };
}

codes! {
    /// The text is not YAML, or a document is not a mapping.
    YamlSyntax = "0001", Error, "not YAML / not a Kubernetes object";
    /// `apiVersion`, `kind` or `metadata.name` missing or malformed.
    InvalidObjectMeta = "0002", Error, "apiVersion, kind or metadata missing or invalid";
    /// A field that the resource's schema does not have.
    UnknownField = "0003", Error, "unknown field";
    /// A field of the wrong type, or an enum value that does not exist.
    InvalidType = "0004", Error, "wrong type or unknown enum value";
    /// The kind exists but not under this apiVersion.
    UnsupportedApiVersion = "0005", Error, "apiVersion does not serve this kind";
    /// A kind that is neither Istio, Gateway API nor a known core kind.
    UnknownKind = "0006", Warning, "kind not known to Ambit; ignored";
    /// A required field is missing or empty.
    MissingField = "0007", Error, "required field missing";
    /// A duration that does not parse (`1s`, `3m`, `0.5s`, `10ms`).
    InvalidDuration = "0008", Error, "invalid duration";
    /// A percentage outside 0-100.
    InvalidPercentage = "0009", Error, "percentage out of range";
    /// Route weights that do not add up to 100.
    InvalidWeights = "0010", Error, "route weights do not sum to 100";
    /// A port number or range outside 1-65535.
    InvalidPort = "0011", Error, "invalid port";
    /// A regular expression that does not compile.
    InvalidRegex = "0012", Error, "invalid regular expression";
    /// A value that has the right type but not an acceptable meaning.
    InvalidValue = "0013", Error, "invalid value";
    /// Fields that exclude each other are both set (or none of a required set is).
    ConflictingFields = "0014", Error, "conflicting fields";
    /// A deprecated form that is still accepted.
    Deprecated = "0020", Warning, "deprecated field";
    /// A field or feature Ambit does not implement: accepted, not applied.
    NotImplemented = "0021", Warning, "not implemented by Ambit";
    /// A known resource that Ambit does not apply (install config, sidecar config, ...).
    NotApplied = "0022", Warning, "resource not applied by Ambit";
    /// A VirtualService names a subset that the DestinationRule for that host does not define.
    ReferencedSubsetNotFound = "0030", Warning, "referenced subset not found";
    /// A VirtualService names a Gateway that is not in the analyzed set.
    ReferencedGatewayNotFound = "0031", Warning, "referenced gateway not found";
    /// The same kind/namespace/name appears more than once in the analyzed set.
    DuplicateResource = "0032", Warning, "resource defined more than once";
    /// Two DestinationRules for one host both set a top-level trafficPolicy.
    ConflictingDestinationRules = "0033", Warning, "conflicting DestinationRules";
    /// A reference to a provider that is not defined, or of the wrong type.
    ReferencedProviderInvalid = "0034", Warning, "provider not defined or of the wrong type";
    /// Advice: probably not what was meant, but valid.
    Advice = "0040", Info, "advice";
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Which object a diagnostic is about. `name` is `None` when the document
/// has none (which is itself an error).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct ObjectRef {
    pub kind: String,
    /// `default` when the document does not say (as `kubectl apply` does).
    pub namespace: String,
    pub name: Option<String>,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) => write!(f, "{} {}/{}", self.kind, self.namespace, n),
            None => write!(f, "{} {}/<no name>", self.kind, self.namespace),
        }
    }
}

/// Where a document came from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct SourceRef {
    /// File path or other source name given to [`crate::parse_documents`].
    pub source: String,
    /// 0-based index of the YAML document in the source.
    pub document: usize,
    /// How many documents the source has (to decide whether to print the index).
    #[serde(skip)]
    pub documents_in_source: usize,
}

impl fmt::Display for SourceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.documents_in_source > 1 {
            write!(f, "{} #{}", self.source, self.document + 1)
        } else {
            write!(f, "{}", self.source)
        }
    }
}

/// One finding.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub code: Code,
    /// The object; `None` for problems before an object could be read
    /// (YAML syntax errors).
    pub object: Option<ObjectRef>,
    pub location: Option<SourceRef>,
    /// Field path (`spec.http[0].route[1].weight`); empty for the object as a whole.
    pub field: String,
    pub message: String,
}

impl Diagnostic {
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// `<kind> <ns>/<name>: field <path>: <reason>` — the same style as
/// mesh-node's config errors. Severity, code and source are left to the
/// caller's layout (see `meshctl`).
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.object, &self.location) {
            (Some(o), _) => write!(f, "{o}: ")?,
            (None, Some(l)) => write!(f, "{l}: ")?,
            (None, None) => {}
        }
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "field {}: {}", self.field, self.message)
        }
    }
}

/// A finding about one object before it is tied to its object and source.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    pub severity: Severity,
    pub code: Code,
    pub field: String,
    pub message: String,
}

/// Collects findings for one object. Field paths are absolute
/// (`spec.http[0].timeout`).
#[derive(Default, Debug)]
pub struct Findings {
    pub items: Vec<Finding>,
}

impl Findings {
    pub fn push(&mut self, code: Code, field: impl Into<String>, message: impl Into<String>) {
        self.items.push(Finding {
            severity: code.default_severity(),
            code,
            field: field.into(),
            message: message.into(),
        });
    }

    pub fn push_with(
        &mut self,
        severity: Severity,
        code: Code,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.items.push(Finding {
            severity,
            code,
            field: field.into(),
            message: message.into(),
        });
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|f| f.severity == Severity::Error)
    }
}

#[cfg(test)]
mod tests;
