//! The one order: DENY, then ALLOW, then implicit deny; AUDIT is reported.

use std::fmt;

use crate::attributes::Attributes;
use crate::matchers::Match;
use crate::policy::{Action, AuthzPolicy};

/// Why a connection was allowed or denied. Policies are named `namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// No ALLOW or DENY policy applies to the destination.
    NoPolicies,
    /// This ALLOW policy matched.
    AllowedBy(String),
    /// This DENY policy matched.
    DeniedBy(String),
    /// ALLOW policies apply (listed) and none matched: implicit deny.
    NoAllowMatch(Vec<String>),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NoPolicies => write!(f, "allowed: no authorization policy applies"),
            Reason::AllowedBy(p) => write!(f, "allowed by ALLOW policy {p}"),
            Reason::DeniedBy(p) => write!(f, "denied by DENY policy {p}"),
            Reason::NoAllowMatch(ps) => write!(
                f,
                "denied: no ALLOW policy matched (applicable: {})",
                ps.join(", ")
            ),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: Reason,
    /// The first AUDIT policy (`namespace/name`) that matched, to be logged.
    pub audit: Option<String>,
}

impl Decision {
    /// The policy that decided (`namespace/name`), if one did.
    pub fn policy(&self) -> Option<&str> {
        match &self.reason {
            Reason::AllowedBy(p) | Reason::DeniedBy(p) => Some(p),
            _ => None,
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.reason)?;
        if let Some(a) = &self.audit {
            write!(f, " (audited by {a})")?;
        }
        Ok(())
    }
}

/// A policy the order is applied to: an [`AuthzPolicy`], or a caller's
/// type that carries one (the waypoint's, with its targeting).
pub trait Policy {
    fn action(&self) -> Action;
    fn matches(&self, a: &Attributes) -> bool;
}

impl<S: Match, O: Match> Policy for AuthzPolicy<S, O> {
    fn action(&self) -> Action {
        self.action
    }
    fn matches(&self, a: &Attributes) -> bool {
        AuthzPolicy::matches(self, a)
    }
}

/// What decided, by reference to the caller's policies.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome<'p, P> {
    /// No ALLOW or DENY policy applies.
    NoPolicies,
    AllowedBy(&'p P),
    DeniedBy(&'p P),
    /// ALLOW policies apply (listed) and none matched: implicit deny.
    NoAllowMatch(Vec<&'p P>),
}

#[derive(Debug, PartialEq, Eq)]
pub struct Verdict<'p, P> {
    pub outcome: Outcome<'p, P>,
    /// Every AUDIT policy that matched, in order.
    pub audits: Vec<&'p P>,
}

impl<P> Verdict<'_, P> {
    pub fn allowed(&self) -> bool {
        matches!(self.outcome, Outcome::NoPolicies | Outcome::AllowedBy(_))
    }
}

/// Decides `a` against the policies that apply to its destination: any
/// matching DENY denies; else, if ALLOW policies apply, one must match; else
/// allow. AUDIT never decides.
pub fn decide<'p, P: Policy>(
    applicable: impl IntoIterator<Item = &'p P>,
    a: &Attributes,
) -> Verdict<'p, P> {
    let applicable: Vec<&P> = applicable.into_iter().collect();
    let audits: Vec<&P> = applicable
        .iter()
        .copied()
        .filter(|p| p.action() == Action::Audit && p.matches(a))
        .collect();
    if let Some(deny) = applicable
        .iter()
        .find(|p| p.action() == Action::Deny && p.matches(a))
    {
        return Verdict {
            outcome: Outcome::DeniedBy(deny),
            audits,
        };
    }
    let allows: Vec<&P> = applicable
        .iter()
        .copied()
        .filter(|p| p.action() == Action::Allow)
        .collect();
    let outcome = if allows.is_empty() {
        Outcome::NoPolicies
    } else {
        match allows.iter().find(|p| p.matches(a)) {
            Some(p) => Outcome::AllowedBy(*p),
            None => Outcome::NoAllowMatch(allows),
        }
    };
    Verdict { outcome, audits }
}

/// [`decide`] over [`AuthzPolicy`]s, named `namespace/name`; the first
/// matching AUDIT policy is the one reported.
pub fn evaluate<'p, S: Match + 'p, O: Match + 'p>(
    applicable: impl IntoIterator<Item = &'p AuthzPolicy<S, O>>,
    a: &Attributes,
) -> Decision {
    let v = decide(applicable, a);
    let allowed = v.allowed();
    let reason = match v.outcome {
        Outcome::NoPolicies => Reason::NoPolicies,
        Outcome::AllowedBy(p) => Reason::AllowedBy(p.key()),
        Outcome::DeniedBy(p) => Reason::DeniedBy(p.key()),
        Outcome::NoAllowMatch(ps) => Reason::NoAllowMatch(ps.iter().map(|p| p.key()).collect()),
    };
    Decision {
        allowed,
        reason,
        audit: v.audits.first().map(|p| p.key()),
    }
}
