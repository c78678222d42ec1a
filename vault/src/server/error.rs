//! Why the vault could not start, or stopped with an error: one enum whose
//! variants keep their sources typed (the layer that failed, and its own
//! error), so that a caller embedding the vault can tell them apart.

use crate::{backup, crypto, error, policy, schema, store};
use std::path::PathBuf;

/// Why the vault could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration or command line asks for something impossible.
    #[error("{0}")]
    Invalid(String),
    /// The field schema is invalid.
    #[error(transparent)]
    Schema(#[from] schema::SchemaError),
    /// The store could not be opened.
    #[error("cannot open the data directory: {0}")]
    Store(#[from] store::StoreError),
    /// The root key could not be read or made.
    #[error(transparent)]
    RootKey(#[from] crypto::rootkey::RootKeyError),
    /// The keys in the store could not be opened.
    #[error(transparent)]
    Keyring(#[from] crypto::keyring::KeyringError),
    /// The data directory holds keys, but the root key file is missing.
    #[error(
        "the data directory {} is initialised but its root key file {} is missing",
        .data_dir.display(),
        .key_file.display()
    )]
    RootKeyMissing {
        /// The data directory.
        data_dir: PathBuf,
        /// The root key file it expects.
        key_file: PathBuf,
    },
    /// The access policy is invalid.
    #[error(transparent)]
    Policy(#[from] policy::PolicyError),
    /// The audit trail cannot be opened or written.
    #[error("audit trail: {}", audit_detail(.0))]
    Audit(#[source] error::Error),
    /// `VAULT_HSM_PIN` is not set while the root key is in an HSM.
    #[error("VAULT_HSM_PIN is not set (the token's user PIN)")]
    HsmPin,
    /// The HSM cannot be used.
    #[error("{0}")]
    Hsm(#[from] crypto::hsm::HsmError),
    /// A TLS file cannot be read.
    #[error("TLS: {}: cannot read: {source}", .path.display())]
    TlsFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The transport refused the TLS settings, or serving failed.
    #[error("TLS: {0}")]
    Tls(#[source] tonic::transport::Error),
    /// Credentials could not be loaded or the bootstrap token issued.
    #[error("credentials: {0}")]
    Credentials(#[source] error::Error),
    /// Starting, sealing or stopping the data directory failed.
    #[error("{0}")]
    Vault(#[source] error::Error),
    /// A backup cannot be restored.
    #[error("restore: {0}")]
    Restore(#[from] backup::BackupError),
    /// The Shamir shares cannot be used.
    #[error("{0}")]
    Shares(String),
    /// A file or the listener cannot be used.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path or address.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("server: {0}")]
    Serve(#[source] tonic::transport::Error),
    /// The reflection service could not be built.
    #[error("server: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

fn audit_detail(e: &error::Error) -> String {
    match e {
        error::Error::AuditDamaged(m) => format!("damaged: {m}"),
        e => e.to_string(),
    }
}

impl StartError {
    /// An I/O failure while doing `what`.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}
