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

    // The same ADS route, served with responses whose resources are already
    // encoded (`crate::encoded`): the controller encodes each resource once
    // for every client instead of once per client. Written to
    // `envoy.service.discovery.v3.AggregatedDiscoveryService.rs`.
    let ads_encoded = tonic_build::manual::Service::builder()
        .name("AggregatedDiscoveryService")
        .package("envoy.service.discovery.v3")
        .method(
            tonic_build::manual::Method::builder()
                .name("delta_aggregated_resources")
                .route_name("DeltaAggregatedResources")
                .input_type("crate::envoy::service::discovery::v3::DeltaDiscoveryRequest")
                .output_type("crate::encoded::EncodedDeltaResponse")
                .codec_path("tonic::codec::ProstCodec")
                .client_streaming()
                .server_streaming()
                .build(),
        )
        .build();
    tonic_build::manual::Builder::new()
        .build_client(false)
        .build_transport(false)
        .compile(&[ads_encoded]);
    Ok(())
}
