//! The ingress gateway role of the waypoint binary.
//!
//! Istio `Gateway` resources (networking.istio.io v1/v1beta1/v1alpha3)
//! whose `selector` labels are all on the gateway workload are compiled
//! into [`Listener`]s, one per distinct server `port.number`:
//!
//! * `HTTP`, `HTTP2`, `GRPC` servers are served as plain HTTP (HTTP/1.1 or
//!   HTTP/2 prior knowledge); `HTTPS` servers with `tls.mode: SIMPLE` are
//!   TLS-terminated (SNI picks among the certificates of the port's
//!   servers, ALPN `h2` and `http/1.1`). Other protocols and TLS modes are
//!   [`Issue`]s naming the field, and the server is left out.
//! * Certificates: `credentialName: X` is read from the credentials
//!   directory as `<dir>/X/tls.crt` and `<dir>/X/tls.key` (PEM), the layout
//!   of a Kubernetes `kubernetes.io/tls` Secret mounted as a volume;
//!   `serverCertificate` + `privateKey` are read as file paths.
//! * `tls.httpsRedirect: true` answers every request for the server's hosts
//!   with `301` to `https://` the same host (port dropped when it is 80)
//!   and path, as Envoy's `require_tls: ALL` does.
//! * Routing: VirtualServices whose `gateways` name the Gateway (`name`
//!   from its namespace, or `ns/name`) are compiled with
//!   [`Binding::Gateway`] (so `match[].gateways` apply), their `hosts`
//!   intersected with the server's `hosts` (`*`, `*.example.com`,
//!   `ns/host`, `./host`, `*/host`; the namespace part restricts which
//!   VirtualServices bind). A request whose host no server of the port
//!   allows, or that no bound VirtualService routes, gets `404`; the rest
//!   goes through the same [`Waypoint`] engine as the mesh.
//!
//! * Policies: RequestAuthentications, AuthorizationPolicies and local
//!   rate limit EnvoyFilters that select the gateway workload apply to
//!   every request of the gateway, as in Istio: the policy is in the root
//!   namespace or the workload's own, and its `selector` /
//!   `workloadSelector` labels (if any) are all on the workload. Policies
//!   with `targetRef(s)` name Services or Gateway API Gateways, not this
//!   workload, and do not apply; neither do the destination-scoped
//!   policies of other namespaces (they are the destination waypoint's).
//!   Rate limit patches apply with `match.context` `GATEWAY` or `ANY`.
//! * Every listener shares one [`Waypoint`] engine ([`Gateway`]): one
//!   metrics registry (one admin server), and pools and outlier state per
//!   destination across ports; each listener passes its own routes and
//!   policies per request ([`Waypoint::handle_with`]).
//!
//! Simplifications: one route table per port (the hosts of all servers on
//! it), not one per HTTPS server; rate limit buckets are per port (as an
//! Envoy filter instance per listener has its own).
//!
//! Three modules: [`servers`] (hosts, servers, listeners and their
//! certificates by SNI), [`compile`] (Gateways, the VirtualServices bound
//! to them and the policies selecting the workload, into listeners) and
//! [`serve`] (the listeners on one engine).
//!
//! [`Issue`]: crate::issue::Issue
//! [`Binding::Gateway`]: crate::routes::Binding::Gateway
//! [`Waypoint`]: crate::engine::Waypoint
//! [`Waypoint::handle_with`]: crate::engine::Waypoint::handle_with

pub mod compile;
pub mod serve;
pub mod servers;

pub use self::compile::{GatewayConfig, GatewayWorkload};
pub use self::serve::{Gateway, ListenerService};
pub use self::servers::{
    intersect_hosts, load_certificate, CredentialError, GatewayServer, Listener, ListenerProtocol,
    ServerHost,
};
