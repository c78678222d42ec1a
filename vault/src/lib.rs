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
//! - [`tokens`]: token formats (random, and card-shaped for card numbers).
//! - [`cards`]: card brands, expiry, BIN and last four; the memory-only CVV vault.
//! - [`engine`]: tokenize, detokenize, look up, correct, consent.
//! - [`auth`]: bearer tokens and mTLS client certificates → a `Principal`.
//! - [`throttle`]: failed authentications and unseal attempts, counted and capped.
//! - [`policy`]: Cedar policies: plain, masked or denied, per field and purpose.
//! - [`audit`]: the hash-chained, MACed audit trail.
//! - [`api`]: the tonic services.
//! - [`cli`]: the `vaultd` command line.
//! - `fuzzing` (hidden): entry points for the fuzz targets in `fuzz/`.
//!
//! [`run`] starts a vault on a listener until a shutdown signal. `vaultd`
//! does the same in two steps, [`Vault::open`] then [`Vault::serve`], to print
//! the bootstrap operator token and its "listening" line in between.

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
pub mod policy;
pub mod schema;
pub mod seal;
pub mod store;
pub mod throttle;
pub mod tokens;

pub use config::Config;

/// The global allocator (feature `mimalloc`, on by default): see
/// `docs/performance.md` for why.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use crate::crypto::keyring::{self, Keyring};
use crate::crypto::keys::RootKey;
use crate::crypto::rootkey;
use crate::engine::{Engine, SystemClock};
use crate::schema::Schema;
use crate::store::sled::SledStore;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use vault_proto::v1::audit_service_server::AuditServiceServer;
use vault_proto::v1::policy_service_server::PolicyServiceServer;
use vault_proto::v1::principal_service_server::PrincipalServiceServer;
use vault_proto::v1::subject_service_server::SubjectServiceServer;
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
    /// The access policy is invalid.
    #[error(transparent)]
    Policy(#[from] policy::PolicyError),
    /// The audit trail cannot be opened or written.
    #[error("audit trail: {0}")]
    Audit(String),
    /// The HSM cannot be used.
    #[error("{0}")]
    Hsm(String),
    /// The TLS files cannot be used.
    #[error("TLS: {0}")]
    Tls(String),
    /// Credentials could not be loaded or the bootstrap token issued.
    #[error("credentials: {0}")]
    Credentials(String),
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

/// The development root key from its file, made first on an empty data
/// directory if the configuration allows it.
fn dev_root_key(config: &Config, initialised: bool) -> Result<RootKey, StartError> {
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
        "the root key comes from a development key file: for development only (vaultd init --shares for Shamir unsealing)"
    );
    Ok(root)
}

/// Opens the store and the keys under `root` (unsealed from shares) or, if
/// `None`, the development root key file, creating one on an empty data
/// directory if the configuration allows it.
pub async fn open_engine(config: &Config, root: Option<RootKey>) -> Result<Engine, StartError> {
    let schema = Arc::new(load_schema(config)?);
    let store = Arc::new(SledStore::open(
        &config.data_dir,
        config.store_cache_bytes,
        config.durability,
    )?);
    let initialised = keyring::is_initialised(store.as_ref())?;
    let root = match (root, &config.hsm) {
        (Some(root), _) => keyring::Root::Key(Box::new(root)),
        (None, Some(hsm)) => {
            let pin = zeroize::Zeroizing::new(std::env::var("VAULT_HSM_PIN").map_err(|_| {
                StartError::Hsm("VAULT_HSM_PIN is not set (the token's user PIN)".into())
            })?);
            let create = !initialised && config.init_if_missing;
            let root = crypto::hsm::HsmRoot::open(hsm, &pin, create)
                .map_err(|e| StartError::Hsm(e.to_string()))?;
            tracing::info!(token = %hsm.token_label, key = %hsm.key_label, "the root key is in the HSM");
            keyring::Root::Hsm(root)
        }
        (None, None) => keyring::Root::Key(Box::new(dev_root_key(config, initialised)?)),
    };
    let clock: Arc<dyn engine::Clock> = if config.clock_offset_secs == 0 {
        Arc::new(SystemClock)
    } else {
        tracing::warn!(
            offset_secs = config.clock_offset_secs,
            "the vault's clock is SHIFTED (VAULT_TEST_CLOCK_OFFSET_SECS): for tests and drills only"
        );
        Arc::new(engine::OffsetClock(config.clock_offset_secs))
    };
    // The keyring keeps the root key: it wraps the KEKs that rotation makes.
    let keyring =
        Keyring::open(root, store.as_ref(), config.dek_cache_entries, clock.now()).await?;
    let engine = Engine::new(
        store,
        keyring,
        schema,
        clock,
        config.record_cache_entries,
        crate::cards::cvv::CvvVault::new(config.cvv_ttl_secs, config.cvv_max_pending),
    )
    .with_dek_max_encryptions(config.dek_max_encryptions)
    .with_kek_cryptoperiod(config.kek_cryptoperiod_days, config.kek_warning_days);
    if let Some(w) = engine.kek_warning() {
        tracing::warn!("{w}");
    }
    // An erasure the journal records is finished before anything is served.
    let finished = engine
        .finish_erasures()
        .await
        .map_err(|e| StartError::Store(store::StoreError::Backend(e.to_string())))?;
    if finished > 0 {
        tracing::warn!(
            subjects = finished,
            "finished erasures the erasure journal records"
        );
    }
    Ok(engine)
}

