//! Where the fuzz targets' inputs live: `fuzz/corpus/<target>/` (seeds and
//! what the fuzzer kept) and `fuzz/artifacts/<target>/` (crash
//! reproducers, kept as regression inputs).

use std::path::{Path, PathBuf};

use crate::Reached;

/// What a fuzz target runs on each input.
pub type Target = fn(&[u8]) -> Reached;

/// Every fuzz target: its name (the file in `fuzz/fuzz_targets/` and the
/// folder in the corpus) and the function it runs.
pub const TARGETS: &[(&str, Target)] = &[
    ("hbone_connect", crate::hbone_connect),
    ("hbone_h2", crate::hbone_h2),
    ("xds_resources", crate::xds_resources),
    ("config_file", crate::config_file),
];

/// `fuzz/` at the repository root.
pub fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join("fuzz")
}

/// The files of `target`'s corpus and artifacts, sorted (missing folders
/// are empty).
pub fn inputs(target: &str) -> std::io::Result<Vec<PathBuf>> {
    let root = fuzz_dir();
    let mut files = Vec::new();
    for dir in [
        root.join("corpus").join(target),
        root.join("artifacts").join(target),
    ] {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let path = entry?.path();
            if path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}
