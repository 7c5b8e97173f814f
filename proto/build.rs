//! Generates the Rust types and tonic stubs for `hotlake.v1` and the node-to-node
//! `hotlake.internal.v1`. This is the only crate that runs
//! code generation; `protoc` comes vendored so a fresh machine needs nothing installed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto/hotlake/v1/hotlake.proto");
    println!("cargo:rerun-if-changed=proto/hotlake/internal/v1/peer.proto");
    tonic_build::configure()
        .compile_protos(&["proto/hotlake/v1/hotlake.proto", "proto/hotlake/internal/v1/peer.proto"], &["proto"])?;
    Ok(())
}
