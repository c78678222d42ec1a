//! Opening a vault: the store, the keys under the root key, the engine,
//! the access policy, the credentials and the audit trail, in that order,
//! and the first events of a run.

use super::{OFFICER_ROLE, StartError};
use crate::audit::{self, AuditLog};
use crate::auth::{self, credentials::CredentialStore};
use crate::config::Config;
use crate::crypto::keyring;
use crate::crypto::keys::RootKey;
use crate::crypto::{self, rootkey};
use crate::engine::Engine;
use crate::error::Audited;
use crate::keystore;
use crate::model::{Clock, OffsetClock, SystemClock};
use crate::schema::Schema;
use crate::store::Store;
use crate::store::sled::SledStore;
use crate::{api, policy, schema};
use std::sync::Arc;
use std::time::Instant;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

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
            return Err(StartError::RootKeyMissing {
                data_dir: config.data_dir.clone(),
                key_file: config.root_key_file.clone(),
            });
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

/// Opens the data directory's store (the one place that chooses it), with
/// a page cache of `cache_bytes`.
pub fn open_store(config: &Config, cache_bytes: u64) -> Result<Arc<dyn Store>, StartError> {
    if config.storage == crate::config::Storage::Postgres {
        return Ok(Arc::new(crate::store::postgres::PgStore::open(
            &postgres_settings(config)?,
        )?));
    }
    Ok(Arc::new(SledStore::open(
        &config.data_dir,
        cache_bytes,
        config.durability,
    )?))
}

/// How to reach the database of `storage = "postgres"`, the password read
/// from its file or the environment (never from the configuration).
fn postgres_settings(config: &Config) -> Result<crate::store::postgres::PgSettings, StartError> {
    use crate::store::StoreError;
    let password = match &config.postgres_password_file {
        Some(f) => {
            let text = std::fs::read_to_string(f).map_err(|e| {
                StoreError::Backend(format!(
                    "postgres_password_file {}: {}",
                    f.display(),
                    e.kind()
                ))
            })?;
            Some(text.lines().next().unwrap_or_default().to_owned().into())
        }
        None => std::env::var("VAULT_POSTGRES_PASSWORD")
            .ok()
            .map(Into::into),
    };
    Ok(crate::store::postgres::PgSettings {
        url: config.postgres_url.trim().to_owned(),
        password,
        pool: config.postgres_pool,
        ca_file: config.postgres_ca_file.clone(),
        schema: Some(config.postgres_schema.trim().to_owned()).filter(|s| !s.is_empty()),
        node: node_id(&config.node_id),
    })
}

/// This node's id: `configured`, or the host name and a random suffix.
fn node_id(configured: &str) -> String {
    let configured = configured.trim();
    if !configured.is_empty() {
        return configured.to_owned();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && h.len() <= 64)
        .unwrap_or_else(|| "vaultd".to_owned());
    // (A failed draw leaves zeros: the id is still this host's.)
    let suffix = crate::crypto::random_array::<4>().unwrap_or_default();
    format!("{host}-{:08x}", u32::from_be_bytes(suffix))
}

/// The credential store of `engine`'s data directory, and the bootstrap
/// operator token if this is the first start that issues one.
pub async fn open_credentials(
    engine: &Engine,
) -> Result<(CredentialStore, Option<auth::credentials::IssuedToken>), StartError> {
    let credentials = CredentialStore::open(
        engine.store().clone(),
        engine.keyring().credential().clone(),
    )
    .map_err(StartError::Credentials)?;
    let bootstrap = credentials
        .bootstrap(engine.clock().now())
        .await
        .map_err(StartError::Credentials)?;
    Ok((credentials, bootstrap))
}

/// Opens the store and the keys under `root` (unsealed from shares) or, if
/// `None`, the development root key file, creating one on an empty data
/// directory if the configuration allows it.
pub async fn open_engine(config: &Config, root: Option<RootKey>) -> Result<Engine, StartError> {
    open_engine_on(config, root, None).await
}

