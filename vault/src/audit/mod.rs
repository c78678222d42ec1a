//! The audit trail: an append-only, hash-chained, MACed log of events in
//! files of its own (see [`segments`]), never holding a value.
//!
//! Each record keeps the encoded [`AuditEvent`], its chain hash
//! `SHA-256("vault/v1/audit" ‖ previous hash ‖ event)` and
//! `HMAC-SHA256(audit key, hash)`. Anyone can recompute the hashes of an
//! export; only the vault can make the MACs; Ed25519 checkpoints over
//! `(seq, hash)`, written into the trail every N events or T seconds, let
//! an export be verified offline with the public key.
//!
//! Appending numbers and chains events under one lock into a buffer; one
//! writer thread writes the buffer to the current segment and syncs it
//! (group commit: every request waiting shares one `fdatasync`). A read
//! waits for its event before answering; a write waits for its event
//! before it changes any data (the [`Journal`] it implements), so a change that
//! survives a crash never lacks its event.

pub mod bound;
mod chain;
mod query;
pub mod recovery;
pub mod segments;
mod writer;

pub use chain::{ChainChecker, Verified, verify_chain};
pub use query::{ExportRange, MAX_QUERY_BYTES, MAX_QUERY_EVENTS, SubjectHistory, matches};
use writer::{DAY_MICROS, signed, watchdog, writer};

use crate::crypto::keys::{AuditKey, CheckpointKey};
use crate::error::{Error, Result, Unavailable};
use crate::model::Clock;
use crate::model::journal::{BoxFuture, Journal};
use segments::{End, Segment};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use vault_proto::v1::{AuditEvent, AuditItem, AuditRecord, Checkpoint, QueryRequest};

pub use vault_proto::audit::{
    CHAIN_LABEL, CHECKPOINT_LABEL, chain_hash, checkpoint_message, verify_checkpoint,
};

/// How long a request waits for its events to be durable before it fails
/// `UNAVAILABLE` (and discloses nothing).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// The audit trail's settings (see `docs/audit.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// How long a request waits for its event to be durable.
    pub timeout: Duration,
    /// Events are kept at least this long (and pruned after).
    pub retention_days: u32,
    /// A query without a time range covers this many days back.
    pub query_days: u32,
    /// A checkpoint at the latest after this many events…
    pub checkpoint_events: u64,
    /// …or this many seconds, whichever comes first.
    pub checkpoint_secs: u64,
    /// A new segment when the current one reaches this size (or a day).
    pub segment_bytes: u64,
    /// `fdatasync` each group of events (else: written, not synced).
    pub sync: bool,
    /// Shortest time between two syncs (group commit window).
    pub gather: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            retention_days: 365,
            query_days: 90,
            checkpoint_events: 10_000,
            checkpoint_secs: 60,
            segment_bytes: 64 << 20,
            sync: true,
            gather: Duration::from_micros(1000),
        }
    }
}

/// The last appended event (head of the chain) or, while pending, the
/// first and last event waiting.
#[derive(Debug, Clone, Copy, Default)]
struct Mark {
    seq: u64,
    time: i64,
    hash: [u8; 32],
}

#[derive(Debug, Default)]
struct State {
    /// The last appended event (seq 0 and the anchor's hash when none).
    head: Mark,
    /// Frames waiting for the writer.
    pending: Vec<u8>,
    pending_first: Option<Mark>,
    /// Durable segments, oldest first.
    segments: Vec<Segment>,
    /// Where the kept chain starts, after pruning.
    anchor: Option<Checkpoint>,
    /// Events whose requests were refused because they were not durable in time.
    refused: Vec<u64>,
    refused_total: u64,
    /// Refused before they had a sequence number (buffer full).
    refused_unnumbered: u64,
    /// Sequence number and time of the last checkpoint event.
    last_checkpoint: (u64, i64),
    closing: bool,
    /// The writer is waiting for work (else it looks again after its write
    /// by itself: appenders need not wake it).
    writer_idle: bool,
    /// Requests waiting for their last event to be durable, in sequence
    /// (and so deadline) order: answered `true` once it is, `false` when a
    /// write fails or the deadline passes first (see [`watchdog`]).
    waiters: std::collections::VecDeque<Waiter>,
}

/// A request waiting for event `seq` to be durable, until `deadline`.
#[derive(Debug)]
struct Waiter {
    seq: u64,
    deadline: Instant,
    tx: tokio::sync::oneshot::Sender<bool>,
}

impl State {
    /// Answers `w` "not durable" and counts its request as refused (the
    /// trail says so once the event is on disk).
    fn refuse(&mut self, w: Waiter) {
        if self.refused.len() < 1000 {
            self.refused.push(w.seq);
        }
        self.refused_total += 1;
        let _ = w.tx.send(false);
    }
}

/// The two keys of the trail: the MAC key of every record and the
/// signing key of checkpoints (both derived from the root key's seed).
#[derive(Debug, Clone)]
pub struct Keys {
    /// Authenticates each record's chain hash.
    pub mac: Arc<AuditKey>,
    /// Signs checkpoints (Ed25519); its public half verifies exports.
    pub checkpoint: Arc<CheckpointKey>,
}

