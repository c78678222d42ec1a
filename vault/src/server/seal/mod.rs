//! Sealing: the root key split into Shamir shares held by custodians.
//!
//! `vaultd init --shares N --threshold K` makes a root key, initialises the
//! data directory's keys under it, writes one share file per custodian and
//! keeps in the store only what checks a share (its fingerprint): never the
//! key. A vault so initialised starts **sealed**: it serves only
//! `SystemService.Status` and `Unseal` (health NOT_SERVING, every other RPC
//! `FAILED_PRECONDITION` "sealed"), takes shares one at a time, and with K
//! distinct valid shares rebuilds the root key and starts serving. The
//! unseal attempts are audited once the audit key is available (it derives
//! from the root key), after the `vault_start` event.

use super::StartError;
use crate::audit::AuditEvent;
use crate::config::Config;
use crate::crypto::keys::{KEY_LEN, RootKey};
use crate::crypto::shamir::{self, Share};
use crate::model::hex;
use crate::store::Batch;
use crate::throttle::{PeerKey, UnsealSettings, UnsealThrottle};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tonic::{Request, Response, Status};
use vault_proto::v1::system_service_server::{SystemService, SystemServiceServer};
use vault_proto::v1::{
    KeyCompromisedRequest, KeyCompromisedResponse, LifecycleReportRequest, LifecycleReportResponse,
    RetireKeyRequest, RetireKeyResponse, RotateKeysRequest, RotateKeysResponse, SealRequest,
    SealResponse, StatusRequest, StatusResponse, SweepRequest, SweepResponse, UnsealRequest,
    UnsealResponse,
};
use zeroize::Zeroizing;

mod sealed;
pub(in crate::server) use sealed::incoming;
pub use sealed::serve_sealed;

/// Where the share configuration lives in the store.
pub const SHAMIR_KEY: &[u8] = b"key/shamir";

/// What the store keeps of a vault's shares: how many, the threshold, and a
/// fingerprint of each (SHA-256; see [`shamir::fingerprint`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShamirConfig {
    /// The vault's id, in every share (8 hex digits).
    pub vault_id: String,
    /// Shares made.
    pub shares: u8,
    /// Shares needed.
    pub threshold: u8,
    /// Fingerprint of share i+1, hex.
    pub fingerprints: Vec<String>,
}

/// The share configuration of the data directory, if it was initialised
/// with shares (opens and closes the store).
pub fn read_config(config: &Config) -> Result<Option<ShamirConfig>, StartError> {
    if !config.data_dir.exists() {
        return Ok(None);
    }
    let store = super::open_store(config, 1 << 20)?;
    let got = read_config_in(store.as_ref());
    store.close()?;
    got
}

/// The share configuration `store` holds, if its vault was initialised
/// with shares.
pub fn read_config_in(store: &dyn crate::store::Store) -> Result<Option<ShamirConfig>, StartError> {
    match store.get(SHAMIR_KEY)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|_| {
            StartError::Shares("the share configuration in the store is damaged".into())
        }),
    }
}

/// What `vaultd init --shares` made.
#[derive(Debug)]
pub struct Initialised {
    /// One file per custodian.
    pub share_files: Vec<std::path::PathBuf>,
    /// The bootstrap operator token (shown once).
    pub bootstrap: Option<crate::auth::credentials::IssuedToken>,
}

/// Initialises an empty data directory under a new root key split into
/// `n` shares with threshold `k`, writing share `i` to
/// `shares_dir/share-i.txt` (mode 0600, never overwritten). Issues the
/// bootstrap operator token.
pub async fn init(
    config: &Config,
    n: u8,
    k: u8,
    shares_dir: &std::path::Path,
) -> Result<Initialised, StartError> {
    if k < 2 || n < k {
        return Err(StartError::Invalid(
            "--threshold must be at least 2 and at most --shares".into(),
        ));
    }
    if shares_dir.starts_with(&config.data_dir) {
        return Err(StartError::Invalid(
            "the shares must not be written inside the data directory".into(),
        ));
    }
    {
        let store = super::open_store(config, 1 << 20)?;
        let initialised = crate::keystore::is_initialised(store.as_ref())?;
        store.close()?;
        if initialised {
            return Err(StartError::Invalid(format!(
                "{} is already initialised",
                config.data_dir.display()
            )));
        }
    }
    let root = Zeroizing::new(
        crate::crypto::random_array::<KEY_LEN>()
            .map_err(|_| StartError::Shares("random generator unavailable".into()))?,
    );
    let id: [u8; 4] = crate::crypto::random_array()
        .map_err(|_| StartError::Shares("random generator unavailable".into()))?;
    let vault_id = hex(&id);
    let shares = shamir::split(&root, n, k)
        .map_err(|_| StartError::Shares("could not split the root key".into()))?;
    // The files first: a failure leaves the data directory uninitialised.
    std::fs::create_dir_all(shares_dir)
        .map_err(|e| StartError::io(shares_dir.display().to_string(), e))?;
    let mut share_files = Vec::with_capacity(shares.len());
    for share in &shares {
        let path = shares_dir.join(format!("share-{}.txt", share.index));
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let text = shamir::encode(&vault_id, k, share);
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = opts.open(&path)?;
            f.write_all(text.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()
        };
        write().map_err(|e| StartError::io(path.display().to_string(), e))?;
        share_files.push(path);
    }
    let shamir_config = ShamirConfig {
        vault_id: vault_id.clone(),
        shares: n,
        threshold: k,
        fingerprints: shares
            .iter()
            .map(|s| hex(&shamir::fingerprint(&vault_id, s)))
            .collect(),
    };
    let engine = super::open::open_engine(config, Some(RootKey::from_bytes(&root))).await?;
    drop(shares);
    let mut b = Batch::new();
    b.put(
        SHAMIR_KEY.to_vec(),
        serde_json::to_vec(&shamir_config)
            .map_err(|e| StartError::Shares(format!("encoding the share configuration: {e}")))?,
    );
    engine.store().commit(b).await?;
    let (_, bootstrap) = super::open::open_credentials(&engine).await?;
    engine.store().flush()?;
    Ok(Initialised {
        share_files,
        bootstrap,
    })
}