/// A vault opened and ready to serve.
pub struct Vault {
    config: Config,
    shared: Arc<api::Shared>,
    tls: Option<ServerTlsConfig>,
    bootstrap: Option<auth::credentials::IssuedToken>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// The TLS settings of `config`, or `None` without TLS.
fn tls_config(config: &Config) -> Result<Option<ServerTlsConfig>, StartError> {
    let (Some(cert), Some(key)) = (&config.tls.cert_file, &config.tls.key_file) else {
        return Ok(None);
    };
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| StartError::Tls(format!("{}: cannot read: {e}", p.display())))
    };
    let key_pem = zeroize::Zeroizing::new(read(key)?);
    let mut tls =
        ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, key_pem.as_slice()));
    if let Some(ca) = &config.tls.client_ca_file {
        // Optional, so that bearer-token callers can use TLS without a
        // certificate; a request with neither is refused UNAUTHENTICATED.
        tls = tls
            .client_ca_root(Certificate::from_pem(read(ca)?))
            .client_auth_optional(true);
    }
    Ok(Some(tls.timeout(std::time::Duration::from_secs(10))))
}

impl Vault {
    /// Opens the store, keys, policies and credentials; issues the bootstrap
    /// operator token on the first start. The root key comes from the
    /// development key file.
    pub async fn open(config: Config) -> Result<Self, StartError> {
        Self::open_with(config, None).await
    }

    /// Like [`Vault::open`], under the root key `unsealed` rebuilt from
    /// shares (whose unseal attempts are then audited), or the development
    /// key file if `None`.
    pub async fn open_with(
        config: Config,
        unsealed: Option<seal::Unsealed>,
    ) -> Result<Self, StartError> {
        let tls = tls_config(&config)?;
        let sealable = unsealed.is_some();
        let (root, unseal_events) = match unsealed {
            Some(u) => (Some(u.root), u.events),
            None => (None, Vec::new()),
        };
        let engine = Arc::new(open_engine(&config, root).await?);
        let policy = Arc::new(policy::PolicyEngine::load(
            config.policy_dir.clone(),
            engine.schema().clone(),
        )?);
        let credentials = auth::credentials::CredentialStore::open(engine.clone())
            .map_err(|e| StartError::Credentials(e.to_string()))?;
        let bootstrap = credentials
            .bootstrap(engine.clock().now())
            .await
            .map_err(|e| StartError::Credentials(e.to_string()))?;
        let audit = Arc::new(
            audit::AuditLog::open(
                engine.clone(),
                &config.data_dir.join("audit"),
                config.audit_settings(),
            )
            .map_err(|e| match e {
                error::Error::AuditDamaged(m) => StartError::Audit(format!("damaged: {m}")),
                e => StartError::Audit(e.to_string()),
            })?,
        );
        // The start is the first event of every run; a vault that cannot
        // write its audit trail does not serve.
        let mut detail = format!(
            "version {}; bootstrap token issued: {}",
            env!("CARGO_PKG_VERSION"),
            bootstrap.is_some()
        );
        for note in audit.startup_notes() {
            detail.push_str("; ");
            detail.push_str(note);
        }
        let mut start = vec![audit::system_event("vault_start", "ok", detail)];
        // What happened while sealed, now that the trail can be written.
        start.extend(unseal_events);
        audit
            .record(start)
            .await
            .map_err(|e| StartError::Audit(e.to_string()))?;
        let auth = Arc::new(auth::Authenticator::new(
            credentials,
            &config.mtls_principals,
            engine.clock().clone(),
            config.auth_throttle,
        ));
        let shared = Arc::new(api::Shared {
            engine,
            auth,
            audit,
            policy,
            limits: config.limits,
            max_token_ttl_secs: config.max_token_ttl_secs,
            mtls_principals: config.mtls_principals.clone(),
            started: Instant::now(),
            seal: Arc::new(tokio::sync::Notify::new()),
            sealable,
        });
        Ok(Self {
            config,
            shared,
            tls,
            bootstrap,
        })
    }

