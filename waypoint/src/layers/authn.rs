//! RequestAuthentication: the first stage, before routing as Envoy's
//! `jwt_authn` filter runs. A failed token gets `401` with Envoy's text
//! and a `WWW-Authenticate` challenge; the JWT rules may strip or add
//! headers. Picks the service the security policies are selected for,
//! which the [`authz`](super::authz) stage reuses.

use http::request::Parts;
use http::{HeaderValue, StatusCode};

use super::reply::Reply;
use crate::authn::RequestAuth;
use crate::body::local_reply;
use crate::config::Config;
use crate::discovery::Discovery;
use crate::security::Target;

/// What authentication found.
#[derive(Debug, Default)]
pub struct Authenticated {
    pub auth: RequestAuth,
    /// The service the policies were selected for; `None` when the config
    /// has neither RequestAuthentications nor AuthorizationPolicies.
    pub target: Option<Target>,
}

/// Authenticates the request for `host` (stripping or adding headers in
/// `parts` as the JWT rules say).
pub async fn authenticate(
    cfg: &Config,
    discovery: &dyn Discovery,
    parts: &mut Parts,
    host: &str,
    port: Option<u16>,
) -> Result<Authenticated, Reply> {
    if cfg.authn.is_empty() && cfg.authz.is_empty() {
        return Ok(Authenticated::default());
    }
    // `selector` policies apply by the labels of the service's endpoints.
    let labels = if cfg.authn.needs_endpoint_labels() || cfg.authz.needs_endpoint_labels() {
        discovery
            .endpoints(host, port)
            .into_iter()
            .map(|e| e.labels)
            .collect()
    } else {
        Vec::new()
    };
    let target = Target::new(host, labels);
    let query = parts.uri.query().map(str::to_string);
    match cfg
        .authn
        .authenticate(&target, &mut parts.headers, query.as_deref())
        .await
    {
        Ok(auth) => Ok(Authenticated {
            auth,
            target: Some(target),
        }),
        Err(e) => {
            tracing::debug!(host, error = %e, "request authentication failed");
            let mut r = local_reply(StatusCode::UNAUTHORIZED, &e.to_string());
            let challenge = format!(
                "Bearer realm=\"http://{host}{}\", error=\"invalid_token\"",
                parts.uri.path()
            );
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                r.headers_mut().insert(http::header::WWW_AUTHENTICATE, v);
            }
            Err(r)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::StaticDiscovery;

    fn parts(uri: &str, token: Option<&str>) -> Parts {
        let mut b = http::Request::builder().uri(uri);
        if let Some(t) = token {
            b = b.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        b.body(()).expect("request").into_parts().0
    }

    const JWT: &str = r#"
apiVersion: security.istio.io/v1beta1
kind: RequestAuthentication
metadata: {name: jwt, namespace: ns}
spec:
  jwtRules:
  - issuer: i
    jwks: '{"keys": []}'
"#;

    #[tokio::test]
    async fn without_policies_nothing_is_selected() {
        let cfg = Config::default();
        let mut p = parts("/x", Some("not.a.jwt"));
        let a = authenticate(&cfg, &StaticDiscovery::new(), &mut p, "a.ns", None)
            .await
            .expect("no policies: passes");
        assert!(a.target.is_none());
        assert!(p.headers.contains_key(http::header::AUTHORIZATION));
    }

    #[tokio::test]
    async fn a_request_without_a_token_passes_with_its_target() {
        let (cfg, issues) = Config::from_yaml(JWT, "t.yaml");
        assert!(issues.is_empty(), "{issues:?}");
        let mut p = parts("/x", None);
        let a = authenticate(&cfg, &StaticDiscovery::new(), &mut p, "svc.ns", None)
            .await
            .expect("no token: passes");
        let t = a.target.expect("policies: a target");
        assert_eq!(t.namespace.as_deref(), Some("ns"));
    }

    #[tokio::test]
    async fn a_bad_token_is_a_401_with_a_challenge() {
        let (cfg, _) = Config::from_yaml(JWT, "t.yaml");
        let mut p = parts("/path", Some("not-a-jwt"));
        let Err(r) = authenticate(&cfg, &StaticDiscovery::new(), &mut p, "svc.ns", None).await
        else {
            panic!("a malformed token passed")
        };
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.headers()[http::header::WWW_AUTHENTICATE],
            "Bearer realm=\"http://svc.ns/path\", error=\"invalid_token\""
        );
    }
}
