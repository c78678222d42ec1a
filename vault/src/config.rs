//! Configuration: one [`Config`], from a TOML file, then `VAULT_*`
//! environment variables, then command-line flags (later wins). Every
//! problem is reported at once.
//!
//! | key | env | default |
//! |---|---|---|
//! | `listen_addr` | `VAULT_LISTEN_ADDR` | `127.0.0.1:50051` |
//! | `data_dir` | `VAULT_DATA_DIR` | `./vault-data` |
//! | `root_key_file` | `VAULT_ROOT_KEY_FILE` | `./vault-root.key` (beside, not inside, the data) |
//! | `schema_file` | `VAULT_SCHEMA_FILE` | built-in `policies/fields.toml` |
//! | `max_batch_items` | `VAULT_MAX_BATCH_ITEMS` | 256 |
//! | `max_value_bytes` | `VAULT_MAX_VALUE_BYTES` | 4096 |
//! | `max_request_bytes` | `VAULT_MAX_REQUEST_BYTES` | 1048576 |
//! | `dek_cache_entries` | `VAULT_DEK_CACHE_ENTRIES` | 100000 |
//! | `kek_cryptoperiod_days` | `VAULT_KEK_CRYPTOPERIOD_DAYS` | 365: days a KEK wraps new data keys; then they are refused until keys are rotated (1 to 3650) |
//! | `kek_warning_days` | `VAULT_KEK_WARNING_DAYS` | 30: days before that to warn (log at start, `Status`) |
//! | `dek_max_encryptions` | `VAULT_DEK_MAX_ENCRYPTIONS` | 16777216 (2^24): values a subject's DEK seals before a new one replaces it (1 to 2^31) |
//! | `record_cache_entries` | `VAULT_RECORD_CACHE_ENTRIES` | 100000 (subject records, and as many token pointers) |
//! | `store_cache_bytes` | `VAULT_STORE_CACHE_BYTES` | 268435456 (256 MiB) |
//! | `shutdown_grace_secs` | `VAULT_SHUTDOWN_GRACE_SECS` | 10: longest wait for open requests and connections on SIGTERM |
//! | `durability` | `VAULT_DURABILITY` | `fsync` (or `flush`) |
//! | `log_format` | `VAULT_LOG_FORMAT` | `text` (or `json`) |
//! | `init_if_missing` | `VAULT_INIT_IF_MISSING` | `true`: first start makes a dev key file |
//! | `policy_dir` | `VAULT_POLICY_DIR` | built-in `policies/*.cedar` + `vault.cedarschema` |
//! | `hsm_module` | `VAULT_HSM_MODULE` | none: the root key comes from a key file or shares. A PKCS#11 module: the root key lives in that token |
//! | `hsm_token_label` | `VAULT_HSM_TOKEN_LABEL` | `vault`: the token that holds the root key |
//! | `hsm_key_label` | `VAULT_HSM_KEY_LABEL` | `vault-root-key`: the root key object's label |
//! | (environment only) | `VAULT_HSM_PIN` | the token's user PIN (never in a file) |
//! | `tls_cert_file` | `VAULT_TLS_CERT_FILE` | none: plaintext, loopback only |
//! | `tls_key_file` | `VAULT_TLS_KEY_FILE` | none |
//! | `tls_client_ca_file` | `VAULT_TLS_CLIENT_CA_FILE` | none: no client certificates (bearer tokens only) |
//! | `[mtls_principals]` | (file only) | empty: certificate principal (URI SAN or CN) = role |
//! | `max_token_ttl_secs` | `VAULT_MAX_TOKEN_TTL_SECS` | 2592000 (30 days): longest bearer-token life |
//! | `audit_timeout_ms` | `VAULT_AUDIT_TIMEOUT_MS` | 2000: longest wait for a request's audit event to be durable; then `UNAVAILABLE` (at most a tenth later) |
//! | `audit_retention_days` | `VAULT_AUDIT_RETENTION_DAYS` | 365: audit events are kept this long, then pruned (1 to 3650) |
//! | `audit_query_days` | `VAULT_AUDIT_QUERY_DAYS` | 90: a query without a time range covers this many days (1 to retention) |
//! | `audit_checkpoint_events` | `VAULT_AUDIT_CHECKPOINT_EVENTS` | 10000: a signed checkpoint at least every this many events |
//! | `audit_checkpoint_secs` | `VAULT_AUDIT_CHECKPOINT_SECS` | 60: … or this many seconds |
//! | `audit_sync_gather_us` | `VAULT_AUDIT_SYNC_GATHER_US` | 1000: under load, at most one audit sync per this many µs (more events per sync); 0 to 100000 |
//! | `audit_segment_bytes` | `VAULT_AUDIT_SEGMENT_BYTES` | 67108864 (64 MiB): size of an audit segment file (4096 or more) |
//! | `cvv_ttl_secs` | `VAULT_CVV_TTL_SECS` | 900 (15 minutes): how long a CVV waits in memory for its one reveal (1 to 86400) |
//! | `cvv_max_pending` | `VAULT_CVV_MAX_PENDING` | 100000: most CVVs waiting at once; beyond, Tokenize with a CVV is `RESOURCE_EXHAUSTED` |
//! | `retention_sweep_secs` | `VAULT_RETENTION_SWEEP_SECS` | 3600: how often the retention sweeper runs (60 to 86400; 0: only when asked) |
//! | `auth_failure_window_secs` | `VAULT_AUTH_FAILURE_WINDOW_SECS` | 60: the window failed authentications are counted in (1 to 3600) |
//! | `auth_failures_per_peer` | `VAULT_AUTH_FAILURES_PER_PEER` | 20: failures per peer address (IPv6: /64) per window; beyond, its failures are `RESOURCE_EXHAUSTED` |
//! | `auth_failures_per_credential` | `VAULT_AUTH_FAILURES_PER_CREDENTIAL` | 10: failures per credential id per window; beyond, that id from a failing peer is refused unchecked |
//! | `auth_failures_audited_per_peer` | `VAULT_AUTH_FAILURES_AUDITED_PER_PEER` | 10: failures per peer per window with their own `auth_failure` event; the rest in one summary |
//! | `auth_failures_audited_total` | `VAULT_AUTH_FAILURES_AUDITED_TOTAL` | 1000: … and over all peers |
//! | `auth_throttle_entries` | `VAULT_AUTH_THROTTLE_ENTRIES` | 10000: peers, and credential ids, counted at once (LRU; 16 to 1000000) |
//! | `unseal_window_secs` | `VAULT_UNSEAL_WINDOW_SECS` | 60: the window failed unseal attempts are counted in (1 to 3600) |
//! | `unseal_failures_per_peer` | `VAULT_UNSEAL_FAILURES_PER_PEER` | 10: failed unseal attempts per peer per window; beyond, `RESOURCE_EXHAUSTED` |
//! | `unseal_failures_total` | `VAULT_UNSEAL_FAILURES_TOTAL` | 100: … from all peers; beyond, failing peers get `RESOURCE_EXHAUSTED` |
//! | (environment only) | `VAULT_TEST_CLOCK_OFFSET_SECS` | 0: shifts the vault's clock, for tests and drills only (logged loudly) |
//!
//! Log verbosity is `VAULT_LOG` (a `tracing` filter, default `info`).