    /// Issues a privacy officer's token for `name`, valid `ttl_secs`, as
    /// the holder of the root key (`vaultd officer`, offline): how the first
    /// approver of data-role grants comes to exist where no client
    /// certificate is mapped to the role. Audited (`principal_create`, by
    /// "vaultd officer"); the trail and the store are closed afterwards.
    pub async fn issue_officer(
        self,
        name: &str,
        ttl_secs: u64,
    ) -> Result<auth::credentials::IssuedToken, StartError> {
        let invalid = |e: &str| StartError::Serve(format!("officer: {e}"));
        auth::credentials::check_name(name).map_err(invalid)?;
        if !(60..=self.config.max_token_ttl_secs).contains(&ttl_secs) {
            return Err(invalid(&format!(
                "--ttl must be 60 to {} seconds (max_token_ttl_secs)",
                self.config.max_token_ttl_secs
            )));
        }
        let shared = &self.shared;
        let ev = audit::AuditEvent {
            event_type: "principal_create".into(),
            principal: "vaultd officer".into(),
            role: "root_key_holder".into(),
            auth: "root_key".into(),
            outcome: "ok".into(),
            ..Default::default()
        };
        let issued = shared
            .auth
            .credentials()
            .issue(
                &auth::credentials::Issue {
                    name,
                    role: OFFICER_ROLE,
                    ttl_secs,
                    created_by: "vaultd officer (root key holder)",
                    via: auth::credentials::VIA_ROOT_KEY,
                },
                shared.auth.now(),
                Some(engine::Audited {
                    log: &shared.audit,
                    event: ev,
                }),
            )
            .await
            .map_err(|e| StartError::Credentials(e.to_string()));
        // A clean stop, as a serving vault's: the next start reads it so.
        if let Err(e) = shared.audit.append(vec![audit::system_event(
            "vault_stop",
            "ok",
            "vaultd officer done".into(),
        )]) {
            tracing::error!(error = %e, "could not write the vault_stop audit event");
        }
        shared.audit.close();
        shared.engine.store().flush()?;
        let (_, token) = issued?;
        Ok(token)
    }

    /// The bootstrap operator token, if this start issued one (once).
    pub fn take_bootstrap_token(&mut self) -> Option<auth::credentials::IssuedToken> {
        self.bootstrap.take()
    }

    /// The running access policy (to reload it).
    pub fn policy(&self) -> Arc<policy::PolicyEngine> {
        self.shared.policy.clone()
    }

    /// The audit trail.
    pub fn audit(&self) -> Arc<audit::AuditLog> {
        self.shared.audit.clone()
    }

