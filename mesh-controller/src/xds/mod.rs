//! The xDS server.

pub mod server;

pub use server::XdsServer;
