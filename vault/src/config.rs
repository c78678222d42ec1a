//! Configuration: one [`Config`], from a TOML file, then `VAULT_*`
//! environment variables, then command-line flags (later wins). Every
//! problem is reported at once.
//!
//! Each setting is one row of the list at the `settings!` call below: its key
//! in the file, its environment variable, its parser, its default and its
//! doc line. The fields of [`Config`], its defaults, the keys the file may
//! hold, the variables the environment may set and the settings table in
//! `docs/operations.md` ([`settings_table`]; a test fails when the two
//! differ) all come from that list. Ranges are checked, with the rest of
//! each setting's meaning, in `Config::check`.
//!
//! Only the vault's own variables start with `VAULT_`: those of the list,
//! and the few it reads elsewhere (listed there too, as environment only);
//! any other `VAULT_*` variable is an error. `vaultctl`'s start with
//! `VAULTCTL_`.

use crate::store::sled::Durability;
use serde::Deserialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod parse;
use parse::Parser;

/// Where keyed data and key slots are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Storage {
    /// sled and the key-slot file in `data_dir` (embedded; the default).
    Sled,
    /// A PostgreSQL database (`postgres_url`).
    Postgres,
}

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

/// A group of settings (a struct inside [`Config`]) with its defaults.
trait Group {
    /// Every setting of the group at its default.
    fn defaults() -> Self;
}

/// Sets a setting from an environment variable's value.
type FromEnv = fn(&mut Config, &str) -> Result<(), String>;
/// Takes a setting out of the file, if it is there, and sets it.
type FromFile = fn(&mut Config, &mut RawConfig) -> Option<Result<(), String>>;

/// One row of the settings list.
struct Row {
    /// Its key in the file (for an environment-only setting, its name in
    /// messages; for a variable read elsewhere, the variable).
    name: &'static str,
    /// Its environment variable, if it has one.
    env: Option<&'static str>,
    /// Its default, as the docs table shows it.
    default: fn() -> String,
    /// What it means, its range and unit.
    doc: &'static str,
    /// `None`: not a setting of the [`Config`] (read elsewhere), or file only.
    from_env: Option<FromEnv>,
    /// `None`: not in the file.
    from_file: Option<FromFile>,
}

