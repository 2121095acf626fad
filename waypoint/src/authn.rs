//! RequestAuthentication: JWT validation as Envoy's `jwt_authn` filter
//! does it for Istio. A request without a token passes unauthenticated; a
//! request with a token that fails is refused with `401` and Envoy's text
//! ([`AuthnError`]); a valid token gives the request principal
//! `<iss>/<sub>` and its claims ([`RequestAuth`]).
//!
//! Keys come from `jwks` (inline) or `jwksUri` (http:// or https:// with
//! the system's roots; fetched with a bounded timeout, cached for [`JWKS_REFRESH`] and fetched again on an
//! unknown `kid`, at most every [`JWKS_MIN_REFETCH`]).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use http::{Request, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use mesh_api::security::{JwtRule, RequestAuthenticationSpec};
use serde_json::Value;

use crate::issue::Issue;
use crate::security::{Scope, Target};

/// How long fetched keys are used before they are fetched again (Envoy's
/// `remote_jwks` default cache duration).
pub const JWKS_REFRESH: Duration = Duration::from_secs(600);
/// Floor between fetches forced by unknown `kid`s (so forged tokens cannot
/// make the waypoint hammer the key server).
pub const JWKS_MIN_REFETCH: Duration = Duration::from_secs(5);
/// Istio's default `timeout` of a JWKS fetch.
const JWKS_DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const JWKS_MAX_BYTES: usize = 1 << 20;
/// Envoy's default `clock_skew_seconds`.
const CLOCK_SKEW_SECS: u64 = 60;

/// Why a token was refused; `Display` is Envoy's body of the `401`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthnError {
    #[error("Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections")]
    Malformed,
    #[error("Jwt issuer is not configured")]
    UnknownIssuer,
    #[error("Jwt is expired")]
    Expired,
    #[error("Jwt not yet valid")]
    NotYetValid,
    #[error("Audiences in Jwt are not allowed")]
    AudienceNotAllowed,
    #[error("Jwks doesn't have key to match kid or alg from Jwt")]
    NoMatchingKey,
    #[error("Jwks remote fetch is failed")]
    JwksFetch,
    #[error("Jwt verification fails")]
    VerificationFailed,
}

/// Why a JWKS could not be fetched (logged; the request sees
/// [`AuthnError::JwksFetch`]).
#[derive(Debug, thiserror::Error)]
pub enum JwksFetchError {
    #[error("jwksUri {0:?}: only http:// and https:// are supported")]
    Scheme(String),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("jwksUri {0:?} is not a URL with a host")]
    BadUri(String),
    #[error("connecting: {0}")]
    Connect(#[from] std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("request: {0}")]
    Request(#[from] http::Error),
    #[error("status {0}")]
    Status(http::StatusCode),
    #[error("body too large or unreadable")]
    Body,
    #[error("not a JSON Web Key Set: {0}")]
    Json(#[from] serde_json::Error),
    #[error("timed out")]
    Timeout,
}

/// The outcome of authentication, for authorization.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RequestAuth {
    /// `<iss>/<sub>` of the valid token; `None` without a token.
    pub principal: Option<String>,
    /// The token's claims (`Value::Null` without a token).
    pub claims: Value,
}

impl RequestAuth {
    /// The values of the claim at `path` (`["groups"]`, `["a", "b"]`):
    /// a string, each string of a list, or a scalar's JSON text.
    pub fn claim(&self, path: &[String]) -> Vec<String> {
        let mut v = &self.claims;
        for k in path {
            match v.get(k) {
                Some(x) => v = x,
                None => return Vec::new(),
            }
        }
        claim_strings(v)
    }

    /// `aud` (a string or a list).
    pub fn audiences(&self) -> Vec<String> {
        self.claim(&["aud".to_string()])
    }

    /// `azp`.
    pub fn presenter(&self) -> Vec<String> {
        self.claim(&["azp".to_string()])
    }
}

fn claim_strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().flat_map(claim_strings).collect(),
        Value::Null | Value::Object(_) => Vec::new(),
        other => vec![other.to_string()],
    }
}

