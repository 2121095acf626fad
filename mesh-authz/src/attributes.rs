//! What a connection (L4) or a request (L7) is evaluated against.

use std::net::IpAddr;

use http::HeaderMap;
use mesh_identity::Identity;

/// The L4 attributes of a connection that a rule is evaluated against.
pub struct Peer<'a> {
    pub identity: Option<&'a Identity>,
    /// `td/ns/x/sa/y`, empty for plaintext.
    pub principal: String,
    /// The identity's namespace, empty for plaintext.
    pub namespace: &'a str,
    pub src_ip: IpAddr,
    pub dst_ip: IpAddr,
    pub dst_port: u16,
}

impl<'a> Peer<'a> {
    /// A peer with `identity` (`None`: plaintext), its principal and namespace.
    pub fn new(
        identity: Option<&'a Identity>,
        src_ip: IpAddr,
        dst_ip: IpAddr,
        dst_port: u16,
    ) -> Self {
        Peer {
            identity,
            principal: identity.map(Identity::principal).unwrap_or_default(),
            namespace: identity.map_or("", |i| i.namespace.as_str()),
            src_ip,
            dst_ip,
            dst_port,
        }
    }
}

/// The claims of a request's validated token, looked up by path
/// (`["groups"]`, `["org", "team"]`): a string, each string of a list, or a
/// scalar's JSON text; empty when absent or without a token.
pub trait Claims {
    fn claim(&self, path: &[String]) -> Vec<String>;
}

/// The HTTP attributes of a request (what the waypoint sees beyond the
/// connection).
pub struct HttpAttributes<'a> {
    pub method: &'a str,
    /// Without the query; normalized for matching by the engine.
    pub path: &'a str,
    /// The host the request names, without port.
    pub host: &'a str,
    pub headers: &'a HeaderMap,
    /// `<iss>/<sub>` of the request's valid token, empty without one.
    pub request_principal: &'a str,
    pub claims: &'a dyn Claims,
}

/// All that is known of what is being authorized: the connection, and the
/// request when it is seen (`None` at L4).
pub struct Attributes<'a> {
    pub peer: Peer<'a>,
    pub http: Option<HttpAttributes<'a>>,
}

impl<'a> From<Peer<'a>> for Attributes<'a> {
    fn from(peer: Peer<'a>) -> Self {
        Attributes { peer, http: None }
    }
}
