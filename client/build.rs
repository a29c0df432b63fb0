//! Compiles the API with protox (pure Rust: no system protoc) and generates the tonic
//! client, and the server when the `server` feature is on.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/comb/v1/comb.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(std::env::var_os("CARGO_FEATURE_SERVER").is_some())
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
