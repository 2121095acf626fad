//! Ambit's local mode, on mesh-tests' namespace testbed (no cluster).
//!
//! - `demo`, `up`: the sample app of `cargo xtask up`
//! - `bench`, `bench_waypoint`: `cargo xtask bench`
//! - `progress`: the spinner they show

pub mod bench;
pub mod bench_waypoint;
pub mod demo;
pub mod progress;
pub mod up;
