//! The inputs mesh-node takes from the network, the controller or a file,
//! as functions of arbitrary bytes, for fuzzing. Each function must return
//! for every input, never panic: a wrong input is an error the code under
//! test returns, and the function says only how far the input got
//! ([`Reached`]).
//!
//! - [`hbone_connect`]: a request head on the HBONE port (method, URI,
//!   headers) through [`mesh_hbone::vet_connect`].
//! - [`hbone_h2`]: raw bytes as a client's HTTP/2 preface and frames, to the
//!   HBONE server over an in-memory pipe (no TLS): h2's parsing and the
//!   vetting, end to end.
//! - [`xds_resources`]: protobuf bytes as the controller's resources,
//!   built into the node's state by [`mesh_model::build::build`].
//! - [`config_file`]: text as the local config file
//!   ([`mesh_model::config::parse`]).
//!
//! The cargo-fuzz targets in `fuzz/` are one-line wrappers over these; the
//! replay test (`tests/replay.rs`) runs every file of their corpora through
//! the same functions in `cargo test`. [`corpus`] names the corpora.

pub mod config_file;
pub mod corpus;
pub mod hbone;
pub mod xds;

pub use config_file::config_file;
pub use hbone::{hbone_connect, hbone_h2};
pub use xds::xds_resources;

/// How far one input got into the code under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reached {
    /// Not even the outer format (UTF-8, protobuf, a request head).
    Undecoded,
    /// The code under test refused it with an error.
    Refused,
    /// Accepted: a tunnel, a state, a config.
    Accepted,
}