    /// Serves the vault on `listener` until `shutdown` resolves, then
    /// finishes in-flight requests and flushes the store.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = tx.send(true);
        });
        self.serve_shared(Arc::new(listener), rx).await.map(|_| ())
    }

    /// Serves the vault on `listener` (which a sealed phase may share) until
    /// `stop` turns true ([`Served::Stopped`]) or an operator seals it
    /// ([`Served::Sealed`]); then finishes in-flight requests, flushes the
    /// store and waits (a few seconds at most) for background work to let
    /// go of the keys.
    pub async fn serve_shared(
        self,
        listener: Arc<TcpListener>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Served, StartError> {
        let Vault {
            config,
            shared,
            tls,
            ..
        } = self;
        let engine = shared.engine.clone();
        // Tonic's hard cap sits well above the vault's limit, so that requests
        // between the two get a clear INVALID_ARGUMENT from the vault itself;
        // beyond the cap, the transport refuses them (RESOURCE_EXHAUSTED or a reset).
        let decode_cap = config.limits.max_request_bytes.saturating_mul(4);
        let guard = api::AuthInterceptor {
            auth: shared.auth.clone(),
            audit: shared.audit.clone(),
        };
        let tokens = InterceptedService::new(
            TokenServiceServer::new(api::TokenApi::new(shared.clone()))
                .max_decoding_message_size(decode_cap),
            guard.clone(),
        );
        let system = InterceptedService::new(
            SystemServiceServer::new(api::SystemApi::new(shared.clone()))
                .max_decoding_message_size(decode_cap),
            guard.clone(),
        );
        let principals = InterceptedService::new(
            PrincipalServiceServer::new(api::PrincipalApi::new(shared.clone()))
                .max_decoding_message_size(decode_cap),
            guard.clone(),
        );
        let subjects = InterceptedService::new(
            SubjectServiceServer::new(api::SubjectApi::new(shared.clone()))
                .max_decoding_message_size(decode_cap),
            guard.clone(),
        );
        let policies = InterceptedService::new(
            PolicyServiceServer::new(api::PolicyApi::new(shared.clone()))
                .max_decoding_message_size(decode_cap),
            guard.clone(),
        );
        let audits = InterceptedService::new(
            AuditServiceServer::new(api::AuditApi::new(shared.clone()))
                .max_decoding_message_size(decode_cap),
            guard,
        );
        let (health_reporter, health) = tonic_health::server::health_reporter();
        for name in [
            <TokenServiceServer<api::TokenApi> as NamedService>::NAME,
            <SystemServiceServer<api::SystemApi> as NamedService>::NAME,
            <PrincipalServiceServer<api::PrincipalApi> as NamedService>::NAME,
            <SubjectServiceServer<api::SubjectApi> as NamedService>::NAME,
            <PolicyServiceServer<api::PolicyApi> as NamedService>::NAME,
            <AuditServiceServer<api::AuditApi> as NamedService>::NAME,
        ] {
            health_reporter
                .set_service_status(name, tonic_health::ServingStatus::Serving)
                .await;
        }
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
        let incoming = seal::incoming(listener);
        let policy = shared.policy.summary();
        tracing::info!(
            %addr,
            tls = tls.is_some(),
            mtls = config.tls.client_ca_file.is_some(),
            fields = engine.schema().len(),
            policies = policy.policies,
            storage = engine.store().backend(),
            "vault serving"
        );
        // On the shutdown signal, stop accepting and let in-flight requests
        // finish, but never wait longer than the grace period for clients that
        // do not close their connections.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let grace = config.shutdown_grace;
        let sealed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seal_signal = shared.seal.clone();
        let sealing = sealed.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => {}
                () = seal_signal.notified() => {
                    sealing.store(true, std::sync::atomic::Ordering::Release);
                }
            }
            let _ = stop_tx.send(true);
        });
        // CVVs past their time to live are zeroed within ten seconds even if
        // nobody asks for them (a reveal checks the time itself).
        let sweep_engine = engine.clone();
        let mut sweep_stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let dropped = sweep_engine.cvvs().sweep(sweep_engine.clock().now());
                        if dropped > 0 {
                            tracing::debug!(dropped, "expired CVVs zeroed");
                        }
                    }
                    _ = sweep_stop.wait_for(|stop| *stop) => break,
                }
            }
        });
        // A rotation whose rewrap did not finish before the last stop
        // resumes now.
        match shared.engine.rewrap_pending() {
            Ok(true) => {
                tracing::info!("resuming the rewrap of data keys under the active KEK");
                api::spawn_rewrap(shared.clone());
            }
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "could not read whether a rewrap is pending"),
        }
        // The retention sweeper, at its interval (the first run one interval
        // after the start, so that a restart does not sweep at once).
        if config.retention_sweep_secs > 0 {
            let sweep_shared = shared.clone();
            let mut sweep_stop = stop_rx.clone();
            let every = std::time::Duration::from_secs(config.retention_sweep_secs);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = sweep_stop.wait_for(|stop| *stop) => break,
                    }
                    match api::run_sweep(&sweep_shared).await {
                        Ok(s) => tracing::info!(
                            subjects = s.subjects,
                            fields = s.fields,
                            held = s.held,
                            "retention sweep"
                        ),
                        Err(e) => tracing::error!(error = %e, "retention sweep failed"),
                    }
                }
            });
        }
        // Summaries of failed authentications, as their windows end.
        api::spawn_throttle_summaries(shared.clone(), stop_rx.clone());
        let mut server_stop = stop_rx.clone();
        let mut grace_stop = stop_rx;
        let mut builder = Server::builder()
            .tcp_nodelay(true)
            .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
            .layer(api::frames::SmallFramesLayer)
            .layer(api::RpcPathLayer);
        if let Some(tls) = tls {
            builder = builder
                .tls_config(tls)
                .map_err(|e| StartError::Tls(e.to_string()))?;
        }
        let server = builder
            .add_service(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(tokens)
            .add_service(system)
            .add_service(principals)
            .add_service(subjects)
            .add_service(policies)
            .add_service(audits)
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
        api::write_throttle_summaries(&shared, true);
        if let Err(e) =
            shared
                .audit
                .append(vec![audit::system_event("vault_stop", "ok", String::new())])
        {
            tracing::error!(error = %e, "could not write the vault_stop audit event");
        }
        shared.audit.close();
        engine.store().flush()?;
        served.map_err(|e| StartError::Serve(e.to_string()))?;
        drop(shared);
        if !sealed.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(Served::Stopped);
        }
        // Sealed: background work (a rewrap, a sweep) ends at the stop
        // signal; the keys go with the last reference to the engine.
        for _ in 0..200 {
            if Arc::strong_count(&engine) == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        if Arc::strong_count(&engine) > 1 {
            tracing::warn!("background work or a connection still holds the keys after sealing");
        } else {
            tracing::warn!("vault sealed: keys dropped from memory");
        }
        Ok(Served::Sealed)
    }
}