/// Where a token is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenLocation {
    Header { name: HeaderName, prefix: String },
    Param(String),
}

impl TokenLocation {
    fn extract(&self, headers: &HeaderMap, query: Option<&str>) -> Option<String> {
        match self {
            TokenLocation::Header { name, prefix } => headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(|v| strip_prefix_ignore_case(v.trim(), prefix))
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty()),
            TokenLocation::Param(p) => query?
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| k == p)
                .map(|(_, v)| v.to_string())
                .filter(|t| !t.is_empty()),
        }
    }
}

fn strip_prefix_ignore_case<'a>(v: &'a str, prefix: &str) -> Option<&'a str> {
    let head = v.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &v[prefix.len()..])
}

/// Keys of one issuer.
#[derive(Clone, Debug)]
pub enum KeySource {
    Inline(Arc<Vec<Jwk>>),
    Remote(Arc<RemoteJwks>),
    /// No usable keys (reported at compile time): every token fails.
    Missing,
}

/// A `jwksUri` with its cached keys.
#[derive(Debug)]
pub struct RemoteJwks {
    pub uri: String,
    timeout: Duration,
    cache: tokio::sync::Mutex<Option<FetchedKeys>>,
    /// For https://; the system's roots unless set before the first fetch.
    tls: OnceLock<Arc<rustls::ClientConfig>>,
}

#[derive(Debug)]
struct FetchedKeys {
    keys: Arc<Vec<Jwk>>,
    fetched: Instant,
}

impl RemoteJwks {
    pub fn new(uri: &str, timeout: Duration) -> Self {
        RemoteJwks {
            uri: uri.to_string(),
            timeout,
            cache: tokio::sync::Mutex::new(None),
            tls: OnceLock::new(),
        }
    }

    fn tls(&self) -> Result<Arc<rustls::ClientConfig>, JwksFetchError> {
        if let Some(c) = self.tls.get() {
            return Ok(c.clone());
        }
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::debug!(error = %e, "loading the system's root certificates");
        }
        roots.add_parsable_certificates(native.certs);
        let c = tls_client_config(roots)?;
        Ok(self.tls.get_or_init(|| c).clone())
    }

    /// Cached keys, fetched when there are none, when they are older than
    /// [`JWKS_REFRESH`], or (`refresh`) when a `kid` was not found. A failed
    /// fetch keeps the keys it had.
    async fn keys(&self, refresh: bool) -> Result<Arc<Vec<Jwk>>, AuthnError> {
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.as_ref() {
            let age = c.fetched.elapsed();
            let fresh = if refresh {
                age < JWKS_MIN_REFETCH
            } else {
                age < JWKS_REFRESH
            };
            if fresh {
                return Ok(c.keys.clone());
            }
        }
        let fetch = async {
            let tls = if self.uri.starts_with("https://") {
                Some(self.tls()?)
            } else {
                None
            };
            fetch_jwks(&self.uri, tls).await
        };
        match tokio::time::timeout(self.timeout, fetch).await {
            Ok(Ok(keys)) => {
                let keys = Arc::new(keys);
                *cache = Some(FetchedKeys {
                    keys: keys.clone(),
                    fetched: Instant::now(),
                });
                Ok(keys)
            }
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e,
                    _ => JwksFetchError::Timeout,
                };
                tracing::warn!(uri = %self.uri, error = %why, "JWKS fetch failed");
                match cache.as_mut() {
                    Some(c) => {
                        // Keep serving the old keys; try again after the floor.
                        c.fetched = Instant::now()
                            .checked_sub(JWKS_REFRESH.saturating_sub(JWKS_MIN_REFETCH))
                            .unwrap_or_else(Instant::now);
                        Ok(c.keys.clone())
                    }
                    None => Err(AuthnError::JwksFetch),
                }
            }
        }
    }
}

/// A TLS client (ring, HTTP/1.1) trusting `roots`.
pub fn tls_client_config(
    roots: rustls::RootCertStore,
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut c = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(c))
}

