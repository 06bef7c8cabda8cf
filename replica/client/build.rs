//! Generates the gRPC service from proto/bft.proto with the protoc that protoc-bin-vendored ships, so the build
//! needs no protoc on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure().compile_with_config(config, &["proto/bft.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/bft.proto");
    Ok(())
}
