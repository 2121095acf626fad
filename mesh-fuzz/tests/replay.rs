//! Every committed fuzz input (fuzz/corpus/<target>/ and
//! fuzz/artifacts/<target>/) through its target's function: the corpora
//! are regression tests on stable, without cargo-fuzz.

use mesh_fuzz::corpus::{inputs, TARGETS};
use mesh_fuzz::Reached;

#[test]
fn every_corpus_and_artifact_replays_without_a_panic() {
    for (target, run) in TARGETS {
        let files = inputs(target).unwrap_or_else(|e| panic!("{target}: {e}"));
        assert!(
            !files.is_empty(),
            "{target}: no corpus in fuzz/corpus/{target}"
        );
        let mut accepted = 0;
        for file in &files {
            let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            // A panic names the target; this names the file.
            eprintln!("{target}: {}", file.display());
            if run(&data) == Reached::Accepted {
                accepted += 1;
            }
        }
        // The seeds are real inputs: some must get through, or the target
        // fuzzes only the first refusal.
        assert!(
            accepted > 0,
            "{target}: none of {} inputs is accepted",
            files.len()
        );
        eprintln!("{target}: {accepted} of {} inputs accepted", files.len());
    }
}