/// Shares given so far.
struct Unsealer {
    config: ShamirConfig,
    shares: Vec<Share>,
    root: Option<Zeroizing<[u8; KEY_LEN]>>,
    events: Vec<AuditEvent>,
    /// Failed attempts, capped per peer and overall.
    throttle: UnsealThrottle,
}

impl Unsealer {
    fn new(config: ShamirConfig, settings: UnsealSettings) -> Self {
        Self {
            config,
            shares: Vec::new(),
            root: None,
            events: Vec::new(),
            throttle: UnsealThrottle::new(settings),
        }
    }

    /// The attempts' events, and the summary of what was refused or not
    /// recorded, for the audit trail.
    fn take_events(&mut self) -> Vec<AuditEvent> {
        let mut events = std::mem::take(&mut self.events);
        events.extend(self.throttle.summary());
        events
    }
}

/// Longest share text accepted, in bytes (a share is about 110).
pub const MAX_SHARE_BYTES: usize = 256;

impl Unsealer {
    /// Checks and keeps one share; returns its index.
    fn check(&mut self, text: &str) -> Result<u8, Status> {
        if self.root.is_some() {
            return Err(Status::failed_precondition("the vault is unsealing"));
        }
        if text.len() > MAX_SHARE_BYTES {
            return Err(crate::error::Error::invalid(
                "share",
                format!("longer than the limit of {MAX_SHARE_BYTES} bytes"),
            )
            .into());
        }
        let e = shamir::decode(text).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if !crate::crypto::ct_eq(e.vault_id.as_bytes(), self.config.vault_id.as_bytes())
            || e.threshold != self.config.threshold
        {
            return Err(Status::invalid_argument(
                "the share belongs to another vault",
            ));
        }
        let index = e.share.index;
        let expected = self
            .config
            .fingerprints
            .get(usize::from(index).wrapping_sub(1))
            .cloned()
            .unwrap_or_default();
        let got = hex(&shamir::fingerprint(&self.config.vault_id, &e.share));
        if !crate::crypto::ct_eq(got.as_bytes(), expected.as_bytes()) {
            return Err(Status::permission_denied(format!(
                "share {index} is not this vault's share {index}"
            )));
        }
        if self.shares.iter().any(|s| s.index == index) {
            return Err(Status::already_exists(format!(
                "share {index} was already given"
            )));
        }
        self.shares.push(e.share);
        Ok(index)
    }
}

/// What unsealing gave: the root key and the audit events of the attempts.
pub struct Unsealed {
    /// The root key.
    pub root: RootKey,
    /// One event per unseal attempt, to write once the audit trail opens.
    pub events: Vec<AuditEvent>,
}

impl std::fmt::Debug for Unsealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unsealed")
            .field("events", &self.events.len())
            .finish_non_exhaustive()
    }
}

/// The root key rebuilt offline from shares read from `input`, one per line
/// (for `vaultd officer` on a vault under shares): every line is checked
/// like an Unseal call and audited once the trail opens; reading stops at
/// the threshold.
pub fn unseal_from_lines(
    shamir_config: &ShamirConfig,
    input: impl std::io::BufRead,
) -> Result<Unsealed, StartError> {
    let mut st = Unsealer::new(shamir_config.clone(), UnsealSettings::default());
    for line in input.lines() {
        let line = Zeroizing::new(line.map_err(|e| StartError::io("reading shares", e))?);
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let outcome = st.check(text);
        let (name, detail) = match &outcome {
            Ok(index) => (
                "ok",
                format!("share {index} accepted offline (vaultd officer)"),
            ),
            Err(s) => ("invalid", s.message().to_owned()),
        };
        // Not "unseal": these shares open the vault offline, for one
        // command, and are audited as such.
        st.events
            .push(crate::audit::system_event("offline_unseal", name, detail));
        if let Err(s) = outcome {
            return Err(StartError::Shares(format!(
                "share refused: {}",
                s.message()
            )));
        }
        if st.shares.len() >= usize::from(st.config.threshold) {
            let root = shamir::combine(&st.shares)
                .ok_or_else(|| StartError::Shares("the shares do not combine".into()))?;
            st.shares.clear();
            return Ok(Unsealed {
                root: RootKey::from_bytes(&root),
                events: st.events,
            });
        }
    }
    Err(StartError::Shares(format!(
        "{} of the {} shares needed were given on standard input",
        st.shares.len(),
        st.config.threshold
    )))
}
