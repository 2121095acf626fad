//! Which proxy a route table is for: the mesh's waypoint, or one Istio
//! Gateway (the gateway role).

/// Which proxy a route table is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Binding {
    /// The mesh (waypoints): `gateways` empty or naming `mesh`.
    Mesh,
    /// One Istio Gateway (the gateway role).
    Gateway { namespace: String, name: String },
}

impl Binding {
    /// Does a `gateways` list of a VirtualService in `vs_namespace` name
    /// this binding? A Gateway is named `ns/name`, or `name` from its own
    /// namespace.
    pub fn named_by(&self, gateways: &[String], vs_namespace: &str) -> bool {
        match self {
            Binding::Mesh => gateways.is_empty() || gateways.iter().any(|g| g == "mesh"),
            Binding::Gateway { namespace, name } => {
                gateways.iter().any(|g| match g.split_once('/') {
                    Some((ns, n)) => ns == namespace && n == name,
                    None => g == name && vs_namespace == namespace,
                })
            }
        }
    }
}
