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
//! before it changes any data ([`AuditLog::record_then`]), so a change that
//! survives a crash never lacks its event.

pub mod bound;
pub mod recovery;
pub mod segments;

use crate::crypto::keys::AuditKey;
use crate::engine::Engine;
use crate::error::{Error, Result, Unavailable};
use segments::{End, Segment};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use vault_proto::v1::{AuditEvent, AuditItem, AuditRecord, Checkpoint, QueryRequest};

/// Most events one query returns.
pub const MAX_QUERY_EVENTS: usize = 10_000;

/// Most bytes of (encoded) events one query answer holds: a page ends
/// early rather than grow beyond (the caller goes on with `after_seq`).
pub const MAX_QUERY_BYTES: usize = 32 << 20;

/// Whether `e` passes the filters of `q` (empty filters match everything).
pub fn matches(q: &QueryRequest, e: &AuditEvent) -> bool {
    let eq = |want: &str, have: &str| want.is_empty() || want == have;
    eq(&q.principal, &e.principal)
        && eq(&q.role, &e.role)
        && eq(&q.action, &e.action)
        && eq(&q.outcome, &e.outcome)
        && eq(&q.event_type, &e.event_type)
        && (q.subject_id.is_empty()
            || e.subject_id == q.subject_id
            || e.items.iter().any(|i| i.subject_id == q.subject_id))
        && (q.field.is_empty() || e.items.iter().any(|i| i.field == q.field))
        && (q.since_unix_micros == 0 || e.time_unix_micros >= q.since_unix_micros)
        && (q.until_unix_micros == 0 || e.time_unix_micros < q.until_unix_micros)
}

pub use vault_proto::audit::{
    CHAIN_LABEL, CHECKPOINT_LABEL, chain_hash, checkpoint_message, verify_checkpoint,
};

/// How long a request waits for its events to be durable before it fails
/// `UNAVAILABLE` (and discloses nothing).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// The kept events about one subject (see [`AuditLog::subject_history`]).
#[derive(Debug, Default)]
pub struct SubjectHistory {
    /// The events, oldest first.
    pub events: Vec<AuditEvent>,
    /// The time of the oldest kept event (UTC microseconds): older events
    /// were pruned. `None` if the trail is empty.
    pub complete_since: Option<i64>,
    /// Whether events were left out (more than asked for).
    pub truncated: bool,
}

/// What an export covers: the events after `after` (whose chain hash is
/// `prev`) through `through`, the last durable event when it was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportRange {
    /// The sequence number before the first exported event (the request's,
    /// or the pruning anchor's if later).
    pub after: u64,
    /// The chain hash of event `after` (32 zero bytes for event 0).
    pub prev: [u8; 32],
    /// The last event exported.
    pub through: u64,
}

/// The result of checking a run of records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Records that checked out, from the first.
    pub good: u64,
    /// The first bad sequence number and what is wrong with it.
    pub first_bad: Option<(u64, &'static str)>,
    /// The hash of the last good record (32 zero bytes if none).
    pub head: [u8; 32],
}

/// Checks a chain one record at a time, from a known start.
#[derive(Debug)]
pub struct ChainChecker<'a> {
    expected: u64,
    prev: [u8; 32],
    good: u64,
    /// The last record checked was event u64::MAX: none may follow.
    ended: bool,
    key: Option<&'a AuditKey>,
    public_key: Option<&'a [u8]>,
}

impl<'a> ChainChecker<'a> {
    /// A checker expecting event `first` after `prev_hash`; with `key` it
    /// checks MACs, with `public_key` the checkpoints' signatures.
    pub fn new(
        first: u64,
        prev_hash: [u8; 32],
        key: Option<&'a AuditKey>,
        public_key: Option<&'a [u8]>,
    ) -> Self {
        Self {
            expected: first,
            prev: prev_hash,
            good: 0,
            ended: false,
            key,
            public_key,
        }
    }

