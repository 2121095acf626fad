//! L7 security through the waypoint, end to end on the testbed: the seed's
//! RequestAuthentication + `require-jwt` AuthorizationPolicy on
//! productpage (12-000-multi-jwt-auth.yaml) with tokens the test signs
//! itself, and L7 authorization on the caller's SPIFFE identity as the
//! waypoint learns it from the HBONE tunnel.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mesh_tests::bookinfo::{url, Backend, Bookinfo};
use mesh_tests::http_app::HttpLoadReport;
use mesh_tests::seed;
use serde_json::json;

const ISSUER: &str = "testing@secure.istio.io";
const KID: &str = "rsa-test-1";

fn fixture(name: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../waypoint/tests/fixtures")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn token(key: &EncodingKey, iss: &str, exp: u64) -> String {
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some(KID.into());
    let claims = json!({"iss": iss, "sub": iss, "exp": exp, "iat": now() - 10});
    jsonwebtoken::encode(&h, &claims, key).expect("sign")
}

fn status(r: &HttpLoadReport, code: u16) -> u64 {
    r.by_status.get(&code).copied().unwrap_or(0)
}

/// Seed 12 with the issuer's keys inline (the seed's jwksUri is on the
/// internet, which tests never reach): a valid token passes, expired,
/// forged and wrong-issuer tokens get 401, no token gets 403 from
/// `require-jwt`; details (not selected) stays open.
#[test]
fn seed_jwt_auth_on_productpage() {
    let jwks = format!("{{\"keys\":[{}]}}", fixture("jwt-rsa-2048.jwk.json"));
    let l7 = seed("12-").replace(
        "    jwksUri: \"https://raw.githubusercontent.com/istio/istio/release-1.19/security/tools/jwt/samples/jwks.json\"",
        &format!("    jwks: '{}'", jwks.replace('\n', "")),
    );
    assert!(
        l7.contains("jwks: '"),
        "the seed's jwksUri line changed: {l7}"
    );
    let backends = [
        Backend::new("productpage", "v1", "node-a"),
        Backend::new("details", "v1", "node-b"),
    ];
    let mut b = Bookinfo::start(&backends).expect("bookinfo testbed (needs root)");
    b.start_waypoint(&l7).expect("waypoint");

    let key = EncodingKey::from_rsa_pem(fixture("jwt-rsa-2048.pem").as_bytes()).expect("key");
    let valid = token(&key, ISSUER, now() + 600);
    let expired = token(&key, ISSUER, now() - 600);
    let wrong_issuer = token(&key, "someone@else.example", now() + 600);
    // The valid token's header and payload under another signature.
    let forged = {
        let other = token(&key, "x", now() + 600);
        let sig = other.rsplit('.').next().unwrap_or("");
        let (head, _) = valid.rsplit_once('.').expect("jwt");
        format!("{head}.{sig}")
    };
    let page = url("productpage", "/productpage");
    let call = |tok: Option<&str>| {
        let h = tok.map(|t| format!("authorization: Bearer {t}"));
        let headers: Vec<&str> = h.iter().map(String::as_str).collect();
        b.load(&page, 5, 1, &headers).expect("load")
    };
    let ok = call(Some(&valid));
    assert_eq!(status(&ok, 200), 5, "valid token: {ok:?}");
    // The token is not forwarded (forwardOriginalToken defaults to false).
    assert!(
        ok.bodies.iter().all(|body| !body.contains("authorization")),
        "{ok:?}"
    );
    for (what, tok, body) in [
        ("expired", &expired, "Jwt is expired"),
        ("forged", &forged, "Jwt verification fails"),
        (
            "wrong issuer",
            &wrong_issuer,
            "Jwt issuer is not configured",
        ),
    ] {
        let r = call(Some(tok));
        assert_eq!(status(&r, 401), 5, "{what}: {r:?}");
        assert!(r.bodies.iter().all(|b| b.contains(body)), "{what}: {r:?}");
    }
    let none = call(None);
    assert_eq!(status(&none, 403), 5, "no token, require-jwt: {none:?}");
    assert!(
        none.bodies
            .iter()
            .all(|b| b.contains("RBAC: access denied")),
        "{none:?}"
    );
    // details is not selected by either policy.
    let details = b
        .load(&url("details", "/details"), 5, 1, &[])
        .expect("load");
    assert_eq!(status(&details, 200), 5, "{details:?}");
    b.stop_waypoint().expect("stop");
}

/// L7 AuthorizationPolicy on the caller's mesh identity (from the HBONE
/// tunnel the client's node proxy opened with the client's certificate):
/// the client (sa `client`) may GET `/api/*` of reviews but not reach
/// `/admin`; a DENY on a header beats the ALLOW.
#[test]
fn l7_authorization_by_identity_method_path_and_header() {
    let l7 = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-viewer}
spec:
  selector: {matchLabels: {app: reviews}}
  action: ALLOW
  rules:
  - from:
    - source: {principals: ["cluster.local/ns/bookinfo/sa/client"]}
    to:
    - operation: {methods: [GET], paths: ["/api/*"]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-deny-debug}
spec:
  selector: {matchLabels: {app: reviews}}
  action: DENY
  rules:
  - when:
    - key: request.headers[x-debug]
      values: ["1"]
"#;
    let mut b = Bookinfo::start(&[Backend::new("reviews", "v1", "node-b")])
        .expect("bookinfo testbed (needs root)");
    b.start_waypoint(l7).expect("waypoint");
    let get = |b: &Bookinfo, path: &str, headers: &[&str]| {
        let r = b.load(&url("reviews", path), 3, 1, headers).expect("load");
        (r.by_status.keys().copied().collect::<Vec<_>>(), r)
    };
    assert_eq!(get(&b, "/api/reviews/1", &[]).0, [200]);
    assert_eq!(get(&b, "/admin", &[]).0, [403]);
    assert_eq!(get(&b, "/api/reviews/1", &["x-debug: 1"]).0, [403]);
    assert_eq!(get(&b, "/api/reviews/1", &["x-debug: 0"]).0, [200]);
    // Another identity: the same ALLOW no longer matches.
    let other = l7.replace("sa/client", "sa/bookinfo-productpage");
    b.start_waypoint(&other).expect("waypoint");
    assert_eq!(get(&b, "/api/reviews/1", &[]).0, [403]);
}