use crate::store::sled::Durability;
use serde::Deserialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Output format of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Size limits on requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most fields in a Tokenize or tokens in a Detokenize.
    pub max_batch_items: usize,
    /// Longest value, in bytes.
    pub max_value_bytes: usize,
    /// Largest request, in bytes (encoded protobuf).
    pub max_request_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_batch_items: 256,
            max_value_bytes: 4096,
            max_request_bytes: 1 << 20,
        }
    }
}

/// The vault's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub listen_addr: SocketAddr,
    /// Directory of the embedded store.
    pub data_dir: PathBuf,
    /// The development root key file.
    pub root_key_file: PathBuf,
    /// The field schema; `None` uses the built-in default.
    pub schema_file: Option<PathBuf>,
    /// Request size limits.
    pub limits: Limits,
    /// Most unwrapped DEKs kept in memory.
    pub dek_cache_entries: usize,
    /// Values a subject's DEK seals before it is replaced (GCM limit).
    pub dek_max_encryptions: u64,
    /// Days a KEK wraps new data keys.
    pub kek_cryptoperiod_days: u32,
    /// Days before the end of a KEK's cryptoperiod to warn.
    pub kek_warning_days: u32,
    /// Most decoded subject records (and token pointers) kept in memory.
    pub record_cache_entries: usize,
    /// sled's page cache, in bytes.
    pub store_cache_bytes: u64,
    /// What an acknowledged write survives.
    pub durability: Durability,
    /// Longest wait for in-flight requests and open connections at shutdown.
    pub shutdown_grace: std::time::Duration,
    /// Log output format.
    pub log_format: LogFormat,
    /// Whether a first start on an empty data directory creates a dev key file.
    pub init_if_missing: bool,
    /// Directory of `vault.cedarschema` and `*.cedar`; `None` uses the built-in ones.
    pub policy_dir: Option<PathBuf>,
    /// TLS: the server's certificate chain and key (PEM), and the CA that
    /// client certificates must chain to.
    pub tls: TlsFiles,
    /// The HSM that holds the root key (`None`: key file or shares).
    pub hsm: Option<crate::crypto::hsm::HsmSettings>,
    /// Certificate principal (URI SAN or CN) → role.
    pub mtls_principals: HashMap<String, String>,
    /// Longest life of a bearer token, in seconds.
    pub max_token_ttl_secs: u64,
    /// Seconds added to the system clock (tests and drills only).
    pub clock_offset_secs: i64,
    /// Longest wait for a request's audit event to be durable.
    pub audit_timeout: std::time::Duration,
    /// Days audit events are kept.
    pub audit_retention_days: u32,
    /// Days a query without a time range covers.
    pub audit_query_days: u32,
    /// Most events between two signed checkpoints.
    pub audit_checkpoint_events: u64,
    /// Most seconds between two signed checkpoints.
    pub audit_checkpoint_secs: u64,
    /// Size of an audit segment file.
    pub audit_segment_bytes: u64,
    /// Shortest time between two audit syncs, in microseconds.
    pub audit_sync_gather_us: u64,
    /// How long a CVV waits in memory for its one reveal, in seconds.
    pub cvv_ttl_secs: u64,
    /// Most CVVs waiting at once.
    pub cvv_max_pending: usize,
    /// Seconds between two runs of the retention sweeper (0: only on request).
    pub retention_sweep_secs: u64,
    /// Limits on failed authentications (see [`crate::throttle`]).
    pub auth_throttle: crate::throttle::AuthSettings,
    /// Limits on failed unseal attempts.
    pub unseal_throttle: crate::throttle::UnsealSettings,
}

