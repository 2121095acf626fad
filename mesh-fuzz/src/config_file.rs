//! The local config file: text as mesh-node reads it from disk.

use mesh_model::config;

use crate::Reached;

/// Parses `data` as a config file in each of the ways the node and the
/// tools read one. Not UTF-8 is not a config file (the node reads it with
/// `read_to_string`, which refuses it).
pub fn config_file(data: &[u8]) -> Reached {
    let Ok(text) = std::str::from_utf8(data) else {
        return Reached::Undecoded;
    };
    let parsed = config::parse(text);
    let state = config::parse_state(text);
    // The same checks, the same verdict.
    assert_eq!(
        parsed.is_ok(),
        state.is_ok(),
        "parse and parse_state disagree: {:?} / {:?}",
        parsed.as_ref().err(),
        state.as_ref().err()
    );
    let policies = config::parse_policies(text);
    if parsed.is_ok() || policies.is_ok() {
        Reached::Accepted
    } else {
        Reached::Refused
    }
}
