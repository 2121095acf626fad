//! What is wrong with a set of resources: one [`FieldError`] per problem
//! (which entry, which field, why), collected with the warnings while the
//! resources are checked. Shared by the builder ([`crate::build`]) and the
//! local file's own checks ([`crate::config`]).

use std::fmt;

/// One problem in the config: which entry, which field, why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// e.g. `workloads[2] (demo/server-1)`
    pub entry: String,
    /// e.g. `ports[0].targetPort`; empty when the entry itself is at fault.
    pub field: String,
    pub reason: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.entry, self.reason)
        } else {
            write!(f, "{}: field {}: {}", self.entry, self.field, self.reason)
        }
    }
}

/// `invalid config: <one>` or `invalid config (n problems):` and a list.
pub(crate) fn fmt_problems(errors: &[FieldError]) -> String {
    match errors {
        [one] => format!("invalid config: {one}"),
        many => {
            let mut s = format!("invalid config ({} problems):", many.len());
            for e in many {
                s.push_str("\n  - ");
                s.push_str(&e.to_string());
            }
            s
        }
    }
}

/// Resources that do not make a state: every problem found, in input order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", fmt_problems(.0))]
pub struct Invalid(pub Vec<FieldError>);

impl Invalid {
    pub fn problems(&self) -> &[FieldError] {
        &self.0
    }
}

/// Errors and warnings, in the order they are found.
#[derive(Debug, Default)]
pub(crate) struct Problems {
    pub(crate) errors: Vec<FieldError>,
    pub(crate) warnings: Vec<String>,
}

impl Problems {
    pub(crate) fn err(&mut self, entry: &str, field: impl Into<String>, reason: impl Into<String>) {
        self.errors.push(FieldError {
            entry: entry.to_string(),
            field: field.into(),
            reason: reason.into(),
        });
    }

    pub(crate) fn warn(&mut self, entry: &str, msg: impl fmt::Display) {
        self.warnings.push(format!("{entry}: {msg}"));
    }

    /// The number of errors so far: compare before and after checking an
    /// entry to know whether it is good.
    pub(crate) fn error_count(&self) -> usize {
        self.errors.len()
    }
}