    /// Checks the next record (`None`: one that does not decode); on a
    /// problem, the sequence number where it is and what is wrong.
    pub fn check(
        &mut self,
        item: Option<(&AuditRecord, &AuditEvent)>,
    ) -> std::result::Result<(), (u64, &'static str)> {
        let at = self.expected;
        let Some((record, event)) = item else {
            return Err((at, "undecodable event"));
        };
        if self.ended {
            return Err((at, "an event after the last sequence number there can be"));
        }
        if event.seq > at {
            return Err((at, "missing (deleted)"));
        }
        if event.seq < at {
            return Err((
                at,
                "sequence number does not match its place (reordered or inserted)",
            ));
        }
        let hash = chain_hash(&self.prev, &record.event);
        if record.hash.as_slice() != hash.as_slice() {
            return Err((
                at,
                "hash does not match the event and its predecessor (changed, reordered or inserted)",
            ));
        }
        if let Some(k) = self.key
            && !k.verify(&hash, &record.mac)
        {
            return Err((at, "MAC does not match (not written by this vault)"));
        }
        if let Some(cp) = &event.checkpoint {
            let signed = self
                .public_key
                .is_none_or(|pk| verify_checkpoint(pk, cp.seq, &cp.hash, &cp.signature));
            if cp.seq.checked_add(1) != Some(at) || cp.hash.as_slice() != self.prev || !signed {
                return Err((
                    at,
                    "checkpoint does not match the chain or is not signed by this vault",
                ));
            }
        }
        self.prev = hash;
        self.good += 1;
        match self.expected.checked_add(1) {
            Some(next) => self.expected = next,
            None => self.ended = true,
        }
        Ok(())
    }

