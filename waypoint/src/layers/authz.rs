//! AuthorizationPolicy: the second stage, after authentication (its
//! principals and claims are conditions) and before routing, as Envoy's
//! RBAC filter. A denied request gets `403 RBAC: access denied`.

use std::net::{IpAddr, Ipv4Addr};

use http::request::Parts;
use http::StatusCode;
use mesh_authz::{Attributes, HttpAttributes};

use super::authn::Authenticated;
use super::reply::Reply;
use crate::authz::Decision;
use crate::body::local_reply;
use crate::config::Config;
use crate::peer::Peer;

/// Authorizes the request from `peer` for `host`.
pub fn authorize(
    cfg: &Config,
    authn: &Authenticated,
    parts: &Parts,
    host: &str,
    port: Option<u16>,
    peer: &Peer,
) -> Result<(), Reply> {
    let Some(target) = &authn.target else {
        return Ok(());
    };
    // `destination.port` without one in the authority is the scheme's.
    let scheme_port = if parts.uri.scheme_str() == Some("https") {
        443
    } else {
        80
    };
    let attrs = Attributes {
        peer: mesh_authz::Peer::new(
            peer.identity.as_ref(),
            peer.addr.ip(),
            // `destination.ip` is not evaluated here (compiled as unsupported).
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port.unwrap_or(scheme_port),
        ),
        http: Some(HttpAttributes {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            host,
            headers: &parts.headers,
            request_principal: authn.auth.principal.as_deref().unwrap_or(""),
            claims: &authn.auth,
        }),
    };
    match cfg.authz.check(target, &attrs) {
        Decision::Allow => Ok(()),
        Decision::Deny { policy } => {
            tracing::debug!(host, policy = %policy, "request denied by authorization policy");
            Err(local_reply(StatusCode::FORBIDDEN, "RBAC: access denied"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::Target;
    use crate::telemetry::SourceInfo;

    fn peer() -> Peer {
        Peer {
            addr: "10.0.0.1:4000".parse().expect("addr"),
            labels: Default::default(),
            identity: None,
            source: SourceInfo::default(),
        }
    }

    fn parts(method: &str, uri: &str) -> Parts {
        http::Request::builder()
            .method(method)
            .uri(uri)
            .body(())
            .expect("request")
            .into_parts()
            .0
    }

    const GET_ONLY: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: get, namespace: ns}
spec:
  rules:
  - to:
    - operation: {methods: [GET], ports: ["80"]}
"#;

    fn authenticated(host: &str) -> Authenticated {
        Authenticated {
            auth: Default::default(),
            target: Some(Target::new(host, vec![])),
        }
    }

    #[test]
    fn allow_policies_admit_what_they_match_and_deny_the_rest() {
        let (cfg, issues) = Config::from_yaml(GET_ONLY, "t.yaml");
        assert!(issues.is_empty(), "{issues:?}");
        let a = authenticated("svc.ns");
        let p = peer();
        assert!(authorize(&cfg, &a, &parts("GET", "/"), "svc.ns", None, &p).is_ok());
        let Err(r) = authorize(&cfg, &a, &parts("POST", "/"), "svc.ns", None, &p) else {
            panic!("POST passed a GET-only policy")
        };
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        // The port defaults to the scheme's: 443 is not 80.
        let https = parts("GET", "https://svc.ns/");
        assert!(authorize(&cfg, &a, &https, "svc.ns", None, &p).is_err());
    }

    #[test]
    fn without_a_target_nothing_is_checked() {
        let (cfg, _) = Config::from_yaml(GET_ONLY, "t.yaml");
        let a = Authenticated::default();
        assert!(authorize(&cfg, &a, &parts("POST", "/"), "svc.ns", None, &peer()).is_ok());
    }
}
