//! Helpers of the unit tests: parse and analyze one YAML text, and pick
//! out the diagnostics a test asserts.

use crate::analyze::analyze;
use crate::diag::{Diagnostic, Severity};
use crate::parse::parse_documents;

pub(crate) fn diags(yaml: &str) -> Vec<Diagnostic> {
    analyze(&parse_documents(yaml, "test.yaml"))
}

/// `(code, field)` of every diagnostic at `sev`.
pub(crate) fn at(yaml: &str, sev: Severity) -> Vec<(String, String)> {
    diags(yaml)
        .into_iter()
        .filter(|d| d.severity == sev)
        .map(|d| (d.code.as_str().to_string(), d.field))
        .collect()
}

pub(crate) fn errors(yaml: &str) -> Vec<(String, String)> {
    at(yaml, Severity::Error)
}

pub(crate) fn warnings(yaml: &str) -> Vec<(String, String)> {
    at(yaml, Severity::Warning)
}

pub(crate) fn e(code: &str, field: &str) -> (String, String) {
    (code.to_string(), field.to_string())
}

pub(crate) fn message_of(yaml: &str, field: &str) -> String {
    diags(yaml)
        .into_iter()
        .find(|d| d.field == field)
        .map(|d| d.message)
        .unwrap_or_else(|| panic!("no diagnostic at {field}"))
}

pub(crate) const VS_HEAD: &str = "apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: r, namespace: demo}
";
