use crate::{normalized_path, StrMatch};

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

#[test]
fn lenient_patterns_follow_istio() {
    let m = |p: &str, v: &str| StrMatch::lenient(p).matches(v);
    assert!(m("*", "x"));
    assert!(!m("*", ""));
    assert!(m("/api/*", "/api/v1"));
    assert!(!m("/api/*", "/apix"));
    assert!(m("*.png", "/a/b.png"));
    assert!(m("/x", "/x"));
    assert!(!m("/x", "/x/"));
    // Nothing is refused: a `*` inside is literal, a trailing one wins.
    assert_eq!(StrMatch::lenient("a*b"), StrMatch::Exact("a*b".into()));
    assert_eq!(StrMatch::lenient("*a*"), StrMatch::Prefix("*a".into()));
    assert_eq!(StrMatch::lenient(""), StrMatch::Exact(String::new()));
}

#[test]
fn paths_are_normalized_for_matching() {
    assert_eq!(normalized_path("/public/../admin"), "/admin");
    assert_eq!(normalized_path("/a/./b"), "/a/b");
    assert_eq!(normalized_path("/%61dmin/x"), "/admin/x");
    assert_eq!(normalized_path("/a%2fb"), "/a%2Fb");
    assert_eq!(normalized_path("/a\\..\\admin"), "/admin");
    assert_eq!(normalized_path("/../../x"), "/x");
    assert_eq!(normalized_path("/a/.."), "/");
    assert_eq!(normalized_path("/"), "/");
    assert_eq!(normalized_path("/a//b"), "/a//b");
    assert_eq!(normalized_path("/x%"), "/x%");
    assert_eq!(normalized_path("/x%+1"), "/x%+1");
    assert_eq!(normalized_path("*"), "*");
}

mod request {
    use std::net::IpAddr;

    use http::{HeaderMap, HeaderValue};
    use mesh_identity::Identity;

    use crate::{
        decide, evaluate, Action, Attributes, Claims, Condition, HttpAttributes, OperationMatch,
        Outcome, Peer, Reason, RequestOperationMatch, RequestPolicy, RequestRule,
        RequestSourceMatch, StrMatch,
    };

    /// `org.team` is `blue`, `aud` is `[a, b]`.
    struct Token;

    impl Claims for Token {
        fn claim(&self, path: &[String]) -> Vec<String> {
            match path.iter().map(String::as_str).collect::<Vec<_>>()[..] {
                ["org", "team"] => vec!["blue".into()],
                ["aud"] => vec!["a".into(), "b".into()],
                _ => Vec::new(),
            }
        }
    }

