use crate::StrMatch;

#[test]
fn istio_wildcards() {
    let m = |p: &str, v: &str| StrMatch::parse(p).unwrap().matches(v);
    assert!(m("*", "cluster.local/ns/a/sa/b"));
    assert!(!m("*", ""), "`*` needs an identity");
    assert!(m("cluster.local/ns/a/*", "cluster.local/ns/a/sa/b"));
    assert!(!m("cluster.local/ns/a/*", "cluster.local/ns/ab/sa/b"));
    assert!(m("*/sa/b", "td/ns/x/sa/b"));
    assert!(!m("*/sa/b", "td/ns/x/sa/bb"));
    assert!(m("prod-*", "prod-eu"));
    assert!(!m("prod-*", ""));
    assert!(m("exact", "exact"));
    assert!(!m("exact", "exactly"));
    assert!(StrMatch::parse("a*b").is_err());
    assert!(StrMatch::parse("**").is_err());
    assert!(StrMatch::parse("").is_err());
}
