#![no_main]
//! `mesh_fuzz::config_file`; see docs/FUZZING.md.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = mesh_fuzz::config_file(data);
});
