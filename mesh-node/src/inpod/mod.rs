//! In-pod mode: mesh-node's sockets live inside each pod's network namespace.

mod delivery_routes;
mod enrolment;
mod netns;

pub use enrolment::{EnrolmentError, EnrolmentFailure, EnrolmentStatus, PodEnrolments};
pub use netns::{netns_cookie_of, set_mesh_mark, PodNetns};