/// TLS files (PEM). With none, the vault serves plaintext on loopback only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain.
    pub cert_file: Option<PathBuf>,
    /// The server's private key.
    pub key_file: Option<PathBuf>,
    /// The CA that client certificates must chain to (enables mTLS).
    pub client_ca_file: Option<PathBuf>,
}

impl TlsFiles {
    /// Whether the vault serves TLS.
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            data_dir: PathBuf::from("./vault-data"),
            root_key_file: PathBuf::from("./vault-root.key"),
            schema_file: None,
            limits: Limits::default(),
            dek_cache_entries: 100_000,
            dek_max_encryptions: crate::engine::DEFAULT_DEK_MAX_ENCRYPTIONS,
            kek_cryptoperiod_days: crate::engine::DEFAULT_KEK_CRYPTOPERIOD_DAYS,
            kek_warning_days: crate::engine::DEFAULT_KEK_WARNING_DAYS,
            record_cache_entries: 100_000,
            store_cache_bytes: 256 << 20,
            durability: Durability::Fsync,
            shutdown_grace: std::time::Duration::from_secs(10),
            log_format: LogFormat::Text,
            init_if_missing: true,
            policy_dir: None,
            tls: TlsFiles::default(),
            hsm: None,
            mtls_principals: HashMap::new(),
            max_token_ttl_secs: 30 * 24 * 3600,
            clock_offset_secs: 0,
            audit_timeout: std::time::Duration::from_millis(2000),
            audit_retention_days: 365,
            audit_query_days: 90,
            audit_checkpoint_events: 10_000,
            audit_checkpoint_secs: 60,
            audit_segment_bytes: 64 << 20,
            audit_sync_gather_us: 1000,
            cvv_ttl_secs: 900,
            cvv_max_pending: 100_000,
            retention_sweep_secs: 3600,
            auth_throttle: crate::throttle::AuthSettings::default(),
            unseal_throttle: crate::throttle::UnsealSettings::default(),
        }
    }
}

/// Every problem found in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration:\n  {}", .problems.join("\n  "))]
pub struct ConfigError {
    /// One line per problem, naming its source and key.
    pub problems: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen_addr: Option<String>,
    data_dir: Option<PathBuf>,
    root_key_file: Option<PathBuf>,
    schema_file: Option<PathBuf>,
    max_batch_items: Option<usize>,
    max_value_bytes: Option<usize>,
    max_request_bytes: Option<usize>,
    dek_cache_entries: Option<usize>,
    dek_max_encryptions: Option<u64>,
    kek_cryptoperiod_days: Option<u32>,
    kek_warning_days: Option<u32>,
    record_cache_entries: Option<usize>,
    store_cache_bytes: Option<u64>,
    durability: Option<String>,
    shutdown_grace_secs: Option<u64>,
    log_format: Option<String>,
    init_if_missing: Option<bool>,
    policy_dir: Option<PathBuf>,
    hsm_module: Option<PathBuf>,
    hsm_token_label: Option<String>,
    hsm_key_label: Option<String>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    tls_client_ca_file: Option<PathBuf>,
    mtls_principals: Option<HashMap<String, String>>,
    max_token_ttl_secs: Option<u64>,
    audit_timeout_ms: Option<u64>,
    audit_retention_days: Option<u32>,
    audit_query_days: Option<u32>,
    audit_checkpoint_events: Option<u64>,
    audit_checkpoint_secs: Option<u64>,
    audit_segment_bytes: Option<u64>,
    audit_sync_gather_us: Option<u64>,
    cvv_ttl_secs: Option<u64>,
    cvv_max_pending: Option<usize>,
    retention_sweep_secs: Option<u64>,
    auth_failure_window_secs: Option<u64>,
    auth_failures_per_peer: Option<u32>,
    auth_failures_per_credential: Option<u32>,
    auth_failures_audited_per_peer: Option<u32>,
    auth_failures_audited_total: Option<u32>,
    auth_throttle_entries: Option<usize>,
    unseal_window_secs: Option<u64>,
    unseal_failures_per_peer: Option<u32>,
    unseal_failures_total: Option<u32>,
}