/// Most bytes of request headers (gRPC metadata: `authorization`,
/// `x-request-id`, ...) the transport accepts per request (HTTP/2
/// `SETTINGS_MAX_HEADER_LIST_SIZE`); beyond, it refuses the request.
pub const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;

/// How serving ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// Shut down.
    Stopped,
    /// Sealed by an operator: unseal again to serve.
    Sealed,
}

/// The role `vaultd officer` issues: the approver of data-role grants.
pub const OFFICER_ROLE: &str = "privacy_officer";

/// The line `vaultd officer` prints on stdout with the officer's token.
pub const OFFICER_LINE_PREFIX: &str = "vaultd privacy officer token (shown once): ";

/// The line `vaultd` prints on stdout with a bootstrap operator token.
pub const BOOTSTRAP_LINE_PREFIX: &str = "vaultd bootstrap operator token (shown once): ";

/// Serves the vault on `listener` until `shutdown` resolves, then finishes
/// in-flight requests and flushes the store. A bootstrap operator token
/// issued by this start is printed on stdout.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let mut vault = Vault::open(config).await?;
    if let Some(token) = vault.take_bootstrap_token() {
        print_bootstrap(&token);
    }
    vault.serve(listener, shutdown).await
}

/// Prints the bootstrap operator token on stdout (never to the log).
pub fn print_bootstrap(token: &auth::credentials::IssuedToken) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{BOOTSTRAP_LINE_PREFIX}{}", token.expose());
    let _ = out.flush();
    tracing::warn!(
        ttl_hours = auth::credentials::BOOTSTRAP_TTL_SECS / 3600,
        "issued the bootstrap operator token (printed on stdout, once): use it to create principals, then revoke it"
    );
}
