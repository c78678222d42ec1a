//! The vault: a gRPC service that holds personal and payment-card data so
//! that nothing else has to.
//!
//! Map of the crate:
//!
//! - [`config`]: one [`Config`], from file, environment and flags.
//! - [`error`]: the one error type and its conversion to `tonic::Status`.
//! - [`crypto`]: keys, envelope encryption, blind indexes, the keyring.
//! - [`store`]: the `Store` trait and its sled implementation (group commit).
//! - [`schema`]: `fields.toml`: classes, validators, masks, retention.
//! - [`tokens`]: token formats.
//! - [`engine`]: tokenize, detokenize, look up, correct.
//! - [`api`]: the tonic services.
//! - [`cli`]: the `vaultd` command line.
//!
//! [`run`] starts a vault on a listener until a shutdown signal; `vaultd` and
//! the tests call it the same way.

#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod engine;
pub mod error;
pub mod schema;
pub mod store;
pub mod tokens;

pub use config::Config;

/// The global allocator (feature `mimalloc`, on by default): see
/// `docs/performance.md` for why.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use crate::crypto::keyring::{self, Keyring};
use crate::crypto::rootkey;
use crate::engine::{Engine, SystemClock};
use crate::schema::Schema;
use crate::store::sled::SledStore;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use vault_proto::v1::system_service_server::SystemServiceServer;
use vault_proto::v1::token_service_server::TokenServiceServer;

/// Why the vault could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The field schema is invalid.
    #[error(transparent)]
    Schema(#[from] schema::SchemaError),
    /// The store could not be opened.
    #[error("cannot open the data directory: {0}")]
    Store(#[from] store::StoreError),
    /// The root key could not be read or made.
    #[error(transparent)]
    RootKey(#[from] rootkey::RootKeyError),
    /// The keys in the store could not be opened.
    #[error(transparent)]
    Keyring(#[from] keyring::KeyringError),
    /// The data directory holds keys, but the root key file is missing.
    #[error("the data directory {0} is initialised but its root key file {1} is missing")]
    RootKeyMissing(String, String),
    /// The gRPC server failed.
    #[error("server: {0}")]
    Serve(String),
}

/// Loads the schema the configuration names (or the built-in one).
pub fn load_schema(config: &Config) -> Result<Schema, schema::SchemaError> {
    match &config.schema_file {
        Some(path) => Schema::load(path, config.limits.max_value_bytes),
        None => Schema::default_schema(config.limits.max_value_bytes),
    }
}

/// Opens the store and the keys, creating a development root key on an empty
/// data directory if the configuration allows it.
pub async fn open_engine(config: &Config) -> Result<Engine, StartError> {
    let schema = Arc::new(load_schema(config)?);
    let store = Arc::new(SledStore::open(
        &config.data_dir,
        config.store_cache_bytes,
        config.durability,
    )?);
    let initialised = keyring::is_initialised(store.as_ref())?;
    if !config.root_key_file.exists() {
        if initialised {
            return Err(StartError::RootKeyMissing(
                config.data_dir.display().to_string(),
                config.root_key_file.display().to_string(),
            ));
        }
        if config.init_if_missing {
            rootkey::create_dev_key_file(&config.root_key_file)?;
            tracing::warn!(
                path = %config.root_key_file.display(),
                "created a DEVELOPMENT root key file: anyone who can read it can read the vault; do not use it for real data"
            );
        }
    }
    let root = rootkey::load_dev_key_file(&config.root_key_file)?;
    tracing::warn!(
        "the root key comes from a development key file (no Shamir unsealing or HSM yet)"
    );
    let keyring = Keyring::open(&root, store.as_ref(), config.dek_cache_entries).await?;
    drop(root);
    Ok(Engine::new(
        store,
        keyring,
        schema,
        Arc::new(SystemClock),
        config.record_cache_entries,
    ))
}

/// Serves the vault on `listener` until `shutdown` resolves, then finishes
/// in-flight requests and flushes the store.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let engine = Arc::new(open_engine(&config).await?);
    let shared = Arc::new(api::Shared {
        engine: engine.clone(),
        limits: config.limits,
        started: Instant::now(),
    });
    // Tonic's hard cap sits well above the vault's limit, so that requests
    // between the two get a clear INVALID_ARGUMENT from the vault itself;
    // beyond the cap, the transport refuses them (RESOURCE_EXHAUSTED or a reset).
    let decode_cap = config.limits.max_request_bytes.saturating_mul(4);
    let tokens = TokenServiceServer::new(api::TokenApi::new(shared.clone()))
        .max_decoding_message_size(decode_cap);
    let system = SystemServiceServer::new(api::SystemApi::new(shared.clone()))
        .max_decoding_message_size(decode_cap);
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<TokenServiceServer<api::TokenApi>>()
        .await;
    health_reporter
        .set_serving::<SystemServiceServer<api::SystemApi>>()
        .await;
    let reflection = |b: tonic_reflection::server::Builder<'static>| {
        b.register_encoded_file_descriptor_set(vault_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection(tonic_reflection::server::Builder::configure())
        .build_v1()
        .map_err(|e| StartError::Serve(e.to_string()))?;
    let reflection_v1alpha = reflection(tonic_reflection::server::Builder::configure())
        .build_v1alpha()
        .map_err(|e| StartError::Serve(e.to_string()))?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartError::Serve(e.to_string()))?;
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tracing::info!(%addr, fields = engine.schema().len(), storage = engine.store().backend(), "vault serving");
    // On the shutdown signal, stop accepting and let in-flight requests
    // finish, but never wait longer than the grace period for clients that
    // do not close their connections.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let grace = config.shutdown_grace;
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let mut server_stop = stop_rx.clone();
    let mut grace_stop = stop_rx;
    let server = Server::builder()
        .tcp_nodelay(true)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(tokens)
        .add_service(system)
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = server_stop.wait_for(|stop| *stop).await;
        });
    tokio::pin!(server);
    let served = tokio::select! {
        r = &mut server => r,
        // `stopping` resolves once the signal came and the grace period passed.
        () = async {
            let _ = grace_stop.wait_for(|stop| *stop).await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(grace_secs = grace.as_secs(), "connections still open after the grace period; closing them");
            Ok(())
        }
    };
    tracing::info!("vault stopping: in-flight requests finished, flushing");
    engine.store().flush()?;
    served.map_err(|e| StartError::Serve(e.to_string()))
}
