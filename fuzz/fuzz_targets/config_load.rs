//! Config loading (`vault::config::Config::load`): `vaultd`'s TOML file and
//! `VAULT_*` environment, read at every start.
//!
//! The input is split at NUL bytes: the first piece, if not empty, is the
//! file's text (written to a temporary file); each further piece is an
//! environment pair, its first byte naming a setting `load` knows (or a few
//! it does not), the rest its value. `docs/vault.example.toml` is a seed.
//!
//! Properties: loading never panics; it is deterministic (the same
//! problems, in any order, or the same settings); a configuration that
//! loads keeps to the rules that `load` checks, and its audit settings can
//! be made.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use vault::config::{Config, Overrides};

const NAMES: &[&str] = &[
    "LISTEN_ADDR",
    "DATA_DIR",
    "ROOT_KEY_FILE",
    "SCHEMA_FILE",
    "MAX_BATCH_ITEMS",
    "MAX_VALUE_BYTES",
    "MAX_REQUEST_BYTES",
    "DEK_CACHE_ENTRIES",
    "KEK_CRYPTOPERIOD_DAYS",
    "KEK_WARNING_DAYS",
    "DEK_MAX_ENCRYPTIONS",
    "RECORD_CACHE_ENTRIES",
    "STORE_CACHE_BYTES",
    "DURABILITY",
    "SHUTDOWN_GRACE_SECS",
    "LOG_FORMAT",
    "INIT_IF_MISSING",
    "POLICY_DIR",
    "HSM_MODULE",
    "HSM_TOKEN_LABEL",
    "HSM_KEY_LABEL",
    "HSM_PIN",
    "TLS_CERT_FILE",
    "TLS_KEY_FILE",
    "TLS_CLIENT_CA_FILE",
    "TEST_CLOCK_OFFSET_SECS",
    "AUDIT_TIMEOUT_MS",
    "AUDIT_RETENTION_DAYS",
    "AUDIT_QUERY_DAYS",
    "AUDIT_CHECKPOINT_EVENTS",
    "AUDIT_CHECKPOINT_SECS",
    "RETENTION_SWEEP_SECS",
    "CVV_TTL_SECS",
    "CVV_MAX_PENDING",
    "AUDIT_SYNC_GATHER_US",
    "AUDIT_SEGMENT_BYTES",
    "MAX_TOKEN_TTL_SECS",
    "AUTH_FAILURE_WINDOW_SECS",
    "AUTH_FAILURES_PER_PEER",
    "AUTH_FAILURES_PER_CREDENTIAL",
    "AUTH_FAILURES_AUDITED_PER_PEER",
    "AUTH_FAILURES_AUDITED_TOTAL",
    "AUTH_THROTTLE_ENTRIES",
    "UNSEAL_WINDOW_SECS",
    "UNSEAL_FAILURES_PER_PEER",
    "UNSEAL_FAILURES_TOTAL",
    "LOG",
    "CONFIG",
    "TOKEN",
    "NOT_A_SETTING",
];

static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();

fn sorted(r: &Result<Config, vault::config::ConfigError>) -> Result<String, Vec<String>> {
    match r {
        Ok(c) => {
            // HashMap order differs between two loads: compare it sorted.
            let principals: std::collections::BTreeMap<_, _> = c.mtls_principals.iter().collect();
            let rest = Config {
                mtls_principals: Default::default(),
                ..c.clone()
            };
            Ok(format!("{rest:?} {principals:?}"))
        }
        Err(e) => {
            let mut p = e.problems.clone();
            p.sort();
            Err(p)
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut pieces = text.split('\0');
    let file_text = pieces.next().unwrap_or_default();
    let env: Vec<(String, String)> = pieces
        .filter_map(|p| {
            let (first, value) = p.split_at_checked(1)?;
            let name = NAMES[usize::from(first.as_bytes()[0]) % NAMES.len()];
            Some((format!("VAULT_{name}"), value.to_owned()))
        })
        .collect();
    let dir = DIR
        .get_or_init(|| tempfile::tempdir().expect("a temporary directory"))
        .path();
    let path = dir.join("vault.toml");
    let file = if file_text.is_empty() {
        None
    } else {
        std::fs::write(&path, file_text).expect("writing the file");
        Some(path.as_path())
    };
    let first = Config::load(file, env.clone(), &Overrides::default());
    let second = Config::load(file, env, &Overrides::default());
    assert_eq!(
        sorted(&first),
        sorted(&second),
        "loading is not deterministic"
    );
    match first {
        Ok(c) => {
            assert!(!c.root_key_file.starts_with(&c.data_dir));
            assert!(c.listen_addr.ip().is_loopback() || c.tls.enabled());
            let s = c.audit_settings();
            assert!(s.query_days <= s.retention_days);
        }
        Err(e) => {
            assert!(!e.problems.is_empty());
            let _ = e.to_string();
        }
    }
});