/// The settings list: makes [`Config`], its `Default`, `RawConfig` (the
/// file) and `SETTINGS` (the environment and the docs) from entries of the
/// forms
///
/// - `key: Type [Parser] = default, env VAR, "doc";` (a field named `key`),
/// - `key => field: Type [Parser] = default, env VAR, "doc";`,
/// - `key: Type [Parser] = default, file, "doc";` (no variable),
/// - `key: Type [Parser] = default, env_only VAR, "doc";` (not in the file),
/// - `read_elsewhere VAR = "default", "doc";` (a variable that is no field),
/// - `/// doc` `field: Struct { key => sub: Type [Parser] = default, env VAR, "doc"; … }`
///   (a struct of settings), or `field: Option<Struct> { … }` (made with
///   the defaults when the first of them is set).
macro_rules! settings {
    // One row of `SETTINGS`: its name, its variable and file key (if any),
    // the place in a `Config` `c` it sets, its type, parser, default and doc.
    (@row $name:ident, [$($env:ident)?], [$($key:ident)?], ($($place:tt)*),
        $ty:ty, $p:ident, $def:expr, $doc:literal) => {
        Row {
            name: stringify!($name),
            env: settings!(@some $($env)?),
            default: || <parse::$p as Parser<$ty>>::show(&$def),
            doc: $doc,
            from_env: settings!(@from_env [$($env)?] ($($place)*) $ty, $p),
            from_file: settings!(@from_file [$($key)?] ($($place)*) $ty, $p),
        }
    };
    (@some) => { None };
    (@some $env:ident) => { Some(stringify!($env)) };
    (@from_env [] $($_:tt)*) => { None };
    (@from_env [$env:ident] ($($place:tt)*) $ty:ty, $p:ident) => {
        Some(|c, text| {
            c.$($place)* = <parse::$p as Parser<$ty>>::env(text)?;
            Ok(())
        })
    };
    (@from_file [] $($_:tt)*) => { None };
    (@from_file [$key:ident] ($($place:tt)*) $ty:ty, $p:ident) => {
        Some(|c, raw| {
            raw.$key.take().map(|v| {
                c.$($place)* = <parse::$p as Parser<$ty>>::file(v)?;
                Ok(())
            })
        })
    };

    // The entries, read one by one into the fields of `Config`, their
    // defaults, the keys of `RawConfig`, the rows and the `Group` impls.
    (@acc [$($f:tt)*] [$($d:tt)*] [$($r:tt)*] [$($s:tt)*] [$($i:tt)*]) => {
        /// The vault's configuration (see the module's documentation).
        #[derive(Debug, Clone)]
        pub struct Config { $($f)* }

        impl Default for Config {
            fn default() -> Self {
                Self { $($d)* }
            }
        }

        /// What the file may hold: every key is optional, any other is an error.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct RawConfig { $($r)* }

        /// Every setting, in the order of the docs table.
        const SETTINGS: &[Row] = &[$($s)*];

        $($i)*
    };
    (@acc $f:tt $d:tt $r:tt [$($s:tt)*] $i:tt
        read_elsewhere $env:ident = $shown:literal, $doc:literal; $($rest:tt)*) => {
        settings!(@acc $f $d $r [$($s)*
            Row {
                name: stringify!($env),
                env: Some(stringify!($env)),
                default: || String::from($shown),
                doc: $doc,
                from_env: None,
                from_file: None,
            },
        ] $i $($rest)*);
    };
    // A struct made with its defaults when the first of its settings is set.
    (@acc [$($f:tt)*] [$($d:tt)*] [$($r:tt)*] [$($s:tt)*] [$($i:tt)*]
        $(#[doc = $gdoc:literal])* $field:ident : Option<$group:path> {
            $($key:ident => $sub:ident : $ty:ty [$p:ident] = $def:expr, env $env:ident,
                $doc:literal;)*
        }
        $($rest:tt)*) => {
        settings!(@acc
            [$($f)* $(#[doc = $gdoc])* pub $field: Option<$group>,]
            [$($d)* $field: None,]
            [$($r)* $($key: Option<<parse::$p as Parser<$ty>>::Raw>,)*]
            [$($s)* $(settings!(@row $key, [$env], [$key],
                ($field.get_or_insert_with(<$group as Group>::defaults).$sub),
                $ty, $p, $def, $doc),)*]
            [$($i)* impl Group for $group { fn defaults() -> Self { Self { $($sub: $def,)* } } }]
            $($rest)*);
    };
    // A struct of settings.
    (@acc [$($f:tt)*] [$($d:tt)*] [$($r:tt)*] [$($s:tt)*] [$($i:tt)*]
        $(#[doc = $gdoc:literal])* $field:ident : $group:path {
            $($key:ident => $sub:ident : $ty:ty [$p:ident] = $def:expr, env $env:ident,
                $doc:literal;)*
        }
        $($rest:tt)*) => {
        settings!(@acc
            [$($f)* $(#[doc = $gdoc])* pub $field: $group,]
            [$($d)* $field: <$group as Group>::defaults(),]
            [$($r)* $($key: Option<<parse::$p as Parser<$ty>>::Raw>,)*]
            [$($s)* $(settings!(@row $key, [$env], [$key], ($field.$sub), $ty, $p, $def, $doc),)*]
            [$($i)* impl Group for $group { fn defaults() -> Self { Self { $($sub: $def,)* } } }]
            $($rest)*);
    };
    // A field named after its key.
    (@acc $f:tt $d:tt $r:tt $s:tt $i:tt
        $key:ident : $ty:ty [$p:ident] = $def:expr, $($src:ident)+, $doc:literal;
        $($rest:tt)*) => {
        settings!(@acc $f $d $r $s $i $key => $key: $ty [$p] = $def, $($src)+, $doc; $($rest)*);
    };
    // In the file and the environment.
    (@acc [$($f:tt)*] [$($d:tt)*] [$($r:tt)*] [$($s:tt)*] $i:tt
        $key:ident => $field:ident : $ty:ty [$p:ident] = $def:expr, env $env:ident, $doc:literal;
        $($rest:tt)*) => {
        settings!(@acc
            [$($f)* #[doc = $doc] pub $field: $ty,]
            [$($d)* $field: $def,]
            [$($r)* $key: Option<<parse::$p as Parser<$ty>>::Raw>,]
            [$($s)* settings!(@row $key, [$env], [$key], ($field), $ty, $p, $def, $doc),]
            $i $($rest)*);
    };
    // In the file only.
    (@acc [$($f:tt)*] [$($d:tt)*] [$($r:tt)*] [$($s:tt)*] $i:tt
        $key:ident => $field:ident : $ty:ty [$p:ident] = $def:expr, file, $doc:literal;
        $($rest:tt)*) => {
        settings!(@acc
            [$($f)* #[doc = $doc] pub $field: $ty,]
            [$($d)* $field: $def,]
            [$($r)* $key: Option<<parse::$p as Parser<$ty>>::Raw>,]
            [$($s)* settings!(@row $key, [], [$key], ($field), $ty, $p, $def, $doc),]
            $i $($rest)*);
    };
    // In the environment only.
    (@acc [$($f:tt)*] [$($d:tt)*] $r:tt [$($s:tt)*] $i:tt
        $key:ident => $field:ident : $ty:ty [$p:ident] = $def:expr, env_only $env:ident,
        $doc:literal; $($rest:tt)*) => {
        settings!(@acc
            [$($f)* #[doc = $doc] pub $field: $ty,]
            [$($d)* $field: $def,]
            $r
            [$($s)* settings!(@row $key, [$env], [], ($field), $ty, $p, $def, $doc),]
            $i $($rest)*);
    };
    (@acc $f:tt $d:tt $r:tt $s:tt $i:tt $($rest:tt)+) => {
        compile_error!(concat!("settings!: cannot read the entry at ", stringify!($($rest)+)));
    };

    ($($entries:tt)*) => {
        settings!(@acc [] [] [] [] [] $($entries)*);
    };
}

settings! {
    listen_addr: SocketAddr [Text] = SocketAddr::from(([127, 0, 0, 1], 50051)),
        env VAULT_LISTEN_ADDR,
        "The address to listen on: a loopback address unless TLS is configured.";
    data_dir: PathBuf [Path] = PathBuf::from("./vault-data"), env VAULT_DATA_DIR,
        "The directory of the embedded store (sled); made mode 0700 at every start, whoever \
         created it (logged when it had to be tightened), and `vaultd` runs with umask 077, so \
         every file in it is 0600.";
    root_key_file: PathBuf [Path] = PathBuf::from("./vault-root.key"), env VAULT_ROOT_KEY_FILE,
        "The development root key file: beside, never inside, `data_dir`.";
    schema_file: Option<PathBuf> [Path] = None, env VAULT_SCHEMA_FILE,
        "The field schema; none: the built-in `policies/fields.toml`.";
    /// Request size limits.
    limits: Limits {
        max_batch_items => max_batch_items: usize [Typed] = 256, env VAULT_MAX_BATCH_ITEMS,
            "Most fields per Tokenize, tokens per Detokenize (1 to 10000).";
        max_value_bytes => max_value_bytes: usize [Typed] = 4096, env VAULT_MAX_VALUE_BYTES,
            "Longest value, in bytes (16 to 1048576).";
        max_request_bytes => max_request_bytes: usize [Typed] = 1 << 20,
            env VAULT_MAX_REQUEST_BYTES,
            "Largest request, in bytes of encoded protobuf (1024 to 67108864).";
    }
    dek_cache_entries: usize [Typed] = 100_000, env VAULT_DEK_CACHE_ENTRIES,
        "Most unwrapped subject keys (DEKs) kept in memory (LRU; wiped on eviction; at least 1).";
    dek_max_encryptions: u64 [Typed] = crate::engine::DEFAULT_DEK_MAX_ENCRYPTIONS,
        env VAULT_DEK_MAX_ENCRYPTIONS,
        "Values a subject's DEK seals before the subject is re-keyed (2^24, far under \
         AES-GCM's 2^32 random-nonce limit; 1 to 2^31): a new key version seals all its values \
         again (at most 4096, so a limit below that is exceeded by the re-key itself: for tests).";
    kek_cryptoperiod_days: u32 [Typed] = crate::engine::DEFAULT_KEK_CRYPTOPERIOD_DAYS,
        env VAULT_KEK_CRYPTOPERIOD_DAYS,
        "Days a KEK wraps new data keys after it is made; then new data keys are refused \
         (`FAILED_PRECONDITION`) until keys are rotated (1 to 3650).";
    kek_warning_days: u32 [Typed] = crate::engine::DEFAULT_KEK_WARNING_DAYS,
        env VAULT_KEK_WARNING_DAYS,
        "Days before the end of a KEK's cryptoperiod to warn: at start in the log and in \
         `vaultctl status` (0 to 365).";
    record_cache_entries: usize [Typed] = 100_000, env VAULT_RECORD_CACHE_ENTRIES,
        "Most subject records, and as many token pointers, kept in memory (ciphertexts only; \
         at least 1).";
    store_cache_bytes: u64 [Typed] = 256 << 20, env VAULT_STORE_CACHE_BYTES,
        "sled's page cache, in bytes (256 MiB; at least 1048576).";
    storage: Storage [Choice] = Storage::Sled, env VAULT_STORAGE,
        "Where keyed data and key slots live: `sled` (embedded, in `data_dir`) or `postgres` \
         (`postgres_url`; several nodes may share one database, each with its own audit trail in \
         its `data_dir`: see [PostgreSQL](#postgresql)).";
    postgres_url: String [Label] = String::new(), env VAULT_POSTGRES_URL,
        "With `storage = \"postgres\"`: `postgres://USER@HOST:PORT/DATABASE` (or key=value \
         form), without a password; a host that is not loopback needs `postgres_ca_file`.";
    postgres_password_file: Option<PathBuf> [Path] = None, env VAULT_POSTGRES_PASSWORD_FILE,
        "A file whose first line is the database password; none: `VAULT_POSTGRES_PASSWORD`, \
         or no password.";
    read_elsewhere VAULT_POSTGRES_PASSWORD = "none",
        "The database password when no `postgres_password_file` is set: read at start, never \
         logged, never in a file of the vault.";
    postgres_ca_file: Option<PathBuf> [Path] = None, env VAULT_POSTGRES_CA_FILE,
        "The CA (PEM) of the database server's certificate: TLS (rustls) on; none: plaintext, \
         loopback only.";
    postgres_schema: String [Label] = String::new(), env VAULT_POSTGRES_SCHEMA,
        "The schema of the vault's tables (created if missing; lower-case letters, digits, \
         `_`); none: the user's default.";
    postgres_pool: usize [Typed] = 16, env VAULT_POSTGRES_POOL,
        "Connections to the database (1 to 256).";
    node_id: String [Label] = String::new(), env VAULT_NODE_ID,
        "With `storage = \"postgres\"`: this node's id among the nodes on one database \
         (at most 128 characters; two live nodes with one id are refused); none: the host \
         name and a random suffix, new at each start.";
    durability: Durability [Choice] = Durability::Fsync, env VAULT_DURABILITY,
        "What an acknowledged write survives: `fsync` or `flush`, see \
         [Durability](#durability).";
    shutdown_grace_secs => shutdown_grace: Duration [Secs] = Duration::from_secs(10),
        env VAULT_SHUTDOWN_GRACE_SECS,
        "Longest wait for open requests and connections on shutdown, in seconds (at most 3600).";
    log_format: LogFormat [Choice] = LogFormat::Text, env VAULT_LOG_FORMAT,
        "Log output: `text` or `json`.";
    init_if_missing: bool [Typed] = true, env VAULT_INIT_IF_MISSING,
        "Whether a first start on an empty data directory creates a dev root key file.";
    policy_dir: Option<PathBuf> [Path] = None, env VAULT_POLICY_DIR,
        "The directory of `vault.cedarschema` and `*.cedar`, reloaded on SIGHUP; none: the \
         built-in `policies/`.";
    /// The HSM that holds the root key (`None`: key file or shares).
    hsm: Option<crate::crypto::hsm::HsmSettings> {
        hsm_module => module: PathBuf [Path] = PathBuf::new(), env VAULT_HSM_MODULE,
            "A PKCS#11 module (e.g. `/usr/lib/softhsm/libsofthsm2.so`): the root key lives in \
             that HSM token (see [Keys](#keys)); none: in a key file or shares.";
        hsm_token_label => token_label: String [Label] = "vault".into(),
            env VAULT_HSM_TOKEN_LABEL,
            "The label of the token that holds the root key.";
        hsm_key_label => key_label: String [Label] = "vault-root-key".into(),
            env VAULT_HSM_KEY_LABEL,
            "The root key object's label in the token.";
    }
    read_elsewhere VAULT_HSM_PIN = "none",
        "The token's user PIN: read where the token is opened, never from a file, never logged.";
    read_elsewhere VAULT_FAULT_FILE = "none",
        "Tests only: the fault-injection file of a vaultd built with the `fault-injection` \
         feature (never a release build); ignored otherwise.";
    /// TLS: the server's certificate chain and key (PEM), and the CA that
    /// client certificates must chain to.
    tls: TlsFiles {
        tls_cert_file => cert_file: Option<PathBuf> [Path] = None, env VAULT_TLS_CERT_FILE,
            "The server's certificate chain (PEM), with `tls_key_file`; none: plaintext, \
             loopback only.";
        tls_key_file => key_file: Option<PathBuf> [Path] = None, env VAULT_TLS_KEY_FILE,
            "The server's private key (PEM).";
        tls_client_ca_file => client_ca_file: Option<PathBuf> [Path] = None,
            env VAULT_TLS_CLIENT_CA_FILE,
            "The CA that client certificates must chain to (mTLS); none: no client \
             certificates (bearer tokens only).";
    }
    mtls_principals: HashMap<String, String> [Table] = HashMap::new(), file,
        "A table `[mtls_principals]`: certificate principal (URI SAN or CN) = role.";
    max_token_ttl_secs: u64 [Typed] = 30 * 24 * 3600, env VAULT_MAX_TOKEN_TTL_SECS,
        "Longest bearer-token life, in seconds (30 days; 60 to 31622400).";
    audit_timeout_ms => audit_timeout: Duration [Millis] = Duration::from_millis(2000),
        env VAULT_AUDIT_TIMEOUT_MS,
        "Longest wait for a request's audit event to be durable, in milliseconds; then \
         `UNAVAILABLE` (at most a tenth later; 10 to 60000).";
    audit_retention_days: u32 [Typed] = 365, env VAULT_AUDIT_RETENTION_DAYS,
        "Days audit events are kept, then pruned (1 to 3650).";
    audit_query_days: u32 [Typed] = 90, env VAULT_AUDIT_QUERY_DAYS,
        "Days a query without a time range covers (1 to `audit_retention_days`).";
    audit_checkpoint_events: u64 [Typed] = 10_000, env VAULT_AUDIT_CHECKPOINT_EVENTS,
        "A signed checkpoint in the trail at least every this many events (1 to 10000000)…";
    audit_checkpoint_secs: u64 [Typed] = 60, env VAULT_AUDIT_CHECKPOINT_SECS,
        "… or this many seconds (1 to 86400).";
    audit_segment_bytes: u64 [Typed] = 64 << 20, env VAULT_AUDIT_SEGMENT_BYTES,
        "Size of an audit segment file, in bytes (64 MiB; 4096 or more); see \
         [audit](audit.md).";
    audit_sync_gather_us: u64 [Typed] = 1000, env VAULT_AUDIT_SYNC_GATHER_US,
        "Under load, at most one audit sync started per this many µs (more events per sync, \
         fewer wake-ups); an idle trail syncs at once (0 to 100000).";
    cvv_ttl_secs: u64 [Typed] = 900, env VAULT_CVV_TTL_SECS,
        "How long a CVV waits in memory for its one reveal, in seconds (15 minutes; 1 to \
         86400); see [cards](cards.md).";
    cvv_max_pending: usize [Typed] = 100_000, env VAULT_CVV_MAX_PENDING,
        "Most CVVs waiting at once; beyond, a Tokenize with a CVV is `RESOURCE_EXHAUSTED` (at \
         least 1).";
    retention_sweep_secs: u64 [Typed] = 3600, env VAULT_RETENTION_SWEEP_SECS,
        "How often the retention sweeper shreds values past their retention, in seconds (60 \
         to 86400; 0: only when asked with `vaultctl lifecycle sweep`); see \
         [lifecycle](lifecycle.md).";
    /// Limits on failed authentications (see [`crate::throttle`]).
    auth_throttle: crate::throttle::AuthSettings {
        auth_failure_window_secs => window_secs: u64 [Typed] = 60,
            env VAULT_AUTH_FAILURE_WINDOW_SECS,
            "The window failed authentications are counted in, in seconds (1 to 3600); see \
             [limits](limits.md#under-hostile-load).";
        auth_failures_per_peer => per_peer: u32 [Typed] = 20, env VAULT_AUTH_FAILURES_PER_PEER,
            "Failures per peer address (IPv6: /64) per window; beyond, its failures are \
             `RESOURCE_EXHAUSTED` (1 to 1000000).";
        auth_failures_per_credential => per_credential: u32 [Typed] = 10,
            env VAULT_AUTH_FAILURES_PER_CREDENTIAL,
            "Failures per credential id per window; beyond, that id is refused unchecked from \
             addresses that have failed (1 to 1000000).";
        auth_failures_audited_per_peer => audited_per_peer: u32 [Typed] = 10,
            env VAULT_AUTH_FAILURES_AUDITED_PER_PEER,
            "Failures per peer per window with their own `auth_failure` event and log line; \
             the rest in one summary event (0 to 1000000).";
        auth_failures_audited_total => audited_total: u32 [Typed] = 1000,
            env VAULT_AUTH_FAILURES_AUDITED_TOTAL,
            "… over all peers per window (0 to 10000000).";
        auth_throttle_entries => entries: usize [Typed] = 10_000, env VAULT_AUTH_THROTTLE_ENTRIES,
            "Peers, and credential ids, counted at once (LRU, about 4 MB; 16 to 1000000).";
    }
    /// Limits on failed unseal attempts.
    unseal_throttle: crate::throttle::UnsealSettings {
        unseal_window_secs => window_secs: u64 [Typed] = 60, env VAULT_UNSEAL_WINDOW_SECS,
            "The window failed `Unseal` attempts are counted in, in seconds (1 to 3600).";
        unseal_failures_per_peer => per_peer: u32 [Typed] = 10,
            env VAULT_UNSEAL_FAILURES_PER_PEER,
            "Failed unseal attempts per peer per window; beyond, `RESOURCE_EXHAUSTED` without \
             looking at the share (1 to 10000).";
        unseal_failures_total => total: u32 [Typed] = 100, env VAULT_UNSEAL_FAILURES_TOTAL,
            "… from all peers; beyond, every peer that has failed is refused (1 to 100000).";
    }
    clock_offset_secs: i64 [Typed] = 0, env_only VAULT_TEST_CLOCK_OFFSET_SECS,
        "Seconds added to the system clock, for tests and drills only (logged as a warning).";
    read_elsewhere VAULT_LOG = "`info`",
        "Log verbosity: a `tracing` filter such as `info` or `vault=debug`.";
    read_elsewhere VAULT_CONFIG = "none",
        "The configuration file (as `--config FILE`).";
}

/// The settings as the table in `docs/operations.md` shows them: key,
/// environment variable, default and meaning (a test keeps the two equal).
pub fn settings_table() -> String {
    let mut table = String::from("| key | environment | default | meaning |\n|---|---|---|---|\n");
    for row in SETTINGS {
        let key = match row.from_file {
            Some(_) => format!("`{}`", row.name),
            None => "(environment only)".into(),
        };
        let env = row
            .env
            .map_or_else(|| "(file only)".into(), |e| format!("`{e}`"));
        table.push_str(&format!(
            "| {key} | {env} | {} | {} |\n",
            (row.default)(),
            row.doc
        ));
    }
    table
}

/// Every problem found in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration:\n  {}", .problems.join("\n  "))]
pub struct ConfigError {
    /// One line per problem, naming its source and key.
    pub problems: Vec<String>,
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

impl Config {
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
                    Ok(mut raw) => {
                        for row in SETTINGS {
                            let Some(from_file) = row.from_file else {
                                continue;
                            };
                            if let Some(Err(e)) = from_file(&mut c, &mut raw) {
                                problems.push(format!("{src}: {}: {e}", row.name));
                            }
                        }
                    }
                },
            }
        }
        for (name, value) in env {
            if !name.starts_with("VAULT_") {
                continue;
            }
            let src = format!("environment {name}");
            match SETTINGS.iter().find(|row| row.env == Some(name.as_str())) {
                None => problems.push(format!("{src}: unknown setting")),
                Some(row) => {
                    // A variable read elsewhere sets nothing here.
                    if let Some(Err(e)) = row.from_env.map(|from_env| from_env(&mut c, &value)) {
                        problems.push(format!("{src}: {}: {e}", row.name));
                    }
                }
            }
        }
        if let Some(a) = &overrides.listen_addr {
            match parse::from_text(a) {
                Ok(addr) => c.listen_addr = addr,
                Err(e) => problems.push(format!("--listen: listen_addr: {e}")),
            }
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
        if self.storage == Storage::Postgres && self.postgres_url.trim().is_empty() {
            problems.push("postgres_url: must be set with storage = \"postgres\"".into());
        }
        if !(1..=256).contains(&self.postgres_pool) {
            problems.push("postgres_pool: must be 1 to 256".into());
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
        // Every setting, not only those above.
        assert_eq!(format!("{c:?}"), format!("{d:?}"));
        // And it names every key of the file, if only in a comment.
        let text = std::fs::read_to_string(&path).unwrap();
        for row in SETTINGS.iter().filter(|row| row.from_file.is_some()) {
            let named = text.lines().any(|line| {
                line.trim_start_matches(['#', ' ', '['])
                    .strip_prefix(row.name)
                    .is_some_and(|rest| rest.starts_with([' ', '=', ']']))
            });
            assert!(named, "docs/vault.example.toml does not show {}", row.name);
        }
    }

    #[test]
    fn unknown_keys_in_the_file_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("v.toml");
        std::fs::write(&f, "listen = \"x\"\n").unwrap();
        let err = Config::load(Some(&f), env(&[]), &Overrides::default()).unwrap_err();
        assert!(err.problems[0].contains("unknown field"), "{err}");
    }

    #[test]
    fn the_docs_table_is_made_from_the_settings_list() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operations.md");
        let doc = std::fs::read_to_string(&path).unwrap();
        let begin = "<!-- The settings table, made by vault::config::settings_table(): edit the list in vault/src/config.rs, not this table. -->\n";
        let end = "<!-- End of the settings table. -->";
        let start = doc.find(begin).expect("the table's first marker") + begin.len();
        let stop = start + doc[start..].find(end).expect("the table's last marker");
        let table = settings_table();
        assert!(
            doc[start..stop] == table,
            "docs/operations.md's settings table is not the settings list in \
             vault/src/config.rs; between the markers it should read:\n\n{table}"
        );
    }

    #[test]
    fn each_row_has_its_own_name_and_variable_and_fits_the_table() {
        let mut names = std::collections::HashSet::new();
        let mut vars = std::collections::HashSet::new();
        for row in SETTINGS {
            assert!(names.insert(row.name), "{} twice", row.name);
            if let Some(var) = row.env {
                assert!(var.starts_with("VAULT_"), "{var}");
                assert!(vars.insert(var), "{var} twice");
            }
            assert!(row.from_env.is_some() || row.from_file.is_some() || row.env.is_some());
            assert!(!row.doc.contains(['|', '\n']), "{}", row.doc);
            assert!(!(row.default)().is_empty(), "{}", row.name);
        }
    }

    #[test]
    fn the_throttles_own_defaults_are_the_listed_ones() {
        // `vaultd officer` unseals offline with `UnsealSettings::default()`.
        let d = Config::default();
        assert_eq!(d.auth_throttle, crate::throttle::AuthSettings::default());
        assert_eq!(
            d.unseal_throttle,
            crate::throttle::UnsealSettings::default()
        );
    }

    #[test]
    fn variables_read_elsewhere_pass_and_other_vault_variables_are_errors() {
        let c = Config::load(
            None,
            env(&[
                ("VAULT_LOG", "debug"),
                ("VAULT_CONFIG", "/nowhere.toml"),
                ("VAULT_HSM_PIN", "1234"),
                ("VAULTCTL_TOKEN", "vt1.x"),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        assert!(c.hsm.is_none());
        let err = Config::load(
            None,
            env(&[("VAULT_TOKEN", "vt1.x")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(err.problems, ["environment VAULT_TOKEN: unknown setting"]);
    }

    #[test]
    fn messages_name_the_source_and_the_key() {
        let err = Config::load(
            None,
            env(&[
                ("VAULT_DURABILITY", " fast "),
                ("VAULT_MAX_BATCH_ITEMS", " lots"),
                ("VAULT_TEST_CLOCK_OFFSET_SECS", "soon"),
                ("VAULT_SHUTDOWN_GRACE_SECS", "4000"),
            ]),
            &Overrides {
                listen_addr: Some("here".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(
            err.problems,
            [
                "environment VAULT_DURABILITY: durability: \"fast\" is not fsync or flush",
                "environment VAULT_MAX_BATCH_ITEMS: max_batch_items: cannot parse \" lots\"",
                "environment VAULT_TEST_CLOCK_OFFSET_SECS: clock_offset_secs: cannot parse \"soon\"",
                "--listen: listen_addr: cannot parse \"here\"",
                "shutdown_grace_secs: must be at most 3600",
            ]
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("v.toml");
        std::fs::write(&f, "log_format = \"xml\"\nlisten_addr = \"there\"\n").unwrap();
        let err = Config::load(Some(&f), env(&[]), &Overrides::default()).unwrap_err();
        let src = f.display();
        assert_eq!(
            err.problems,
            [
                format!("{src}: listen_addr: cannot parse \"there\""),
                format!("{src}: log_format: \"xml\" is not text or json"),
            ]
        );
    }

    #[test]
    fn an_hsm_setting_makes_the_hsm_settings_with_their_defaults() {
        let c = Config::load(
            None,
            env(&[("VAULT_HSM_MODULE", "/usr/lib/softhsm/libsofthsm2.so")]),
            &Overrides::default(),
        )
        .unwrap();
        let hsm = c.hsm.unwrap();
        assert_eq!(hsm.token_label, "vault");
        assert_eq!(hsm.key_label, "vault-root-key");
    }
}
