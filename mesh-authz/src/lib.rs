//! The one authorization engine: compiled PeerAuthentication and
//! AuthorizationPolicy, their matchers, and the DENY → ALLOW → implicit-deny
//! order (with AUDIT), as ztunnel enforces them.
//!
//! AuthorizationPolicy semantics (Istio):
//! - A policy applies to a workload if it is in the workload's namespace, or
//!   in the root namespace (mesh-wide), and its `selector.matchLabels` (if
//!   any) are all among the workload's labels. `targetRef(s)` policies belong
//!   to waypoints/gateways and are not enforced here.
//! - Evaluation: any matching DENY policy denies; otherwise, if any ALLOW
//!   policy applies, one of them must match (else implicit deny); otherwise
//!   allow. AUDIT policies never change the decision; the first one that
//!   matches is reported in [`Decision::audit`]. CUSTOM is refused at load.
//! - A rule matches if any `from.source` matches, any `to.operation` matches
//!   and every `when` condition holds; absent parts match everything. A
//!   policy without rules matches nothing (`spec: {}` is allow-nothing).
//! - Plaintext peers carry no identity: positive `principals`/`namespaces`
//!   never match them, negative ones (`notPrincipals`, ...) do.
//! - HTTP attributes (`methods`, `paths`, `hosts`, `requestPrincipals`,
//!   `request.*` conditions, ...) cannot be seen at L4: an ALLOW (or AUDIT)
//!   rule that uses them never matches; a DENY rule is enforced without them
//!   (both more restrictive than requested, as in ztunnel). The config loader
//!   reports a warning for each such rule.
//! - `remoteIpBlocks`/`remote.ip` are matched against the connection's source
//!   address (at L4 the direct peer is the remote).
//! - With HTTP attributes (the waypoint's [`RequestPolicy`]), they are
//!   matched: `hosts`, `methods`, `paths` (normalized as Istio does),
//!   `requestPrincipals`, `request.headers[...]`, `request.auth.*`. A key the
//!   engine cannot evaluate ([`Condition::Unsupported`]) fails closed: its
//!   rule never matches in ALLOW and AUDIT and is enforced without it in DENY.

mod attributes;
mod condition;
mod decision;
mod matchers;
mod path;
mod policy;
mod strmatch;

pub use attributes::{Attributes, Claims, HttpAttributes, Peer};
pub use condition::Condition;
pub use decision::{decide, evaluate, Decision, Outcome, Policy, Reason, Verdict};
pub use matchers::{Match, OperationMatch, RequestOperationMatch, RequestSourceMatch, SourceMatch};
pub use path::normalized_path;
pub use policy::{
    labels_match, Action, AuthzPolicy, MtlsMode, PeerAuthnPolicy, RequestPolicy, RequestRule, Rule,
};
pub use strmatch::StrMatch;

#[cfg(test)]
mod tests;
