//! Unit tests of diagnostic codes.

use crate::diag::Code;

#[test]
fn codes_are_unique_and_stable() {
    let mut seen = std::collections::BTreeSet::new();
    for c in Code::ALL {
        assert!(seen.insert(c.as_str()), "duplicate {c}");
        assert!(c.as_str().starts_with("AMB") && c.as_str().len() == 7);
    }
    assert_eq!(Code::UnknownField.as_str(), "AMB0003");
}
