//! The vault: a gRPC service that holds personal and payment-card data so
//! that nothing else has to.
//!
//! Map of the crate:
//!
//! - [`model`]: clock and calendar, ids, `Principal`, `Reveal`, the `Journal`.
//! - [`error`]: the one request error: its gRPC code, audit outcome and typed sources.
//! - [`config`]: one [`Config`], from file, environment and flags.
//! - [`crypto`]: keys, envelope encryption, blind indexes, the keyring.
//! - [`store`]: the `Store` trait and its sled implementation (group commit).
//! - [`keystore`]: the keyring's wrapped material, read from and written to the store.
//! - [`schema`]: `fields.toml`: classes, validators, masks, retention.
//! - [`tokens`]: token formats (random, and card-shaped for card numbers).
//! - [`cards`]: card brands, expiry, BIN and last four; the memory-only CVV vault.
//! - [`engine`]: tokenize, detokenize, look up, correct, consent.
//! - [`auth`]: bearer tokens and mTLS client certificates → a `Principal`.
//! - [`throttle`]: failed authentications and unseal attempts, counted and capped.
//! - [`policy`]: Cedar policies: plain, masked or denied, per field and purpose.
//! - [`audit`]: the hash-chained, MACed audit trail.
//! - [`api`]: the tonic services.
//! - [`server`]: opening, serving, sealing; [`server::run`].
//! - [`cli`]: the `vaultd` command line.
//! - `fuzzing` (hidden): entry points for the fuzz targets in `fuzz/`.
//!
//! [`server::run`] is what `vaultd` runs: it opens the vault of a
//! [`Config`] and serves it on a listener until a shutdown signal.
//!
//! `docs/architecture.md` draws the layers: each module imports only from
//! the layers below it (checked by `tests/layers.rs`).

#![forbid(unsafe_code)]

pub mod api;
pub mod audit;
pub mod auth;
pub mod backup;
pub mod cards;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod engine;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod keystore;
pub mod model;
pub mod policy;
pub mod schema;
pub mod server;
pub mod store;
pub mod throttle;
pub mod tokens;

pub use config::Config;
pub use server::{BOOTSTRAP_LINE_PREFIX, OFFICER_LINE_PREFIX, StartError, run};
