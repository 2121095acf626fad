//! In-pod mode: mesh-node's sockets live inside each pod's network namespace.

mod netns;

pub use netns::{netns_cookie_of, set_mesh_mark, PodNetns};
