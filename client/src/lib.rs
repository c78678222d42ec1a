//! Typed client for the vault's gRPC API (`vault.v1`), used by `vaultctl`,
//! the tests, and any Rust service that talks to the vault.
//!
//! ```no_run
//! # async fn demo() -> Result<(), vault_client::ClientError> {
//! let mut vault = vault_client::VaultClient::connect("http://127.0.0.1:50051")
//!     .await?
//!     .with_token("vt1.…")?; // a bearer token; or mTLS through `connect_with`
//!
//! let tokens = vault.tokenize("cust-42", &[("email", "ann@example.com")], &["booking"], "2026-01").await?;
//! let shown = vault.detokenize(&[tokens[0].token.clone()], "customer_support").await?;
//! # Ok(()) }
//! ```

//! Modules:
//!
//! - [`client`]: [`VaultClient`], a typed method per RPC;
//! - [`error`]: [`ClientError`], what a failed call says;
//! - [`target`]: [`Target`] and [`TlsOptions`], where and how to connect;
//! - [`verify_export`]: the audit export format (JSON Lines with a signed
//!   checkpoint) and its offline verification.
//!
//! `vaultctl`, the command line built on this library, lives in the binary's
//! own module tree (`src/bin/vaultctl/`); nothing of it is in the library.

#![forbid(unsafe_code)]

pub mod client;
pub mod error;
pub mod target;
pub mod verify_export;

pub use client::{AuditExport, VaultClient};
pub use error::ClientError;
pub use target::{Target, TlsOptions, endpoint_uri, is_plaintext_addr};
pub use vault_proto::v1 as proto;