    /// The verdict so far, with `first_bad` if a check failed.
    pub fn verdict(&self, first_bad: Option<(u64, &'static str)>) -> Verified {
        Verified {
            good: self.good,
            first_bad,
            head: self.prev,
        }
    }
}

/// Checks records in order, starting at `first` after `prev_hash`; with
/// `key`, the MACs too; with `public_key`, the checkpoints' signatures.
pub fn verify_chain(
    records: impl IntoIterator<Item = Option<(AuditRecord, AuditEvent)>>,
    first: u64,
    prev_hash: [u8; 32],
    key: Option<&AuditKey>,
    public_key: Option<&[u8]>,
) -> Verified {
    let mut c = ChainChecker::new(first, prev_hash, key, public_key);
    for r in records {
        if let Err(bad) = c.check(r.as_ref().map(|(r, e)| (r, e))) {
            return c.verdict(Some(bad));
        }
    }
    c.verdict(None)
}

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

/// Most bytes of events waiting for the disk; beyond, appends fail
/// `UNAVAILABLE` at once.
const MAX_PENDING: usize = 64 << 20;
/// How often the writer looks for segments to prune.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// A segment is closed after a day, so that pruning can remove whole days.
const SEGMENT_MICROS: i64 = 86_400_000_000;
const DAY_MICROS: i64 = 86_400_000_000;

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

struct Inner {
    dir: PathBuf,
    engine: Arc<Engine>,
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

/// A signed checkpoint of event `seq` with chain hash `hash`, made at `now`.
fn signed(engine: &Engine, seq: u64, hash: &[u8], now: i64) -> Checkpoint {
    Checkpoint {
        seq,
        hash: hash.to_vec(),
        signature: engine
            .keyring()
            .checkpoint()
            .sign(&checkpoint_message(seq, hash)),
        time_unix_micros: now,
        ..Default::default()
    }
}

/// A checkpoint event signing the event before it.
fn checkpoint_event(engine: &Engine, seq: u64, hash: &[u8; 32], now: i64) -> AuditEvent {
    AuditEvent {
        event_type: "checkpoint".into(),
        principal: "vaultd".into(),
        outcome: "ok".into(),
        checkpoint: Some(signed(engine, seq, hash, now)),
        ..Default::default()
    }
}

/// When every item names the same subject, names it once, on the event
/// (items then leave `subject_id` empty): a smaller trail, same meaning.
fn hoist_subject(e: &mut AuditEvent) {
    let Some(first) = e.items.first().map(|i| i.subject_id.as_str()) else {
        return;
    };
    if first.is_empty()
        || !(e.subject_id.is_empty() || e.subject_id == first)
        || e.items.iter().any(|i| i.subject_id != first)
    {
        return;
    }
    e.subject_id = std::mem::take(&mut e.items[0].subject_id);
    for i in &mut e.items {
        i.subject_id.clear();
    }
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

impl Inner {
    fn lock(&self) -> Result<MutexGuard<'_, State>> {
        self.state.lock().map_err(poisoned)
    }

    /// Numbers, chains and frames `events` into the pending buffer, each
    /// first brought within the trail's limits ([`bound::bound`]: an event
    /// with more items than fit goes on in further events, numbered too).
    fn push(&self, st: &mut State, events: Vec<AuditEvent>, now: i64) -> Vec<u64> {
        let key = self.engine.keyring().audit();
        let mut seqs = Vec::with_capacity(events.len());
        for mut e in events {
            hoist_subject(&mut e);
            if e.time_unix_micros == 0 {
                e.time_unix_micros = now;
            }
            for mut e in bound::bound(key, e, st.head.seq + 1) {
                e.seq = st.head.seq + 1;
                Self::push_one(st, &e, key);
                seqs.push(e.seq);
            }
        }
        seqs
    }

    /// Chains and frames one event (numbered, within the limits).
    fn push_one(st: &mut State, e: &AuditEvent, key: &AuditKey) {
        let bytes = prost::Message::encode_to_vec(e);
        let hash = chain_hash(&st.head.hash, &bytes);
        let mac = key.mac(&hash);
        let record = AuditRecord {
            event: bytes,
            hash: hash.to_vec(),
            mac: mac.to_vec(),
        };
        segments::frame(&record, &mut st.pending);
        st.head = Mark {
            seq: e.seq,
            time: e.time_unix_micros,
            hash,
        };
        if st.pending_first.is_none() {
            st.pending_first = Some(st.head);
        }
    }

    /// Adds a checkpoint of the head if one is due (`force`: if anything
    /// happened since the last).
    fn checkpoint_if_due(&self, st: &mut State, now: i64, force: bool) {
        let since = st.head.seq.saturating_sub(st.last_checkpoint.0);
        let due = since >= self.settings.checkpoint_events
            || (force && since > 0)
            || (since > 0
                && now.saturating_sub(st.last_checkpoint.1)
                    >= i64::try_from(self.settings.checkpoint_secs)
                        .unwrap_or(i64::MAX)
                        .saturating_mul(1_000_000));
        if due && st.head.seq > 0 {
            let e = checkpoint_event(&self.engine, st.head.seq, &st.head.hash, now);
            let seqs = self.push(st, vec![e], now);
            st.last_checkpoint = (seqs.last().copied().unwrap_or(0), now);
        }
    }

    /// Appends `events`; with `waiter`, registers it to hear when the
    /// last of them is durable.
    fn append(
        &self,
        events: Vec<AuditEvent>,
        waiter: Option<tokio::sync::oneshot::Sender<bool>>,
    ) -> Result<Vec<u64>> {
        let mut st = self.lock()?;
        if st.closing {
            return Err(Unavailable::AuditClosed.into());
        }
        if st.pending.len() > MAX_PENDING {
            st.refused_unnumbered += 1;
            return Err(Unavailable::AuditBacklog.into());
        }
        let now = self.engine.clock().now_micros();
        let seqs = self.push(&mut st, events, now);
        if let (Some(tx), Some(&seq)) = (waiter, seqs.last()) {
            // Sequence numbers and deadlines only grow under this lock: the
            // queue stays sorted by both.
            st.waiters.push_back(Waiter {
                seq,
                deadline: Instant::now() + self.settings.timeout,
                tx,
            });
        }
        self.checkpoint_if_due(&mut st, now, false);
        let idle = st.writer_idle;
        drop(st);
        if idle {
            self.wake.notify_one();
        }
        Ok(seqs)
    }

    /// Removes the segments wholly older than the retention, leaving a
    /// signed anchor, and writes an `audit_prune` event.
    fn prune(&self) -> Result<u64> {
        let now = self.engine.clock().now_micros();
        let cutoff =
            now.saturating_sub(i64::from(self.settings.retention_days).saturating_mul(DAY_MICROS));
        let victims: Vec<Segment> = {
            let st = self.lock()?;
            // Never the newest segment: the writer may be appending to it.
            let n = st.segments.len().saturating_sub(1);
            st.segments[..n]
                .iter()
                .take_while(|s| s.last_time < cutoff)
                .copied()
                .collect()
        };
        let (Some(first), Some(last)) = (victims.first(), victims.last()) else {
            return Ok(0);
        };
        let anchor = signed(&self.engine, last.last_seq, &last.last_hash, now);
        // The anchor first: a crash before the files are gone leaves
        // segments the next start removes (they end at or before it).
        segments::write_synced(
            &self.dir.join(segments::ANCHOR_FILE),
            &prost::Message::encode_to_vec(&anchor),
        )?;
        for s in &victims {
            std::fs::remove_file(segments::segment_path(&self.dir, s.number))
                .map_err(|e| segments::io("removing a segment", e))?;
        }
        segments::sync_dir(&self.dir)?;
        let pruned = last.last_seq + 1 - first.first_seq;
        {
            let mut st = self.lock()?;
            st.segments.retain(|s| s.number > last.number);
            st.anchor = Some(anchor);
        }
        tracing::info!(
            events = pruned,
            segments = victims.len(),
            through = last.last_seq,
            "audit events past retention pruned"
        );
        self.append(
            vec![system_event(
            "audit_prune",
            "ok",
            format!(
                "pruned events {}..={} ({pruned} events, {} segments), all older than {} days; anchor signed at event {}",
                first.first_seq,
                last.last_seq,
                victims.len(),
                self.settings.retention_days,
                last.last_seq
            ),
        )], None)?;
        Ok(pruned)
    }
}

/// The writer thread's open segment.
struct Current {
    file: std::fs::File,
    number: u64,
    /// Bytes known good (written and, with `sync`, synced).
    len: u64,
    /// Bytes the file has: frames, then zeros written ahead of them.
    filled: u64,
    first_time: i64,
    /// Not yet in the state's segment list.
    listed: bool,
}

impl Current {
    /// Writes `bytes` after the frames, zero-filling ahead first when the
    /// space left is short (the sync after it then also commits the new
    /// size; the syncs after that commit data only).
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let end = self.len + bytes.len() as u64;
        if end > self.filled {
            let to = end + segments::PREALLOCATE;
            segments::zero_fill(&self.file, self.filled, to)?;
            self.filled = to;
        }
        self.file.write_all_at(bytes, self.len)
    }
}

impl Drop for Current {
    /// A segment left behind is cut back to its last good frame (best
    /// effort: a zero tail left by a failure here is cut at the next start).
    fn drop(&mut self) {
        if self.filled != self.len {
            let _ = self.file.set_len(self.len);
        }
    }
}

/// The writer thread: writes pending frames, syncs, publishes progress,
/// writes timed checkpoints and prunes.
fn writer(inner: Arc<Inner>, mut next_number: u64) {
    let mut current: Option<Current> = None;
    let mut retry: Option<(u64, u64, i64, bool)> = None;
    let mut last_prune = Instant::now();
    let mut closing_failures = 0;
    let gather = inner.settings.gather;
    let mut last_sync = Instant::now();
    loop {
        // Under load, syncs at most every `gather`: more events per sync,
        // fewer syncs and wake-ups. An idle trail syncs at once.
        let since = last_sync.elapsed();
        if since < gather {
            std::thread::sleep(gather - since);
        }
        if last_prune.elapsed() >= PRUNE_EVERY {
            last_prune = Instant::now();
            if let Err(e) = inner.prune() {
                tracing::error!(error = %e, "audit pruning failed; will retry");
            }
        }
        let Ok(mut st) = inner.state.lock() else {
            return;
        };
        // A timed checkpoint whether the trail is busy or idle.
        let now = inner.engine.clock().now_micros();
        inner.checkpoint_if_due(&mut st, now, false);
        while st.pending.is_empty() && !st.closing {
            st.writer_idle = true;
            let Ok((g, timeout)) = inner.wake.wait_timeout(st, Duration::from_secs(1)) else {
                return;
            };
            st = g;
            st.writer_idle = false;
            if timeout.timed_out() {
                let now = inner.engine.clock().now_micros();
                inner.checkpoint_if_due(&mut st, now, false);
                if last_prune.elapsed() >= PRUNE_EVERY {
                    break;
                }
            }
        }
        if st.pending.is_empty() && !st.closing {
            continue; // time to prune
        }
        if st.pending.is_empty() {
            return; // closing, all written
        }
        let bytes = std::mem::take(&mut st.pending);
        // The window runs from the start of a sync, not its end: a sync
        // slower than the window is followed at once by the next.
        last_sync = Instant::now();
        let Some(first) = st.pending_first.take() else {
            return;
        };
        let last = st.head;
        drop(st);

        let result = (|| -> std::io::Result<()> {
            if let Some(c) = &current
                && (c.len >= inner.settings.segment_bytes
                    || first.time.saturating_sub(c.first_time) >= SEGMENT_MICROS)
            {
                current = None;
            }
            if current.is_none() {
                let (number, len, first_time, listed) =
                    retry.unwrap_or((next_number, 0, first.time, false));
                let (file, on_disk) = segments::open_for_write(&inner.dir, number)?;
                if on_disk != len {
                    file.set_len(len)?;
                }
                if retry.take().is_none() {
                    next_number += 1;
                }
                current = Some(Current {
                    file,
                    number,
                    len,
                    filled: len,
                    first_time,
                    listed,
                });
            }
            let Some(c) = current.as_mut() else {
                return Err(std::io::Error::other("no segment"));
            };
            c.write(&bytes)?;
            if inner.settings.sync {
                c.file.sync_data()?;
            }
            c.len += bytes.len() as u64;
            Ok(())
        })();

        let Ok(mut st) = inner.state.lock() else {
            return;
        };
        match result {
            Ok(()) => {
                if let Some(c) = current.as_mut() {
                    if c.listed {
                        if let Some(s) = st.segments.last_mut() {
                            s.last_seq = last.seq;
                            s.last_time = last.time;
                            s.last_hash = last.hash;
                        }
                    } else {
                        st.segments.push(Segment {
                            number: c.number,
                            first_seq: first.seq,
                            last_seq: last.seq,
                            first_time: first.time,
                            last_time: last.time,
                            last_hash: last.hash,
                        });
                        c.listed = true;
                    }
                }
                // Only the requests whose events are now durable wake up.
                while st.waiters.front().is_some_and(|w| w.seq <= last.seq) {
                    if let Some(w) = st.waiters.pop_front() {
                        let _ = w.tx.send(true);
                    }
                }
                // Once every refused request's event is on disk, say so.
                if (!st.refused.is_empty() || st.refused_unnumbered > 0)
                    && st.refused.iter().all(|s| *s <= last.seq)
                {
                    let list: Vec<String> = st.refused.iter().map(u64::to_string).collect();
                    let detail = format!(
                        "{} request(s) were answered UNAVAILABLE because their events were not durable within {} ms, and {} more before they had an event; they disclosed and changed nothing. Their events (first 1000): [{}]",
                        st.refused_total,
                        inner.settings.timeout.as_millis(),
                        st.refused_unnumbered,
                        list.join(", ")
                    );
                    st.refused.clear();
                    st.refused_total = 0;
                    st.refused_unnumbered = 0;
                    let now = inner.engine.clock().now_micros();
                    inner.push(
                        &mut st,
                        vec![system_event("audit_refused", "ok", detail)],
                        now,
                    );
                }
            }
            Err(e) => {
                tracing::error!(error = %e.kind(), "audit trail write failed; requests are refused until it succeeds");
                if let Some(mut c) = current.take() {
                    // Cut back to the last good frame; reopened on retry.
                    let _ = c.file.set_len(c.len);
                    c.filled = c.len;
                    retry = Some((c.number, c.len, c.first_time, c.listed));
                }
                // The events go back in front of any newer ones.
                let mut again = bytes;
                again.append(&mut st.pending);
                st.pending = again;
                st.pending_first = Some(first);
                // Everyone waiting is answered at once: not durable.
                for w in std::mem::take(&mut st.waiters) {
                    st.refuse(w);
                }
                if st.closing {
                    closing_failures += 1;
                    if closing_failures >= 3 {
                        tracing::error!("audit trail closed with events unwritten");
                        return;
                    }
                }
                drop(st);
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// Answers "not durable" to every request whose event is not durable by
/// its deadline, even while the writer is stuck in a write or sync: checks
/// ten times per timeout (so a refusal comes at most a tenth of it late).
fn watchdog(inner: &Inner) {
    let every = (inner.settings.timeout / 10).max(Duration::from_millis(1));
    loop {
        std::thread::sleep(every);
        let Ok(mut st) = inner.state.lock() else {
            return;
        };
        let now = Instant::now();
        while st.waiters.front().is_some_and(|w| w.deadline <= now) {
            if let Some(w) = st.waiters.pop_front() {
                st.refuse(w);
            }
        }
        if st.closing && st.waiters.is_empty() {
            return;
        }
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
    pub fn open(engine: Arc<Engine>, dir: &Path, settings: Settings) -> Result<Self> {
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
        } = recovery::recover(&engine, dir, anchor.as_ref())?;
        let now = engine.clock().now_micros();
        let inner = Arc::new(Inner {
            dir: dir.to_owned(),
            engine,
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

    /// Makes `event` durable, then runs `write`: a change is never made
    /// without its event. If `write` fails, a `write_failed` event follows,
    /// naming the first.
    pub async fn record_then<T>(
        &self,
        event: AuditEvent,
        write: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let seqs = self.record(vec![event]).await?;
        match write.await {
            Ok(v) => Ok(v),
            Err(e) => {
                let ev = system_event(
                    "write_failed",
                    "error",
                    format!(
                        "the change of event {} was not made: {:?}",
                        seqs.first().copied().unwrap_or(0),
                        e.code()
                    ),
                );
                if let Err(a) = self.append(vec![ev]) {
                    tracing::error!(error = %a, "could not write a write_failed audit event");
                }
                Err(e)
            }
        }
    }

    /// Writes a checkpoint (if anything happened since the last), waits
    /// for everything to be written, and stops the writer.
    pub fn close(&self) {
        if let Ok(mut st) = self.inner.state.lock() {
            let now = self.inner.engine.clock().now_micros();
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

    /// Where the kept chain starts: `(sequence number before the first
    /// kept event, its hash)`, and the anchor if pruning left one.
    fn start(&self) -> Result<(u64, [u8; 32], Option<Checkpoint>)> {
        let st = self.inner.lock()?;
        Ok(match &st.anchor {
            Some(a) => (
                a.seq,
                a.hash.as_slice().try_into().map_err(|_| Error::Integrity)?,
                Some(a.clone()),
            ),
            None => (0, [0; 32], None),
        })
    }

    /// Calls `f` with each durable record after `after_seq`, in order,
    /// until it answers `false`; `None` for a record that does not decode.
    /// With `since`, segments wholly older are skipped.
    fn scan_after(
        &self,
        after_seq: u64,
        since: i64,
        mut f: impl FnMut(Option<(AuditRecord, AuditEvent)>) -> Result<bool>,
    ) -> Result<()> {
        let list = self.inner.lock()?.segments.clone();
        let newest = list.last().map(|s| s.number);
        for s in list
            .iter()
            .filter(|s| s.last_seq > after_seq && s.last_time >= since)
        {
            let mut more = true;
            let mut seen = 0;
            let end = segments::read_frames(
                &segments::segment_path(&self.inner.dir, s.number),
                |_, bytes| {
                    let item = segments::decode(bytes);
                    match &item {
                        Some((_, e)) if e.seq <= after_seq => return Ok(true),
                        // Beyond what was durable when the scan began.
                        Some((_, e)) if e.seq > s.last_seq => return Ok(false),
                        Some((_, e)) => seen = e.seq,
                        None => {}
                    }
                    more = f(item)?;
                    Ok(more)
                },
            )?;
            if !more {
                return Ok(());
            }
            // In the segment being written, what follows the last durable
            // event may be a write in progress, not damage.
            let in_progress = newest == Some(s.number) && seen == s.last_seq;
            if matches!(end, End::Torn { .. }) && !in_progress && !f(None)? {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Checks the whole kept chain (anchor, hashes, MACs, checkpoints).
    pub fn verify(&self) -> Result<Verified> {
        let (after, prev, anchor) = self.start()?;
        let public = self.public_key();
        if let Some(a) = &anchor
            && !verify_checkpoint(&public, a.seq, &a.hash, &a.signature)
        {
            return Ok(Verified {
                good: 0,
                first_bad: Some((after + 1, "the pruning anchor is not signed by this vault")),
                head: prev,
            });
        }
        let key = self.inner.engine.keyring().audit();
        let mut c = ChainChecker::new(after + 1, prev, Some(key), Some(&public));
        let mut bad = None;
        self.scan_after(after, 0, |item| {
            match c.check(item.as_ref().map(|(r, e)| (r, e))) {
                Ok(()) => Ok(true),
                Err(b) => {
                    bad = Some(b);
                    Ok(false)
                }
            }
        })?;
        Ok(c.verdict(bad))
    }

    /// Events after `q.after_seq` that pass `q`'s filters, in order, at
    /// most `q.limit` (default 1,000, at most [`MAX_QUERY_EVENTS`]) and
    /// about [`MAX_QUERY_BYTES`] (the page ends after the event that passes
    /// it). Without
    /// a time range, only the last `query_days` days.
    pub fn query(&self, q: &QueryRequest) -> Result<Vec<AuditEvent>> {
        let limit = match q.limit {
            0 => 1000,
            n => usize::try_from(n)
                .unwrap_or(MAX_QUERY_EVENTS)
                .min(MAX_QUERY_EVENTS),
        };
        let mut q = q.clone();
        if q.since_unix_micros == 0 && q.until_unix_micros == 0 {
            q.since_unix_micros = self.inner.engine.clock().now_micros().saturating_sub(
                i64::from(self.inner.settings.query_days).saturating_mul(DAY_MICROS),
            );
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        self.scan_after(q.after_seq, q.since_unix_micros, |item| {
            let (record, event) = item.ok_or(Error::Integrity)?;
            if matches(&q, &event) {
                bytes += record.event.len();
                out.push(event);
            }
            Ok(out.len() < limit && bytes < MAX_QUERY_BYTES)
        })?;
        Ok(out)
    }

    /// Every kept event about `subject` (the event's subject, or one of its
    /// items'), oldest first, at most `limit`; with the time of the oldest
    /// kept event (the history is complete since then) and whether events
    /// were left out over `limit`. Reads the whole kept trail.
    pub fn subject_history(&self, subject: &str, limit: usize) -> Result<SubjectHistory> {
        let mut h = SubjectHistory::default();
        self.scan_after(0, 0, |item| {
            let (_, e) = item.ok_or(Error::Integrity)?;
            if h.complete_since.is_none() {
                h.complete_since = Some(e.time_unix_micros);
            }
            if e.subject_id == subject || e.items.iter().any(|i| i.subject_id == subject) {
                if h.events.len() == limit {
                    h.truncated = true;
                    return Ok(false);
                }
                h.events.push(e);
            }
            Ok(true)
        })?;
        Ok(h)
    }

    /// Where an export of the events after `after_seq` starts (from the
    /// pruning anchor at the earliest) and ends (the last durable event).
    pub fn export_range(&self, after_seq: u64) -> Result<ExportRange> {
        let (start, start_hash, _) = self.start()?;
        let through = {
            let st = self.inner.lock()?;
            st.segments.last().map_or(start, |s| s.last_seq)
        };
        if after_seq <= start {
            return Ok(ExportRange {
                after: start,
                prev: start_hash,
                through,
            });
        }
        if after_seq > through {
            return Err(Error::NotFound("audit event"));
        }
        let mut hash = None;
        self.scan_after(after_seq - 1, 0, |item| {
            let (r, e) = item.ok_or(Error::Integrity)?;
            if e.seq == after_seq {
                hash = Some(<[u8; 32]>::try_from(r.hash.as_slice()).map_err(|_| Error::Integrity)?);
            }
            Ok(false)
        })?;
        Ok(ExportRange {
            after: after_seq,
            prev: hash.ok_or(Error::NotFound("audit event"))?,
            through,
        })
    }

    /// Calls `f` with each record of `range` and its event, in order, one
    /// at a time (memory does not grow with the trail), until it answers
    /// `false`. Each is checked as it is read (sequence number, chain hash,
    /// MAC, checkpoint signature): the vault never signs the end of a
    /// chain that does not check out ([`Error::Integrity`], logged with
    /// where). Returns the last event given to `f`: its sequence number and
    /// chain hash (`range.after` and `range.prev` if none).
    pub fn export_each(
        &self,
        range: &ExportRange,
        mut f: impl FnMut(AuditRecord, AuditEvent) -> Result<bool>,
    ) -> Result<(u64, [u8; 32])> {
        let public = self.public_key();
        let key = self.inner.engine.keyring().audit();
        let mut c = ChainChecker::new(range.after + 1, range.prev, Some(key), Some(&public));
        let mut stopped = false;
        if range.through > range.after {
            self.scan_after(range.after, 0, |item| {
                if let Err((seq, problem)) = c.check(item.as_ref().map(|(r, e)| (r, e))) {
                    tracing::error!(
                        seq,
                        problem,
                        "the audit trail fails its checks; export stopped"
                    );
                    return Err(Error::Integrity);
                }
                let Some((r, e)) = item else {
                    return Err(Error::Integrity);
                };
                if !f(r, e)? {
                    stopped = true;
                    return Ok(false);
                }
                Ok(c.expected <= range.through)
            })?;
        }
        if !stopped && c.expected != range.through + 1 {
            tracing::error!(
                expected = c.expected,
                through = range.through,
                "audit events missing at the end of an export"
            );
            return Err(Error::Integrity);
        }
        Ok((c.expected - 1, c.prev))
    }

    /// The checkpoint that ends an export of `range` whose last event is
    /// `seq` with chain hash `hash`, signed now: a chain checkpoint of
    /// `(seq, hash)` and an export signature binding the export's start to
    /// it ([`vault_proto::audit::export_message`]).
    pub fn export_checkpoint(&self, range: &ExportRange, seq: u64, hash: &[u8]) -> Checkpoint {
        let engine = &self.inner.engine;
        let now = engine.clock().now_micros();
        let mut c = signed(engine, seq, hash, now);
        c.export_signature =
            engine
                .keyring()
                .checkpoint()
                .sign(&vault_proto::audit::export_message(
                    range.after,
                    &range.prev,
                    seq,
                    hash,
                    now,
                ));
        c.start_after_seq = range.after;
        c.start_prev_hash = range.prev.to_vec();
        c
    }

    /// The checkpoint public key.
    pub fn public_key(&self) -> Vec<u8> {
        self.inner.engine.keyring().checkpoint().public()
    }

    /// The sequence number of the last appended event.
    pub fn head_seq(&self) -> u64 {
        self.inner.state.lock().map_or(0, |s| s.head.seq)
    }

    /// Bytes the kept trail takes on disk.
    pub fn size_on_disk(&self) -> u64 {
        let Ok(list) = segments::list(&self.inner.dir) else {
            return 0;
        };
        list.iter()
            .filter_map(|n| std::fs::metadata(segments::segment_path(&self.inner.dir, *n)).ok())
            .map(|m| m.len())
            .sum()
    }
}

#[cfg(test)]
mod tests;
