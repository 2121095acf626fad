#![no_main]
//! `mesh_fuzz::xds_resources`; see docs/FUZZING.md.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = mesh_fuzz::xds_resources(data);
});