/// GET `uri` and parse it as a JWKS; https:// needs `tls`.
pub async fn fetch_jwks(
    uri: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<Vec<Jwk>, JwksFetchError> {
    let parsed: Uri = uri
        .parse()
        .map_err(|_| JwksFetchError::BadUri(uri.to_string()))?;
    let authority = parsed
        .authority()
        .ok_or_else(|| JwksFetchError::BadUri(uri.to_string()))?
        .clone();
    let host = authority.host().trim_matches(['[', ']']).to_string();
    let default_port = match (parsed.scheme_str(), &tls) {
        (Some("http"), _) => 80,
        (Some("https"), Some(_)) => 443,
        _ => return Err(JwksFetchError::Scheme(uri.to_string())),
    };
    let port = authority.port_u16().unwrap_or(default_port);
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
    let mut sender = match tls.filter(|_| default_port == 443) {
        Some(c) => {
            let name = rustls::pki_types::ServerName::try_from(host)
                .map_err(|_| JwksFetchError::BadUri(uri.to_string()))?;
            let stream = tokio_rustls::TlsConnector::from(c)
                .connect(name, tcp)
                .await?;
            handshake(stream).await?
        }
        None => handshake(tcp).await?,
    };
    let path = parsed.path_and_query().map_or("/", |p| p.as_str());
    let req = Request::get(path)
        .header(http::header::HOST, authority.as_str())
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<bytes::Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    if !resp.status().is_success() {
        return Err(JwksFetchError::Status(resp.status()));
    }
    let body = Limited::new(resp.into_body(), JWKS_MAX_BYTES)
        .collect()
        .await
        .map_err(|_| JwksFetchError::Body)?
        .to_bytes();
    Ok(parse_jwks(&serde_json::from_slice(&body)?))
}

async fn handshake<S>(
    io: S,
) -> Result<hyper::client::conn::http1::SendRequest<Empty<bytes::Bytes>>, hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// The usable keys of a JWKS; keys of types the library does not know
/// are skipped (as Envoy skips them) rather than failing the set.
pub fn parse_jwks(v: &Value) -> Vec<Jwk> {
    v.get("keys")
        .and_then(Value::as_array)
        .map(|keys| {
            keys.iter()
                .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// One `jwtRules[i]`.
#[derive(Clone, Debug)]
pub struct JwtProvider {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub keys: KeySource,
    pub locations: Vec<TokenLocation>,
    pub forward_original_token: bool,
    pub output_payload_to_header: Option<HeaderName>,
    pub output_claim_to_headers: Vec<(HeaderName, String)>,
}

impl JwtProvider {
    pub fn compile(resource: &str, path: &str, r: &JwtRule, issues: &mut Vec<Issue>) -> Self {
        let mut header_name = |field: &str, h: &str| match HeaderName::from_bytes(h.as_bytes()) {
            Ok(n) => Some(n),
            Err(_) => {
                issues.push(Issue::new(
                    resource,
                    &format!("{path}.{field}"),
                    format!("{h:?} is not a header name"),
                ));
                None
            }
        };
        let mut locations: Vec<TokenLocation> = r
            .from_headers
            .iter()
            .filter_map(|h| {
                Some(TokenLocation::Header {
                    name: header_name("fromHeaders", h.name.as_deref()?)?,
                    prefix: h.prefix.clone().unwrap_or_default(),
                })
            })
            .collect();
        locations.extend(r.from_params.iter().cloned().map(TokenLocation::Param));
        if r.from_headers.is_empty() && r.from_params.is_empty() && r.from_cookies.is_empty() {
            locations = vec![
                TokenLocation::Header {
                    name: AUTHORIZATION,
                    prefix: "Bearer ".to_string(),
                },
                TokenLocation::Param("access_token".to_string()),
            ];
        }
        let output_payload_to_header = r
            .output_payload_to_header
            .as_deref()
            .and_then(|h| header_name("outputPayloadToHeader", h));
        let output_claim_to_headers = r
            .output_claim_to_headers
            .iter()
            .filter_map(|c| {
                let h = header_name("outputClaimToHeaders", c.header.as_deref()?)?;
                Some((h, c.claim.clone()?))
            })
            .collect();
        if !r.from_cookies.is_empty() {
            issues.push(Issue::new(
                resource,
                &format!("{path}.fromCookies"),
                "reading JWTs from cookies is not supported by the waypoint; ignored",
            ));
        }
        let keys = match (&r.jwks, &r.jwks_uri) {
            (Some(text), _) => match serde_json::from_str::<Value>(text) {
                Ok(v) => KeySource::Inline(Arc::new(parse_jwks(&v))),
                Err(e) => {
                    issues.push(Issue::new(
                        resource,
                        &format!("{path}.jwks"),
                        format!("not JSON ({e}); tokens of this issuer fail verification"),
                    ));
                    KeySource::Missing
                }
            },
            (None, Some(uri)) if uri.starts_with("http://") || uri.starts_with("https://") => {
                let timeout = r
                    .timeout
                    .as_deref()
                    .and_then(|t| mesh_api::util::parse_duration(t).ok())
                    .unwrap_or(JWKS_DEFAULT_TIMEOUT);
                KeySource::Remote(Arc::new(RemoteJwks::new(uri, timeout)))
            }
            (None, Some(uri)) => {
                issues.push(Issue::new(
                    resource,
                    &format!("{path}.jwksUri"),
                    format!("{uri:?} is not an http(s) URL; tokens of this issuer fail"),
                ));
                KeySource::Missing
            }
            (None, None) => {
                issues.push(Issue::new(
                    resource,
                    &format!("{path}.jwksUri"),
                    "neither jwks nor jwksUri (OpenID discovery is not supported); tokens of this issuer fail",
                ));
                KeySource::Missing
            }
        };
        JwtProvider {
            issuer: r.issuer.clone().unwrap_or_default(),
            audiences: r.audiences.clone(),
            keys,
            locations,
            forward_original_token: r.forward_original_token.unwrap_or(false),
            output_payload_to_header,
            output_claim_to_headers,
        }
    }

    /// Checks one token already decoded (unverified) into `claims`, in
    /// Envoy's order: time, audiences, then the signature.
    async fn verify(&self, token: &str, header: &Header, claims: &Value) -> Result<(), AuthnError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if let Some(exp) = claims.get("exp").and_then(Value::as_f64) {
            if exp + (CLOCK_SKEW_SECS as f64) < now as f64 {
                return Err(AuthnError::Expired);
            }
        }
        if let Some(nbf) = claims.get("nbf").and_then(Value::as_f64) {
            if nbf > (now + CLOCK_SKEW_SECS) as f64 {
                return Err(AuthnError::NotYetValid);
            }
        }
        if !self.audiences.is_empty() {
            let token_auds = RequestAuth {
                principal: None,
                claims: claims.clone(),
            }
            .audiences();
            let allowed = token_auds.iter().any(|a| {
                self.audiences
                    .iter()
                    .any(|b| normalize_audience(a) == normalize_audience(b))
            });
            if !allowed {
                return Err(AuthnError::AudienceNotAllowed);
            }
        }
        let keys = match &self.keys {
            KeySource::Inline(k) => k.clone(),
            KeySource::Remote(r) => r.keys(false).await?,
            KeySource::Missing => return Err(AuthnError::VerificationFailed),
        };
        match verify_with(&keys, token, header) {
            Err(AuthnError::NoMatchingKey) => match &self.keys {
                // A new key may have been published since the last fetch.
                KeySource::Remote(r) => verify_with(&r.keys(true).await?, token, header),
                _ => Err(AuthnError::NoMatchingKey),
            },
            other => other,
        }
    }
}

/// Envoy compares audiences without scheme and trailing slash.
fn normalize_audience(a: &str) -> &str {
    let a = a
        .strip_prefix("http://")
        .or_else(|| a.strip_prefix("https://"))
        .unwrap_or(a);
    a.strip_suffix('/').unwrap_or(a)
}

/// Verifies the signature with the keys whose `kid` (when the token has
/// one) and `alg` (when the key has one) fit the token.
fn verify_with(keys: &[Jwk], token: &str, header: &Header) -> Result<(), AuthnError> {
    let alg_name = format!("{:?}", header.alg);
    let candidates: Vec<&Jwk> = keys
        .iter()
        .filter(|k| header.kid.is_none() || k.common.key_id == header.kid)
        .filter(|k| {
            k.common
                .key_algorithm
                .is_none_or(|a| format!("{a:?}") == alg_name)
        })
        .collect();
    if candidates.is_empty() {
        return Err(AuthnError::NoMatchingKey);
    }
    let mut validation = Validation::new(header.alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    for k in candidates {
        let Ok(key) = DecodingKey::from_jwk(k) else {
            continue;
        };
        if jsonwebtoken::decode::<Value>(token, &key, &validation).is_ok() {
            return Ok(());
        }
    }
    Err(AuthnError::VerificationFailed)
}

/// Decodes header and claims without checking anything.
fn decode_unverified(token: &str) -> Result<(Header, Value), AuthnError> {
    if token.split('.').count() != 3 {
        return Err(AuthnError::Malformed);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| AuthnError::Malformed)?;
    let mut v = Validation::new(Algorithm::RS256);
    v.insecure_disable_signature_validation();
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<Value>(token, &DecodingKey::from_secret(&[]), &v)
        .map_err(|_| AuthnError::Malformed)?
        .claims;
    Ok((header, claims))
}

/// One compiled RequestAuthentication.
#[derive(Clone, Debug)]
pub struct RequestAuthnPolicy {
    pub resource: String,
    pub namespace: String,
    pub scope: Scope,
    pub providers: Vec<JwtProvider>,
}

/// All RequestAuthentications of the config.
#[derive(Clone, Debug, Default)]
pub struct Authenticator {
    pub policies: Vec<RequestAuthnPolicy>,
}

impl Authenticator {
    pub fn add(
        &mut self,
        resource: &str,
        namespace: &str,
        spec: &RequestAuthenticationSpec,
        issues: &mut Vec<Issue>,
    ) {
        let scope = Scope::compile(
            resource,
            namespace,
            &spec.selector,
            &spec.target_ref,
            &spec.target_refs,
            issues,
        );
        let providers = spec
            .jwt_rules
            .iter()
            .enumerate()
            .map(|(i, r)| JwtProvider::compile(resource, &format!("spec.jwtRules[{i}]"), r, issues))
            .collect();
        self.policies.push(RequestAuthnPolicy {
            resource: resource.to_string(),
            namespace: namespace.to_string(),
            scope,
            providers,
        });
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    pub fn needs_endpoint_labels(&self) -> bool {
        self.policies
            .iter()
            .any(|p| p.scope.needs_endpoint_labels())
    }

    /// Makes https:// `jwksUri`s trust `tls` instead of the system's roots
    /// (for a private issuer; tests). Only before their first fetch.
    pub fn use_tls(&self, tls: Arc<rustls::ClientConfig>) {
        for p in self.policies.iter().flat_map(|p| &p.providers) {
            if let KeySource::Remote(r) = &p.keys {
                let _ = r.tls.set(tls.clone());
            }
        }
    }

    /// Authenticates a request for `target`: every token found in the
    /// locations of the applicable rules must be valid for a rule of its
    /// issuer read from that location. Strips tokens not to be forwarded
    /// and adds the payload/claim headers.
    pub async fn authenticate(
        &self,
        target: &Target,
        headers: &mut HeaderMap,
        query: Option<&str>,
    ) -> Result<RequestAuth, AuthnError> {
        let providers: Vec<&JwtProvider> = self
            .policies
            .iter()
            .filter(|p| p.scope.applies(&p.namespace, target))
            .flat_map(|p| &p.providers)
            .collect();
        let mut seen: Vec<(&TokenLocation, String)> = Vec::new();
        for p in &providers {
            for l in &p.locations {
                if seen.iter().any(|(s, _)| *s == l) {
                    continue;
                }
                if let Some(t) = l.extract(headers, query) {
                    seen.push((l, t));
                }
            }
        }
        let mut auth = RequestAuth::default();
        // Output headers are the waypoint's to set: a client must not be
        // able to send them itself.
        for p in &providers {
            if let Some(h) = &p.output_payload_to_header {
                headers.remove(h);
            }
            for (h, _) in &p.output_claim_to_headers {
                headers.remove(h);
            }
        }
        let mut strip: Vec<HeaderName> = Vec::new();
        let mut add: Vec<(HeaderName, HeaderValue)> = Vec::new();
        for (location, token) in &seen {
            let (header, claims) = decode_unverified(token)?;
            let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
            let provider = providers
                .iter()
                .find(|p| p.issuer == iss && p.locations.contains(location))
                .ok_or(AuthnError::UnknownIssuer)?;
            provider.verify(token, &header, &claims).await?;
            if let (TokenLocation::Header { name, .. }, false) =
                (location, provider.forward_original_token)
            {
                strip.push(name.clone());
            }
            if let Some(h) = &provider.output_payload_to_header {
                if let Some(v) = token
                    .split('.')
                    .nth(1)
                    .and_then(|p| HeaderValue::from_str(p).ok())
                {
                    add.push((h.clone(), v));
                }
            }
            for (h, claim) in &provider.output_claim_to_headers {
                let values = claim_strings(claims.get(claim).unwrap_or(&Value::Null));
                if let Ok(v) = HeaderValue::from_str(&values.join(",")) {
                    add.push((h.clone(), v));
                }
            }
            if auth.principal.is_none() {
                let sub = claims.get("sub").and_then(Value::as_str).unwrap_or("");
                auth = RequestAuth {
                    principal: Some(format!("{iss}/{sub}")),
                    claims,
                };
            }
        }
        for h in strip {
            headers.remove(h);
        }
        for (h, v) in add {
            headers.insert(h, v);
        }
        Ok(auth)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey};
    use serde_json::json;

    /// An ES256 key pair: the signing key and its public JWK.
    fn es256(kid: &str) -> (EncodingKey, Value) {
        use base64::Engine;
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let raw = kp.public_key_raw();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let jwk = json!({"kty": "EC", "crv": "P-256", "alg": "ES256", "kid": kid,
            "x": b64.encode(&raw[1..33]), "y": b64.encode(&raw[33..65])});
        let key = EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).expect("pem");
        (key, jwk)
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs()
    }

    fn sign(key: &EncodingKey, kid: &str, claims: Value) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(kid.to_string());
        encode(&h, &claims, key).expect("sign")
    }

    fn authenticator(rule: Value) -> Authenticator {
        let spec: RequestAuthenticationSpec =
            serde_json::from_value(json!({ "jwtRules": [rule] })).expect("spec");
        let mut a = Authenticator::default();
        let mut issues = Vec::new();
        a.add("RequestAuthentication ns/ra", "ns", &spec, &mut issues);
        assert!(issues.is_empty(), "{issues:?}");
        a
    }

    fn bearer(t: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {t}")).expect("header"),
        );
        h
    }

    async fn run(
        a: &Authenticator,
        h: &mut HeaderMap,
        q: Option<&str>,
    ) -> Result<RequestAuth, AuthnError> {
        a.authenticate(&Target::new("svc.ns.svc.cluster.local", vec![]), h, q)
            .await
    }

    #[tokio::test]
    async fn es256_token_checks_in_envoys_order() {
        let (key, jwk) = es256("k1");
        let (other_key, _) = es256("k1");
        let a = authenticator(
            json!({"issuer": "iss-1", "audiences": ["https://api.example/"],
            "jwks": json!({"keys": [jwk]}).to_string()}),
        );
        let good = json!({"iss": "iss-1", "sub": "alice", "aud": "api.example", "exp": now() + 600, "groups": ["g1", "g2"]});
        let mut h = bearer(&sign(&key, "k1", good.clone()));
        let auth = run(&a, &mut h, None).await.expect("valid");
        assert_eq!(auth.principal.as_deref(), Some("iss-1/alice"));
        assert_eq!(auth.claim(&["groups".into()]), vec!["g1", "g2"]);
        assert!(!h.contains_key(AUTHORIZATION), "token stripped by default");

        let cases = [
            (
                json!({"iss": "iss-1", "sub": "a", "aud": "api.example", "exp": now() - 120}),
                &key,
                "k1",
                AuthnError::Expired,
            ),
            (
                json!({"iss": "iss-1", "sub": "a", "aud": "api.example", "nbf": now() + 600}),
                &key,
                "k1",
                AuthnError::NotYetValid,
            ),
            (
                json!({"iss": "other", "sub": "a", "aud": "api.example"}),
                &key,
                "k1",
                AuthnError::UnknownIssuer,
            ),
            (
                json!({"iss": "iss-1", "sub": "a", "aud": "nope"}),
                &key,
                "k1",
                AuthnError::AudienceNotAllowed,
            ),
            (
                good.clone(),
                &other_key,
                "k1",
                AuthnError::VerificationFailed,
            ),
            (good.clone(), &key, "k2", AuthnError::NoMatchingKey),
        ];
        for (claims, k, kid, want) in cases {
            let mut h = bearer(&sign(k, kid, claims.clone()));
            assert_eq!(run(&a, &mut h, None).await, Err(want.clone()), "{claims}");
        }
        let mut h = bearer("not-a-jwt");
        assert_eq!(run(&a, &mut h, None).await, Err(AuthnError::Malformed));
        assert_eq!(AuthnError::Expired.to_string(), "Jwt is expired");
    }

    #[tokio::test]
    async fn no_token_passes_and_locations_are_honoured() {
        let (key, jwk) = es256("k1");
        let jwks = json!({"keys": [jwk]}).to_string();
        let a = authenticator(
            json!({"issuer": "i", "jwks": jwks, "forwardOriginalToken": true,
            "outputPayloadToHeader": "x-jwt-payload"}),
        );
        let auth = run(&a, &mut HeaderMap::new(), None)
            .await
            .expect("no token");
        assert_eq!(auth, RequestAuth::default());
        let t = sign(&key, "k1", json!({"iss": "i", "sub": "s"}));
        // The default param location.
        let q = format!("a=1&access_token={t}");
        let auth = run(&a, &mut HeaderMap::new(), Some(&q))
            .await
            .expect("param");
        assert_eq!(auth.principal.as_deref(), Some("i/s"));
        let mut h = bearer(&t);
        run(&a, &mut h, None).await.expect("header");
        assert!(
            h.contains_key(AUTHORIZATION),
            "forwardOriginalToken keeps it"
        );
        assert_eq!(
            h.get("x-jwt-payload").and_then(|v| v.to_str().ok()),
            t.split('.').nth(1)
        );

        // Custom header: the default Authorization is not read any more.
        let a = authenticator(json!({"issuer": "i", "jwks": jwks,
            "fromHeaders": [{"name": "x-token", "prefix": "Tok "}]}));
        let mut h = bearer(&t);
        assert_eq!(
            run(&a, &mut h, None).await.expect("ignored").principal,
            None
        );
        let mut h = HeaderMap::new();
        h.insert(
            "x-token",
            HeaderValue::from_str(&format!("Tok {t}")).expect("v"),
        );
        let auth = run(&a, &mut h, None).await.expect("custom header");
        assert_eq!(auth.principal.as_deref(), Some("i/s"));
        assert!(!h.contains_key("x-token"));
    }

    #[test]
    fn claims_paths_and_durations() {
        let auth = RequestAuth {
            principal: None,
            claims: json!({"a": {"b": "deep"}, "n": 3, "t": true, "aud": ["x", "y"], "azp": "p"}),
        };
        assert_eq!(auth.claim(&["a".into(), "b".into()]), vec!["deep"]);
        assert_eq!(auth.claim(&["n".into()]), vec!["3"]);
        assert_eq!(auth.claim(&["t".into()]), vec!["true"]);
        assert!(auth.claim(&["a".into()]).is_empty());
        assert_eq!(auth.audiences(), vec!["x", "y"]);
        assert_eq!(auth.presenter(), vec!["p"]);
        assert_eq!(
            mesh_api::util::parse_duration("1.5s").ok(),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            mesh_api::util::parse_duration("300ms").ok(),
            Some(Duration::from_millis(300))
        );
        assert_eq!(mesh_api::util::parse_duration("x").ok(), None);
        assert_eq!(normalize_audience("https://a.b/"), "a.b");
    }
}
