//! The xDS server.

pub mod server;

pub use server::{LargePermits, PushLimits, XdsServer};