    fn peer(identity: Option<&Identity>) -> Peer<'_> {
        Peer::new(
            identity,
            IpAddr::from([10, 0, 0, 1]),
            IpAddr::from([10, 0, 0, 2]),
            8080,
        )
    }

    fn http<'a>(method: &'a str, path: &'a str, headers: &'a HeaderMap) -> HttpAttributes<'a> {
        HttpAttributes {
            method,
            path,
            host: "Web.Prod",
            headers,
            request_principal: "iss/sub",
            claims: &Token,
        }
    }

    fn policy(action: Action, rule: RequestRule) -> RequestPolicy {
        RequestPolicy {
            name: "p".into(),
            namespace: "prod".into(),
            selector: None,
            action,
            rules: vec![rule],
            node_enforced: false,
        }
    }

    fn pats(v: &[&str]) -> Vec<StrMatch> {
        v.iter().map(|s| StrMatch::lenient(s)).collect()
    }

    fn get_admin() -> RequestRule {
        RequestRule {
            to: Some(vec![RequestOperationMatch {
                l4: OperationMatch {
                    ports: vec![8080],
                    not_ports: vec![],
                },
                hosts: pats(&["web.prod"]),
                methods: pats(&["GET"]),
                paths: pats(&["/admin*"]),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn operations_match_host_method_and_normalized_path() {
        let h = HeaderMap::new();
        let allow = policy(Action::Allow, get_admin());
        let ok = |m: &str, p: &str| {
            allow.matches(&Attributes {
                peer: peer(None),
                http: Some(http(m, p, &h)),
            })
        };
        assert!(ok("GET", "/admin/x"));
        assert!(ok("GET", "/public/../%61dmin"), "normalized");
        assert!(!ok("POST", "/admin"));
        assert!(!ok("GET", "/public"));
        let with_port = policy(
            Action::Allow,
            RequestRule {
                to: Some(vec![RequestOperationMatch {
                    hosts: pats(&["web.prod:8080"]),
                    ..Default::default()
                }]),
                ..Default::default()
            },
        );
        assert!(with_port.matches(&Attributes {
            peer: peer(None),
            http: Some(http("GET", "/", &h)),
        }));
    }

    #[test]
    fn without_http_attributes_the_node_semantics_hold() {
        // ALLOW: a rule with HTTP attributes never matches at L4.
        let allow = policy(Action::Allow, get_admin());
        let d = evaluate([&allow], &peer(None).into());
        assert_eq!(d.reason, Reason::NoAllowMatch(vec!["prod/p".into()]));
        // DENY: enforced without them (the port still counts).
        let deny = policy(Action::Deny, get_admin());
        assert!(!evaluate([&deny], &peer(None).into()).allowed);
        let mut other_port = peer(None);
        other_port.dst_port = 9090;
        assert!(evaluate([&deny], &other_port.into()).allowed);
        // Request principals are HTTP attributes too.
        let rp = RequestRule {
            from: Some(vec![RequestSourceMatch {
                request_principals: pats(&["*"]),
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert!(!policy(Action::Allow, rp.clone()).matches(&peer(None).into()));
        let h = HeaderMap::new();
        assert!(policy(Action::Allow, rp).matches(&Attributes {
            peer: peer(None),
            http: Some(http("GET", "/", &h)),
        }));
    }

    #[test]
    fn request_conditions() {
        let id = Identity {
            trust_domain: "cluster.local".into(),
            namespace: "prod".into(),
            service_account: "web".into(),
        };
        let mut h = HeaderMap::new();
        h.append("x-tenant", HeaderValue::from_static("t-1"));
        h.append("x-tenant", HeaderValue::from_static("t-2"));
        let cond = |c: Condition| {
            policy(
                Action::Allow,
                RequestRule {
                    when: vec![c],
                    ..Default::default()
                },
            )
            .matches(&Attributes {
                peer: peer(Some(&id)),
                http: Some(http("GET", "/", &h)),
            })
        };
        let name = http::header::HeaderName::from_static("x-tenant");
        assert!(cond(Condition::RequestHeader {
            name: name.clone(),
            values: pats(&["t-1,t-2"]),
            not: vec![],
        }));
        assert!(!cond(Condition::RequestHeader {
            name: http::header::HeaderName::from_static("x-absent"),
            values: pats(&["*"]),
            not: vec![],
        }));
        assert!(cond(Condition::RequestHeader {
            name: http::header::HeaderName::from_static("x-absent"),
            values: vec![],
            not: pats(&["*"]),
        }));
        assert!(cond(Condition::RequestPrincipal {
            values: pats(&["iss/*"]),
            not: vec![],
        }));
        let claim = |path: &[&str], v: &[&str]| Condition::RequestClaim {
            path: path.iter().map(|s| s.to_string()).collect(),
            values: pats(v),
            not: vec![],
        };
        assert!(cond(claim(&["org", "team"], &["blue"])));
        assert!(!cond(claim(&["org", "team"], &["red"])));
        assert!(cond(claim(&["aud"], &["b"])));
        assert!(cond(Condition::SourceNamespace {
            values: pats(&["prod"]),
            not: vec![],
        }));
    }

    #[test]
    fn unsupported_keys_fail_closed_with_http_attributes() {
        let h = HeaderMap::new();
        let a = Attributes {
            peer: peer(None),
            http: Some(http("GET", "/", &h)),
        };
        let rule = RequestRule {
            when: vec![Condition::Unsupported {
                key: "connection.sni".into(),
            }],
            ..Default::default()
        };
        assert!(!policy(Action::Allow, rule.clone()).matches(&a));
        assert!(!policy(Action::Audit, rule.clone()).matches(&a));
        assert!(policy(Action::Deny, rule).matches(&a));
    }

    #[test]
    fn every_matching_audit_is_reported_and_none_decides() {
        let h = HeaderMap::new();
        let a = Attributes {
            peer: peer(None),
            http: Some(http("GET", "/", &h)),
        };
        let mut first = policy(Action::Audit, RequestRule::default());
        first.name = "first".into();
        let mut second = first.clone();
        second.name = "second".into();
        let v = decide([&first, &second], &a);
        assert_eq!(v.outcome, Outcome::NoPolicies);
        assert_eq!(v.audits, vec![&first, &second]);
        let d = evaluate([&first, &second], &a);
        assert!(d.allowed);
        assert_eq!(d.audit.as_deref(), Some("prod/first"));
    }
}
