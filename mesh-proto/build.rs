//! Compiles `proto/` with protox (pure Rust, no `protoc`) and generates the
//! prost messages and tonic clients/servers from the descriptor set.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/envoy/service/discovery/v3/ads.proto",
        "proto/istio/v1/auth/ca.proto",
        "proto/ambit/v1/workload.proto",
        "proto/ambit/v1/security.proto",
        "proto/ambit/v1/l7.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(files, ["proto"])?;
    tonic_build::configure()
        .build_server(true)
        .build_client(true)
        // Deterministic encoding: resource versions are hashes of the bytes.
        .btree_map(["."])
        .compile_fds(fds)?;
    Ok(())
}
