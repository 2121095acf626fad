//! Where a route sends traffic. The key that routes, mirrors, destination
//! policies and the per-destination state (pools, balancers, outlier
//! detection) share.

/// Where a route sends traffic: a host and optionally a subset and port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DestinationRef {
    pub host: String,
    pub subset: Option<String>,
    pub port: Option<u16>,
}

impl DestinationRef {
    pub fn host(h: &str) -> Self {
        DestinationRef {
            host: h.to_string(),
            subset: None,
            port: None,
        }
    }

    pub(crate) fn from_istio(d: &mesh_api::networking::Destination) -> Result<Self, String> {
        Ok(DestinationRef {
            host: d.host.clone().ok_or("destination without host")?,
            subset: d.subset.clone(),
            port: d
                .port
                .as_ref()
                .and_then(|p| p.number)
                .and_then(|n| u16::try_from(n).ok()),
        })
    }
}
