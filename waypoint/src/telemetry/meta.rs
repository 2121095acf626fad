//! What the request path learns about one request, for its metrics and
//! access log line.

use http::{HeaderValue, Method, Version};

/// What the request path learned about one request, for metrics and the
/// access log; filled as the request goes.
#[derive(Debug, Default)]
pub struct RequestMeta {
    pub method: Method,
    pub path: String,
    pub version: Version,
    pub authority: String,
    pub grpc: bool,
    pub route_name: Option<String>,
    /// The destination service host the request was sent to.
    pub destination_service: Option<String>,
    pub request_id: Option<HeaderValue>,
    pub request_bytes: u64,
    /// A fault delay was injected.
    pub delayed: bool,
    /// Access logging is on under the Telemetry config for this request.
    pub access_log: bool,
}

impl RequestMeta {
    pub fn from_request<B>(req: &http::Request<B>) -> Self {
        let grpc = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/grpc"));
        RequestMeta {
            method: req.method().clone(),
            path: req.uri().path().to_string(),
            version: req.version(),
            authority: req
                .uri()
                .authority()
                .map(|a| a.to_string())
                .or_else(|| {
                    req.headers()
                        .get(http::header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .map(str::to_string)
                })
                .unwrap_or_default(),
            grpc,
            request_id: req.headers().get("x-request-id").cloned(),
            access_log: true,
            ..RequestMeta::default()
        }
    }
}
