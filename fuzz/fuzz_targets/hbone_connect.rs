#![no_main]
//! `mesh_fuzz::hbone_connect`; see docs/FUZZING.md.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = mesh_fuzz::hbone_connect(data);
});
