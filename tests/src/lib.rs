//! Ambit's namespace testbed and end-to-end test support.
//!
//! `testbed` builds nodes and pods out of network namespaces, veth pairs and
//! cgroups; `mesh` runs mesh-node daemons on them with a local config;
//! `probe` is the client/server protocol of the `ambit-probe` sample app.

pub mod sys;
pub mod probe;
pub mod testbed;
