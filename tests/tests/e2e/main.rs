//! End-to-end tests: real vaultd processes on 127.0.0.1:0, real gRPC through
//! vault-client, real sled and real crypto. Tests named after a COMPLIANCE.md
//! ID are that promise's evidence.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod audit;
mod audit_integrity;
mod audit_trail;
mod bad_input;
mod cards;
mod cli;
mod durability;
mod grants;
mod identity;
mod keys;
mod lifecycle;
mod need_to_know;
mod postgres;
mod server;
mod storage;
mod subject_rights;
mod tokens;
