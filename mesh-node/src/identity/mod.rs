//! Workload identities and the certificates that prove them.

mod spiffe;

pub use spiffe::{Identity, IdentityError};
