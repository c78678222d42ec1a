//! Compiles `vault/v1/*.proto` with protox (a pure-Rust protobuf compiler, so
//! no `protoc` is needed) and keeps the encoded descriptor set for gRPC
//! reflection.

use prost::Message;
use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "vault/v1/token.proto",
    "vault/v1/system.proto",
    "vault/v1/principal.proto",
    "vault/v1/subject.proto",
    "vault/v1/policy.proto",
    "vault/v1/audit.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(PROTOS, ["."])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("vault_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
