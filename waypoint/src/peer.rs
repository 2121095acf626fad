//! Who is calling: the downstream end of one connection, as the request
//! path's stages (authorization, routing by source labels, metrics) see it.

use std::net::SocketAddr;

use crate::discovery::Labels;
use crate::telemetry::SourceInfo;

/// The caller of a downstream connection.
#[derive(Clone, Debug)]
pub struct Peer {
    pub addr: SocketAddr,
    pub labels: Labels,
    /// The caller's SPIFFE identity (HBONE tunnels); `None` on plain TCP.
    pub identity: Option<mesh_identity::Identity>,
    /// The caller as metrics label it.
    pub source: SourceInfo,
}