/// Overrides from the command line.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen_addr: Option<String>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--root-key-file`.
    pub root_key_file: Option<PathBuf>,
    /// `--schema`.
    pub schema_file: Option<PathBuf>,
    /// `--policy-dir`.
    pub policy_dir: Option<PathBuf>,
}

fn parse_into<T: std::str::FromStr>(
    problems: &mut Vec<String>,
    source: &str,
    key: &str,
    text: &str,
    slot: &mut T,
) {
    match text.trim().parse() {
        Ok(v) => *slot = v,
        Err(_) => problems.push(format!("{source}: {key}: cannot parse {text:?}")),
    }
}

impl Config {
    /// The HSM settings, made with their defaults on first use.
    fn hsm_settings(&mut self) -> &mut crate::crypto::hsm::HsmSettings {
        self.hsm
            .get_or_insert_with(|| crate::crypto::hsm::HsmSettings {
                module: PathBuf::new(),
                token_label: "vault".into(),
                key_label: "vault-root-key".into(),
            })
    }

    /// Loads the configuration: `file` (if any), then the environment as
    /// given by `env` (pairs of name and value), then `overrides`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
        let mut c = Config::default();
        let mut problems = Vec::new();
        if let Some(path) = file {
            let src = path.display().to_string();
            match std::fs::read_to_string(path) {
                Err(e) => problems.push(format!("{src}: cannot read: {e}")),
                Ok(text) => match toml::from_str::<RawConfig>(&text) {
                    Err(e) => problems.push(format!(
                        "{src}: {}",
                        e.to_string().trim_end().replace('\n', "\n    ")
                    )),
                    Ok(raw) => c.apply_raw(raw, &src, &mut problems),
                },
            }
        }
        for (name, value) in env {
            let Some(key) = name.strip_prefix("VAULT_") else {
                continue;
            };
            let src = format!("environment {name}");
            let s = &mut problems;
            match key {
                "LISTEN_ADDR" => parse_into(s, &src, "listen_addr", &value, &mut c.listen_addr),
                "DATA_DIR" => c.data_dir = PathBuf::from(value),
                "ROOT_KEY_FILE" => c.root_key_file = PathBuf::from(value),
                "SCHEMA_FILE" => c.schema_file = Some(PathBuf::from(value)),
                "MAX_BATCH_ITEMS" => parse_into(
                    s,
                    &src,
                    "max_batch_items",
                    &value,
                    &mut c.limits.max_batch_items,
                ),
                "MAX_VALUE_BYTES" => parse_into(
                    s,
                    &src,
                    "max_value_bytes",
                    &value,
                    &mut c.limits.max_value_bytes,
                ),
                "MAX_REQUEST_BYTES" => parse_into(
                    s,
                    &src,
                    "max_request_bytes",
                    &value,
                    &mut c.limits.max_request_bytes,
                ),
                "DEK_CACHE_ENTRIES" => parse_into(
                    s,
                    &src,
                    "dek_cache_entries",
                    &value,
                    &mut c.dek_cache_entries,
                ),
                "KEK_CRYPTOPERIOD_DAYS" => parse_into(
                    s,
                    &src,
                    "kek_cryptoperiod_days",
                    &value,
                    &mut c.kek_cryptoperiod_days,
                ),
                "KEK_WARNING_DAYS" => {
                    parse_into(s, &src, "kek_warning_days", &value, &mut c.kek_warning_days)
                }
                "DEK_MAX_ENCRYPTIONS" => parse_into(
                    s,
                    &src,
                    "dek_max_encryptions",
                    &value,
                    &mut c.dek_max_encryptions,
                ),
                "RECORD_CACHE_ENTRIES" => parse_into(
                    s,
                    &src,
                    "record_cache_entries",
                    &value,
                    &mut c.record_cache_entries,
                ),
                "STORE_CACHE_BYTES" => parse_into(
                    s,
                    &src,
                    "store_cache_bytes",
                    &value,
                    &mut c.store_cache_bytes,
                ),
                "DURABILITY" => c.set_durability(&value, &src, s),
                "SHUTDOWN_GRACE_SECS" => {
                    let mut secs = c.shutdown_grace.as_secs();
                    parse_into(s, &src, "shutdown_grace_secs", &value, &mut secs);
                    c.shutdown_grace = std::time::Duration::from_secs(secs);
                }
                "LOG_FORMAT" => c.set_log_format(&value, &src, s),
                "INIT_IF_MISSING" => {
                    parse_into(s, &src, "init_if_missing", &value, &mut c.init_if_missing)
                }
                "POLICY_DIR" => c.policy_dir = Some(PathBuf::from(value)),
                "HSM_MODULE" => c.hsm_settings().module = PathBuf::from(value),
                "HSM_TOKEN_LABEL" => c.hsm_settings().token_label = value,
                "HSM_KEY_LABEL" => c.hsm_settings().key_label = value,
                // Read where the token is opened, never kept in the configuration.
                "HSM_PIN" => {}
                "TLS_CERT_FILE" => c.tls.cert_file = Some(PathBuf::from(value)),
                "TLS_KEY_FILE" => c.tls.key_file = Some(PathBuf::from(value)),
                "TLS_CLIENT_CA_FILE" => c.tls.client_ca_file = Some(PathBuf::from(value)),
                "TEST_CLOCK_OFFSET_SECS" => parse_into(
                    s,
                    &src,
                    "clock_offset_secs",
                    &value,
                    &mut c.clock_offset_secs,
                ),
                "AUDIT_TIMEOUT_MS" => {
                    let mut ms = u64::try_from(c.audit_timeout.as_millis()).unwrap_or(u64::MAX);
                    parse_into(s, &src, "audit_timeout_ms", &value, &mut ms);
                    c.audit_timeout = std::time::Duration::from_millis(ms);
                }
                "AUDIT_RETENTION_DAYS" => parse_into(
                    s,
                    &src,
                    "audit_retention_days",
                    &value,
                    &mut c.audit_retention_days,
                ),
                "AUDIT_QUERY_DAYS" => {
                    parse_into(s, &src, "audit_query_days", &value, &mut c.audit_query_days)
                }
                "AUDIT_CHECKPOINT_EVENTS" => parse_into(
                    s,
                    &src,
                    "audit_checkpoint_events",
                    &value,
                    &mut c.audit_checkpoint_events,
                ),
                "AUDIT_CHECKPOINT_SECS" => parse_into(
                    s,
                    &src,
                    "audit_checkpoint_secs",
                    &value,
                    &mut c.audit_checkpoint_secs,
                ),
                "RETENTION_SWEEP_SECS" => parse_into(
                    s,
                    &src,
                    "retention_sweep_secs",
                    &value,
                    &mut c.retention_sweep_secs,
                ),
                "CVV_TTL_SECS" => parse_into(s, &src, "cvv_ttl_secs", &value, &mut c.cvv_ttl_secs),
                "CVV_MAX_PENDING" => {
                    parse_into(s, &src, "cvv_max_pending", &value, &mut c.cvv_max_pending)
                }
                "AUDIT_SYNC_GATHER_US" => parse_into(
                    s,
                    &src,
                    "audit_sync_gather_us",
                    &value,
                    &mut c.audit_sync_gather_us,
                ),
                "AUDIT_SEGMENT_BYTES" => parse_into(
                    s,
                    &src,
                    "audit_segment_bytes",
                    &value,
                    &mut c.audit_segment_bytes,
                ),
                "MAX_TOKEN_TTL_SECS" => parse_into(
                    s,
                    &src,
                    "max_token_ttl_secs",
                    &value,
                    &mut c.max_token_ttl_secs,
                ),
                "AUTH_FAILURE_WINDOW_SECS" => parse_into(
                    s,
                    &src,
                    "auth_failure_window_secs",
                    &value,
                    &mut c.auth_throttle.window_secs,
                ),
                "AUTH_FAILURES_PER_PEER" => parse_into(
                    s,
                    &src,
                    "auth_failures_per_peer",
                    &value,
                    &mut c.auth_throttle.per_peer,
                ),
                "AUTH_FAILURES_PER_CREDENTIAL" => parse_into(
                    s,
                    &src,
                    "auth_failures_per_credential",
                    &value,
                    &mut c.auth_throttle.per_credential,
                ),
                "AUTH_FAILURES_AUDITED_PER_PEER" => parse_into(
                    s,
                    &src,
                    "auth_failures_audited_per_peer",
                    &value,
                    &mut c.auth_throttle.audited_per_peer,
                ),
                "AUTH_FAILURES_AUDITED_TOTAL" => parse_into(
                    s,
                    &src,
                    "auth_failures_audited_total",
                    &value,
                    &mut c.auth_throttle.audited_total,
                ),
                "AUTH_THROTTLE_ENTRIES" => parse_into(
                    s,
                    &src,
                    "auth_throttle_entries",
                    &value,
                    &mut c.auth_throttle.entries,
                ),
                "UNSEAL_WINDOW_SECS" => parse_into(
                    s,
                    &src,
                    "unseal_window_secs",
                    &value,
                    &mut c.unseal_throttle.window_secs,
                ),
                "UNSEAL_FAILURES_PER_PEER" => parse_into(
                    s,
                    &src,
                    "unseal_failures_per_peer",
                    &value,
                    &mut c.unseal_throttle.per_peer,
                ),
                "UNSEAL_FAILURES_TOTAL" => parse_into(
                    s,
                    &src,
                    "unseal_failures_total",
                    &value,
                    &mut c.unseal_throttle.total,
                ),
                // VAULT_LOG is read by the log set-up, VAULT_CONFIG names the file,
                // the rest are vaultctl's.
                "LOG" | "CONFIG" | "ADDR" | "TOKEN" | "CACERT" | "CLIENT_CERT" | "CLIENT_KEY"
                | "TLS_DOMAIN" | "ERASE_TOKEN" => {}
                _ => problems.push(format!("{src}: unknown setting")),
            }
        }
        if let Some(a) = &overrides.listen_addr {
            parse_into(
                &mut problems,
                "--listen",
                "listen_addr",
                a,
                &mut c.listen_addr,
            );
        }
        if let Some(d) = &overrides.data_dir {
            c.data_dir = d.clone();
        }
        if let Some(k) = &overrides.root_key_file {
            c.root_key_file = k.clone();
        }
        if let Some(s) = &overrides.schema_file {
            c.schema_file = Some(s.clone());
        }
        if let Some(d) = &overrides.policy_dir {
            c.policy_dir = Some(d.clone());
        }
        c.check(&mut problems);
        if problems.is_empty() {
            Ok(c)
        } else {
            Err(ConfigError { problems })
        }
    }

    fn apply_raw(&mut self, raw: RawConfig, src: &str, problems: &mut Vec<String>) {
        if let Some(a) = raw.listen_addr {
            parse_into(problems, src, "listen_addr", &a, &mut self.listen_addr);
        }
        if let Some(v) = raw.data_dir {
            self.data_dir = v;
        }
        if let Some(v) = raw.root_key_file {
            self.root_key_file = v;
        }
        if raw.schema_file.is_some() {
            self.schema_file = raw.schema_file;
        }
        if let Some(v) = raw.max_batch_items {
            self.limits.max_batch_items = v;
        }
        if let Some(v) = raw.max_value_bytes {
            self.limits.max_value_bytes = v;
        }
        if let Some(v) = raw.max_request_bytes {
            self.limits.max_request_bytes = v;
        }
        if let Some(v) = raw.dek_cache_entries {
            self.dek_cache_entries = v;
        }
        if let Some(v) = raw.dek_max_encryptions {
            self.dek_max_encryptions = v;
        }
        if let Some(v) = raw.kek_cryptoperiod_days {
            self.kek_cryptoperiod_days = v;
        }
        if let Some(v) = raw.kek_warning_days {
            self.kek_warning_days = v;
        }
        if let Some(v) = raw.record_cache_entries {
            self.record_cache_entries = v;
        }
        if let Some(v) = raw.store_cache_bytes {
            self.store_cache_bytes = v;
        }
        if let Some(v) = raw.shutdown_grace_secs {
            self.shutdown_grace = std::time::Duration::from_secs(v);
        }
        if let Some(v) = raw.durability {
            self.set_durability(&v, src, problems);
        }
        if let Some(v) = raw.log_format {
            self.set_log_format(&v, src, problems);
        }
        if let Some(v) = raw.init_if_missing {
            self.init_if_missing = v;
        }
        if raw.policy_dir.is_some() {
            self.policy_dir = raw.policy_dir;
        }
        if let Some(m) = raw.hsm_module {
            self.hsm_settings().module = m;
        }
        if let Some(t) = raw.hsm_token_label {
            self.hsm_settings().token_label = t;
        }
        if let Some(k) = raw.hsm_key_label {
            self.hsm_settings().key_label = k;
        }
        if raw.tls_cert_file.is_some() {
            self.tls.cert_file = raw.tls_cert_file;
        }
        if raw.tls_key_file.is_some() {
            self.tls.key_file = raw.tls_key_file;
        }
        if raw.tls_client_ca_file.is_some() {
            self.tls.client_ca_file = raw.tls_client_ca_file;
        }
        if let Some(m) = raw.mtls_principals {
            self.mtls_principals = m;
        }
        if let Some(v) = raw.max_token_ttl_secs {
            self.max_token_ttl_secs = v;
        }
        if let Some(v) = raw.audit_timeout_ms {
            self.audit_timeout = std::time::Duration::from_millis(v);
        }
        if let Some(v) = raw.audit_retention_days {
            self.audit_retention_days = v;
        }
        if let Some(v) = raw.audit_query_days {
            self.audit_query_days = v;
        }
        if let Some(v) = raw.audit_checkpoint_events {
            self.audit_checkpoint_events = v;
        }
        if let Some(v) = raw.audit_checkpoint_secs {
            self.audit_checkpoint_secs = v;
        }
        if let Some(v) = raw.audit_segment_bytes {
            self.audit_segment_bytes = v;
        }
        if let Some(v) = raw.audit_sync_gather_us {
            self.audit_sync_gather_us = v;
        }
        if let Some(v) = raw.cvv_ttl_secs {
            self.cvv_ttl_secs = v;
        }
        if let Some(v) = raw.cvv_max_pending {
            self.cvv_max_pending = v;
        }
        if let Some(v) = raw.retention_sweep_secs {
            self.retention_sweep_secs = v;
        }
        let a = &mut self.auth_throttle;
        if let Some(v) = raw.auth_failure_window_secs {
            a.window_secs = v;
        }
        if let Some(v) = raw.auth_failures_per_peer {
            a.per_peer = v;
        }
        if let Some(v) = raw.auth_failures_per_credential {
            a.per_credential = v;
        }
        if let Some(v) = raw.auth_failures_audited_per_peer {
            a.audited_per_peer = v;
        }
        if let Some(v) = raw.auth_failures_audited_total {
            a.audited_total = v;
        }
        if let Some(v) = raw.auth_throttle_entries {
            a.entries = v;
        }
        let u = &mut self.unseal_throttle;
        if let Some(v) = raw.unseal_window_secs {
            u.window_secs = v;
        }
        if let Some(v) = raw.unseal_failures_per_peer {
            u.per_peer = v;
        }
        if let Some(v) = raw.unseal_failures_total {
            u.total = v;
        }
    }

    /// The audit trail's settings.
    pub fn audit_settings(&self) -> crate::audit::Settings {
        crate::audit::Settings {
            timeout: self.audit_timeout,
            retention_days: self.audit_retention_days,
            query_days: self.audit_query_days,
            checkpoint_events: self.audit_checkpoint_events,
            checkpoint_secs: self.audit_checkpoint_secs,
            segment_bytes: self.audit_segment_bytes,
            sync: self.durability == Durability::Fsync,
            gather: std::time::Duration::from_micros(self.audit_sync_gather_us),
        }
    }

    fn set_durability(&mut self, v: &str, src: &str, problems: &mut Vec<String>) {
        match v.trim() {
            "fsync" => self.durability = Durability::Fsync,
            "flush" => self.durability = Durability::Flush,
            other => problems.push(format!(
                "{src}: durability: {other:?} is not fsync or flush"
            )),
        }
    }

    fn set_log_format(&mut self, v: &str, src: &str, problems: &mut Vec<String>) {
        match v.trim() {
            "text" => self.log_format = LogFormat::Text,
            "json" => self.log_format = LogFormat::Json,
            other => problems.push(format!("{src}: log_format: {other:?} is not text or json")),
        }
    }

    fn check(&self, problems: &mut Vec<String>) {
        let l = &self.limits;
        if !(1..=10_000).contains(&l.max_batch_items) {
            problems.push("max_batch_items: must be 1 to 10000".into());
        }
        if !(16..=1 << 20).contains(&l.max_value_bytes) {
            problems.push("max_value_bytes: must be 16 to 1048576".into());
        }
        if !(1024..=64 << 20).contains(&l.max_request_bytes) {
            problems.push("max_request_bytes: must be 1024 to 67108864".into());
        }
        if self.dek_cache_entries == 0 {
            problems.push("dek_cache_entries: must be at least 1".into());
        }
        if !(1..=3650).contains(&self.kek_cryptoperiod_days) {
            problems.push("kek_cryptoperiod_days: must be 1 to 3650".into());
        }
        if self.kek_warning_days > 365 {
            problems.push("kek_warning_days: must be 0 to 365".into());
        }
        if !(1..=1 << 31).contains(&self.dek_max_encryptions) {
            problems.push("dek_max_encryptions: must be 1 to 2147483648".into());
        }
        if self.record_cache_entries == 0 {
            problems.push("record_cache_entries: must be at least 1".into());
        }
        if self.shutdown_grace.as_secs() > 3600 {
            problems.push("shutdown_grace_secs: must be at most 3600".into());
        }
        if self.store_cache_bytes < 1 << 20 {
            problems.push("store_cache_bytes: must be at least 1048576".into());
        }
        if !self.listen_addr.ip().is_loopback() && !self.tls.enabled() {
            problems.push(format!(
                "listen_addr: {} is not a loopback address; without TLS (tls_cert_file, tls_key_file) \
                 the vault serves only on 127.0.0.1 or ::1",
                self.listen_addr
            ));
        }
        if let Some(h) = &self.hsm {
            if h.module.as_os_str().is_empty() {
                problems.push("hsm_token_label or hsm_key_label given without hsm_module".into());
            }
            if h.token_label.is_empty() || h.key_label.is_empty() {
                problems.push("hsm_token_label and hsm_key_label must not be empty".into());
            }
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            problems.push("tls_cert_file and tls_key_file: give both or neither".into());
        }
        if self.tls.client_ca_file.is_some() && !self.tls.enabled() {
            problems.push("tls_client_ca_file: needs tls_cert_file and tls_key_file".into());
        }
        if !self.mtls_principals.is_empty() && self.tls.client_ca_file.is_none() {
            problems.push("mtls_principals: client certificates need tls_client_ca_file".into());
        }
        for (principal, role) in &self.mtls_principals {
            if let Err(e) = crate::auth::credentials::check_name(principal) {
                problems.push(format!("mtls_principals: {principal:?}: {e}"));
            }
            if let Err(e) = crate::auth::credentials::check_role(role) {
                problems.push(format!("mtls_principals: {principal:?}: {e}"));
            }
        }
        if !(10..=60_000).contains(&self.audit_timeout.as_millis()) {
            problems.push("audit_timeout_ms: must be 10 to 60000".into());
        }
        if !(1..=3650).contains(&self.audit_retention_days) {
            problems.push("audit_retention_days: must be 1 to 3650".into());
        }
        if !(1..=self.audit_retention_days.max(1)).contains(&self.audit_query_days) {
            problems.push("audit_query_days: must be 1 to audit_retention_days".into());
        }
        if !(1..=10_000_000).contains(&self.audit_checkpoint_events) {
            problems.push("audit_checkpoint_events: must be 1 to 10000000".into());
        }
        if !(1..=86_400).contains(&self.audit_checkpoint_secs) {
            problems.push("audit_checkpoint_secs: must be 1 to 86400".into());
        }
        if !(1..=86_400).contains(&self.cvv_ttl_secs) {
            problems.push("cvv_ttl_secs: must be 1 to 86400".into());
        }
        if self.retention_sweep_secs != 0 && !(60..=86_400).contains(&self.retention_sweep_secs) {
            problems.push("retention_sweep_secs: must be 0 or 60 to 86400".into());
        }
        if self.cvv_max_pending == 0 {
            problems.push("cvv_max_pending: must be at least 1".into());
        }
        if self.audit_sync_gather_us > 100_000 {
            problems.push("audit_sync_gather_us: must be 0 to 100000".into());
        }
        if !(4096..=1 << 40).contains(&self.audit_segment_bytes) {
            problems.push("audit_segment_bytes: must be 4096 or more".into());
        }
        if !(60..=366 * 24 * 3600).contains(&self.max_token_ttl_secs) {
            problems.push("max_token_ttl_secs: must be 60 to 31622400 (366 days)".into());
        }
        let a = &self.auth_throttle;
        if !(1..=3600).contains(&a.window_secs) {
            problems.push("auth_failure_window_secs: must be 1 to 3600".into());
        }
        if !(1..=1_000_000).contains(&a.per_peer) {
            problems.push("auth_failures_per_peer: must be 1 to 1000000".into());
        }
        if !(1..=1_000_000).contains(&a.per_credential) {
            problems.push("auth_failures_per_credential: must be 1 to 1000000".into());
        }
        if a.audited_per_peer > 1_000_000 {
            problems.push("auth_failures_audited_per_peer: must be 0 to 1000000".into());
        }
        if a.audited_total > 10_000_000 {
            problems.push("auth_failures_audited_total: must be 0 to 10000000".into());
        }
        if !(16..=1_000_000).contains(&a.entries) {
            problems.push("auth_throttle_entries: must be 16 to 1000000".into());
        }
        let u = &self.unseal_throttle;
        if !(1..=3600).contains(&u.window_secs) {
            problems.push("unseal_window_secs: must be 1 to 3600".into());
        }
        if !(1..=10_000).contains(&u.per_peer) {
            problems.push("unseal_failures_per_peer: must be 1 to 10000".into());
        }
        if !(1..=100_000).contains(&u.total) {
            problems.push("unseal_failures_total: must be 1 to 100000".into());
        }
        if self.root_key_file.starts_with(&self.data_dir) {
            problems.push(
                "root_key_file: must not be inside data_dir (keys are kept apart from data)".into(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_safe() {
        let c = Config::load(None, env(&[]), &Overrides::default()).unwrap();
        assert!(c.listen_addr.ip().is_loopback());
        assert_eq!(c.limits.max_batch_items, 256);
        assert_eq!(c.durability, Durability::Fsync);
    }

    #[test]
    fn file_then_env_then_flags_and_all_errors_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("v.toml");
        std::fs::write(&f, "max_batch_items = 10\ndurability = \"flush\"\n").unwrap();
        let o = Overrides {
            listen_addr: Some("127.0.0.1:0".into()),
            ..Default::default()
        };
        let c = Config::load(
            Some(&f),
            env(&[("VAULT_MAX_BATCH_ITEMS", "20"), ("HOME", "/x")]),
            &o,
        )
        .unwrap();
        assert_eq!(c.limits.max_batch_items, 20);
        assert_eq!(c.durability, Durability::Flush);
        assert_eq!(c.listen_addr.port(), 0);

        let err = Config::load(
            None,
            env(&[
                ("VAULT_MAX_BATCH_ITEMS", "lots"),
                ("VAULT_LISTEN_ADDR", "0.0.0.0:1"),
                ("VAULT_COLOUR", "red"),
            ]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(err.problems.len(), 3, "{err}");
    }

    #[test]
    fn the_example_file_is_valid_and_says_the_defaults() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/vault.example.toml");
        let c = Config::load(Some(&path), env(&[]), &Overrides::default()).unwrap();
        let d = Config::default();
        assert_eq!(c.listen_addr, d.listen_addr);
        assert_eq!(c.limits, d.limits);
        assert_eq!(c.durability, d.durability);
        assert_eq!(c.store_cache_bytes, d.store_cache_bytes);
        assert_eq!(c.shutdown_grace, d.shutdown_grace);
        assert_eq!(c.auth_throttle, d.auth_throttle);
        assert_eq!(c.unseal_throttle, d.unseal_throttle);
    }

    #[test]
    fn unknown_keys_in_the_file_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("v.toml");
        std::fs::write(&f, "listen = \"x\"\n").unwrap();
        let err = Config::load(Some(&f), env(&[]), &Overrides::default()).unwrap_err();
        assert!(err.problems[0].contains("unknown field"), "{err}");
    }
}
