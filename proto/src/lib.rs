//! The vault's gRPC contract, package `vault.v1`, generated from `proto/vault/v1/*.proto`.
//!
//! The `.proto` files are the single source of truth; this crate only compiles
//! them (with protox, no `protoc`) and exposes the encoded descriptor set so the
//! server can answer gRPC reflection.

#![forbid(unsafe_code)]
#![allow(missing_docs, missing_debug_implementations)]

/// Package `vault.v1`.
pub mod v1 {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("vault.v1");
}

/// Encoded `FileDescriptorSet` of every `vault.v1` file, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/vault_descriptor.bin"));
