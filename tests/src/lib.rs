//! Ambit's namespace testbed and the test helpers; the local mode built on
//! it is the `ambit-local` crate.
//!
//! - `testbed`: nodes and pods out of network namespaces, veth pairs, cgroups
//! - `mesh`: mesh-node daemons on a testbed with a local config and CA
//! - `probe`: the sample app's protocol (the `ambit-probe` binary)
//! - `http_app`: the HTTP sample app (bookinfo's roles) and its load client
//! - `wire`: captures on the link between nodes, read back
//! - `netns_thread`: the test's own sockets inside a pod's netns
//! - `proc_watch`: a process's descriptors and memory, with a kill limit
//! - `bookinfo`: bookinfo behind a waypoint, for the L7 tests
//! - `kube`: a real kube-apiserver (and etcd) for integration tests
//! - `curl`, `wait`: the one HTTP client and the one bounded poll of the tests

pub mod bookinfo;
pub mod curl;
pub mod http_app;
pub mod kube;
pub mod mesh;
pub mod netns_thread;
pub mod probe;
pub mod proc_watch;
pub mod sys;
pub mod testbed;
pub mod wait;
pub mod wire;

/// The text of the seed config whose file name starts with `prefix` (e.g.
/// `"07-"`), from the repository's fixtures (`tests/fixtures/istio`).
pub fn seed(prefix: &str) -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/istio");
    let path = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .unwrap_or_else(|| panic!("no seed {prefix}* in {}", dir.display()));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