struct Inner {
    dir: PathBuf,
    keys: Keys,
    clock: Arc<dyn Clock>,
    settings: Settings,
    state: Mutex<State>,
    wake: Condvar,
}

/// The vault's audit log.
pub struct AuditLog {
    inner: Arc<Inner>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    notes: Vec<String>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("dir", &self.inner.dir)
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

fn poisoned<T>(_: T) -> Error {
    Error::state("audit state lock poisoned")
}

/// An event written by the vault itself.
pub fn system_event(event_type: &str, outcome: &str, detail: String) -> AuditEvent {
    AuditEvent {
        event_type: event_type.into(),
        principal: "vaultd".into(),
        outcome: outcome.into(),
        detail,
        ..Default::default()
    }
}

impl Drop for AuditLog {
    /// Lets the writer finish what is pending and stop (without waiting).
    fn drop(&mut self) {
        if let Ok(mut st) = self.inner.state.lock() {
            st.closing = true;
        }
        self.inner.wake.notify_all();
    }
}

impl AuditLog {
    /// Opens the trail in `dir` (creating it), checks every event in it,
    /// cuts a torn end, finishes an interrupted pruning, prunes, and starts
    /// the writer. A trail damaged anywhere else is refused
    /// ([`Error::AuditDamaged`], naming where; see [`recovery`]).
    pub fn open(dir: &Path, settings: Settings, keys: Keys, clock: Arc<dyn Clock>) -> Result<Self> {
        let io = segments::io;
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|e| io("creating its directory", e))?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(|e| io("setting its permissions", e))?;
            }
        }
        let anchor = segments::read_anchor(dir)?;
        let recovery::Recovered {
            segments: list,
            head,
            next_number,
            notes,
        } = recovery::recover(&keys, dir, anchor.as_ref())?;
        let now = clock.now_micros();
        let inner = Arc::new(Inner {
            dir: dir.to_owned(),
            keys,
            clock,
            settings,
            state: Mutex::new(State {
                head,
                segments: list,
                anchor,
                last_checkpoint: (head.seq, now),
                ..Default::default()
            }),
            wake: Condvar::new(),
        });
        let for_writer = inner.clone();
        let handle = std::thread::Builder::new()
            .name("vault-audit-writer".into())
            .spawn(move || writer(for_writer, next_number))
            .map_err(|e| io("starting its writer", e))?;
        let for_watchdog = inner.clone();
        std::thread::Builder::new()
            .name("vault-audit-watchdog".into())
            .spawn(move || watchdog(&for_watchdog))
            .map_err(|e| io("starting its watchdog", e))?;
        let log = Self {
            inner,
            writer: Mutex::new(Some(handle)),
            notes,
        };
        log.inner.prune()?;
        Ok(log)
    }

    /// What opening found and repaired, for the `vault_start` event.
    pub fn startup_notes(&self) -> &[String] {
        &self.notes
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// Numbers and chains `events` and queues them for the disk; does not
    /// wait. Returns their sequence numbers.
    pub fn append(&self, events: Vec<AuditEvent>) -> Result<Vec<u64>> {
        self.inner.append(events, None)
    }

    /// [`AuditLog::append`], then waits until the events are durable, at
    /// most the configured time: after that, `UNAVAILABLE` (and the trail
    /// later says the request was refused).
    pub async fn record(&self, events: Vec<AuditEvent>) -> Result<Vec<u64>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let seqs = self.inner.append(events, Some(tx))?;
        // The writer answers, or the watchdog once the deadline has passed
        // (no timer per request); a dropped sender (writer gone) is a no.
        if seqs.is_empty() || rx.await == Ok(true) {
            return Ok(seqs);
        }
        Err(Unavailable::NotDurable {
            millis: self.inner.settings.timeout.as_millis(),
        }
        .into())
    }

    /// Writes a checkpoint (if anything happened since the last), waits
    /// for everything to be written, and stops the writer.
    pub fn close(&self) {
        if let Ok(mut st) = self.inner.state.lock() {
            let now = self.inner.clock.now_micros();
            self.inner.checkpoint_if_due(&mut st, now, true);
            st.closing = true;
        }
        self.inner.wake.notify_all();
        let handle = self.writer.lock().ok().and_then(|mut h| h.take());
        if let Some(h) = handle
            && h.join().is_err()
        {
            tracing::error!("audit writer thread panicked");
        }
    }

    /// Removes events past retention now (the writer also does it hourly).
    pub fn prune(&self) -> Result<u64> {
        self.inner.prune()
    }
}

#[cfg(test)]
mod tests;

/// The trail is where the vault's changes are journaled: an event durable
/// before its change, and a `write_failed` event after a change that was
/// not made.
impl Journal for AuditLog {
    type Error = Error;

    fn durable(&self, event: AuditEvent) -> BoxFuture<'_, Result<u64>> {
        Box::pin(async move {
            let seqs = self.record(vec![event]).await?;
            Ok(seqs.first().copied().unwrap_or(0))
        })
    }

    fn write_failed(&self, seq: u64, error: &Error) {
        let ev = system_event(
            "write_failed",
            "error",
            format!("the change of event {seq} was not made: {:?}", error.code()),
        );
        if let Err(a) = self.append(vec![ev]) {
            tracing::error!(error = %a, "could not write a write_failed audit event");
        }
    }
}
