//! The downstream request head, read once for the stages: the authority
//! (from the URI, else `Host`), scheme, path and query.

use http::header;
use http::request::Parts;
use http::StatusCode;

use super::reply::Reply;
use crate::body::local_reply;
use crate::peer::Peer;
use crate::routes::{split_host_port, RequestInfo};

/// The request head and what the stages read from it.
pub struct Head {
    pub parts: Parts,
    /// `host[:port]`.
    pub authority: String,
    pub scheme: String,
    pub path: String,
    pub query: Option<String>,
}

impl Head {
    /// `400 missing host` when neither the URI nor `Host` names one.
    pub fn read(parts: Parts) -> Result<Head, Reply> {
        let authority = parts.uri.authority().map(|a| a.to_string()).or_else(|| {
            parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        });
        let Some(authority) = authority else {
            return Err(local_reply(StatusCode::BAD_REQUEST, "missing host"));
        };
        Ok(Head {
            scheme: parts.uri.scheme_str().unwrap_or("http").to_string(),
            path: parts.uri.path().to_string(),
            query: parts.uri.query().map(str::to_string),
            authority,
            parts,
        })
    }

    /// The authority's host and port.
    pub fn host_port(&self) -> (&str, Option<u16>) {
        split_host_port(&self.authority)
    }

    /// The request as route matching sees it.
    pub fn info<'a>(&'a self, peer: &'a Peer) -> RequestInfo<'a> {
        RequestInfo {
            method: &self.parts.method,
            path: &self.path,
            query: self.query.as_deref(),
            scheme: &self.scheme,
            authority: &self.authority,
            port: self.host_port().1,
            headers: &self.parts.headers,
            source_labels: &peer.labels,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, host: Option<&str>) -> Parts {
        let mut b = http::Request::builder().uri(uri);
        if let Some(h) = host {
            b = b.header(header::HOST, h);
        }
        b.body(()).expect("request").into_parts().0
    }

    #[test]
    fn authority_from_the_uri_else_host() {
        let h = Head::read(parts("http://a.b:8080/p?q=1", Some("other"))).expect("head");
        assert_eq!(h.authority, "a.b:8080");
        assert_eq!(h.host_port(), ("a.b", Some(8080)));
        assert_eq!((h.scheme.as_str(), h.path.as_str()), ("http", "/p"));
        assert_eq!(h.query.as_deref(), Some("q=1"));
        let h = Head::read(parts("/x", Some("reviews:9080"))).expect("head");
        assert_eq!(h.authority, "reviews:9080");
        assert_eq!(h.scheme, "http");
        assert_eq!(h.query, None);
    }

    #[test]
    fn no_host_is_a_400() {
        let Err(r) = Head::read(parts("/x", None)) else {
            panic!("a head without a host")
        };
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }
}