/// [`open_engine`] on `store` if given (opened already: opening sled reads
/// its log, which takes longer the more it holds), else on the
/// configuration's store.
pub async fn open_engine_on(
    config: &Config,
    root: Option<RootKey>,
    store: Option<Arc<dyn Store>>,
) -> Result<Engine, StartError> {
    let schema = Arc::new(load_schema(config)?);
    let store = match store {
        Some(s) => s,
        None => open_store(config, config.store_cache_bytes)?,
    };
    let initialised = keystore::is_initialised(store.as_ref())?;
    let root = match (root, &config.hsm) {
        (Some(root), _) => keyring::Root::Key(Box::new(root)),
        (None, Some(hsm)) => {
            let pin = zeroize::Zeroizing::new(
                std::env::var("VAULT_HSM_PIN").map_err(|_| StartError::HsmPin)?,
            );
            let create = !initialised && config.init_if_missing;
            let root = crypto::hsm::HsmRoot::open(hsm, &pin, create)?;
            tracing::info!(token = %hsm.token_label, key = %hsm.key_label, "the root key is in the HSM");
            keyring::Root::Hsm(root)
        }
        (None, None) => keyring::Root::Key(Box::new(dev_root_key(config, initialised)?)),
    };
    let clock: Arc<dyn Clock> = if config.clock_offset_secs == 0 {
        Arc::new(SystemClock)
    } else {
        tracing::warn!(
            offset_secs = config.clock_offset_secs,
            "the vault's clock is SHIFTED (VAULT_TEST_CLOCK_OFFSET_SECS): for tests and drills only"
        );
        Arc::new(OffsetClock(config.clock_offset_secs))
    };
    // The keyring keeps the root key: it wraps the KEKs that rotation makes.
    let keyring =
        keystore::open(root, store.as_ref(), config.dek_cache_entries, clock.now()).await?;
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
    let finished = engine.finish_erasures().await.map_err(StartError::Vault)?;
    let rekeys = engine
        .finish_key_shreds()
        .await
        .map_err(StartError::Vault)?;
    if rekeys > 0 {
        tracing::info!(
            keys = rekeys,
            "shredded the old keys of re-keys a crash interrupted"
        );
    }
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
    pub(super) config: Config,
    pub(super) shared: Arc<api::Shared>,
    pub(super) tls: Option<ServerTlsConfig>,
    bootstrap: Option<auth::credentials::IssuedToken>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// Ends a run cleanly: its `vault_stop` event (with `detail`), the trail
/// closed after it, the store flushed. The next start reads the end so.
pub(super) fn end_run(shared: &api::Shared, detail: String) -> Result<(), StartError> {
    let stop = audit::system_event("vault_stop", "ok", detail);
    if let Err(e) = shared.audit.append(vec![stop]) {
        tracing::error!(error = %e, "could not write the vault_stop audit event");
    }
    shared.audit.close();
    shared.engine.store().flush()?;
    Ok(())
}

/// The TLS settings of `config`, or `None` without TLS.
pub(in crate::server) fn tls_config(
    config: &Config,
) -> Result<Option<ServerTlsConfig>, StartError> {
    let (Some(cert), Some(key)) = (&config.tls.cert_file, &config.tls.key_file) else {
        return Ok(None);
    };
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|source| StartError::TlsFile {
            path: p.to_owned(),
            source,
        })
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
        Self::open_with(config, None, None).await
    }

    /// Like [`Vault::open`], under the root key `unsealed` rebuilt from
    /// shares (whose unseal attempts are then audited), or the development
    /// key file if `None`.
    pub async fn open_with(
        config: Config,
        unsealed: Option<super::seal::Unsealed>,
        store: Option<Arc<dyn Store>>,
    ) -> Result<Self, StartError> {
        let tls = tls_config(&config)?;
        let sealable = unsealed.is_some();
        let (root, unseal_events) = match unsealed {
            Some(u) => (Some(u.root), u.events),
            None => (None, Vec::new()),
        };
        let engine = Arc::new(open_engine_on(&config, root, store).await?);
        let policy = Arc::new(policy::PolicyEngine::load(
            config.policy_dir.clone(),
            engine.schema().clone(),
        )?);
        let (credentials, bootstrap) = open_credentials(&engine).await?;
        let audit = Arc::new(
            AuditLog::open(
                &config.data_dir.join("audit"),
                config.audit_settings(),
                audit::Keys {
                    mac: engine.keyring().audit().clone(),
                    checkpoint: engine.keyring().checkpoint().clone(),
                },
                engine.clock().clone(),
            )
            .map_err(StartError::Audit)?,
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
        audit.record(start).await.map_err(StartError::Audit)?;
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
        // What other nodes change in a shared store reaches this node's
        // caches (nothing where one process owns the store).
        let weak = Arc::downgrade(&shared);
        shared.engine.store().watch(Arc::new(move |changes| {
            if let Some(shared) = weak.upgrade() {
                shared.on_changes(changes);
            }
        }));
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
        let invalid = |e: &str| StartError::Invalid(format!("officer: {e}"));
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
                Some(Audited {
                    journal: shared.audit.as_ref(),
                    event: ev,
                }),
            )
            .await
            .map_err(StartError::Credentials);
        // A clean stop, as a serving vault's: the next start reads it so.
        end_run(shared, "vaultd officer done".into())?;
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
}
