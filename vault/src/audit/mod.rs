//! The audit trail: an append-only, hash-chained, MACed log of events,
//! stored beside the data (`aud/<seq>`), never holding a value.
//!
//! Each record keeps the encoded [`AuditEvent`], its chain hash
//! `SHA-256("vault/v1/audit" ‖ previous hash ‖ event)` and
//! `HMAC-SHA256(audit key, hash)`. Anyone can recompute the hashes of an
//! export; only the vault can make the MACs; Ed25519 checkpoints over
//! `(seq, hash)` let an export be verified offline with the public key.
//!
//! Appending assigns sequence numbers and applies the events to the store
//! under one lock, in order, together with (and before) whatever the request
//! writes, so a write that survives a crash is never without its event.

use crate::crypto::keys::AuditKey;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::store::{Batch, keys};
use prost::Message;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use vault_proto::v1::{AuditEvent, AuditItem, AuditRecord, QueryRequest};

/// Most events one query returns.
pub const MAX_QUERY_EVENTS: usize = 10_000;

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

pub use vault_proto::audit::{CHAIN_LABEL, CHECKPOINT_LABEL, chain_hash, checkpoint_message};

/// How long a request waits for its events to be durable before it fails
/// `UNAVAILABLE` (and discloses nothing).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Stored records with their sequence numbers, in order.
pub type Records = Vec<(u64, AuditRecord)>;

/// The head of the chain: the next sequence number and the last hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    next: u64,
    hash: [u8; 32],
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

/// Checks records given as `(key sequence number, record)` in key order,
/// starting at `first` after `prev_hash`; with `key`, the MACs too.
pub fn verify_chain(
    records: impl IntoIterator<Item = (u64, AuditRecord)>,
    first: u64,
    prev_hash: [u8; 32],
    key: Option<&AuditKey>,
) -> Verified {
    let mut prev = prev_hash;
    let mut good = 0;
    let bad = |seq, why, good, head| Verified {
        good,
        first_bad: Some((seq, why)),
        head,
    };
    for (expected, (at, record)) in (first..).zip(records) {
        if at != expected {
            return bad(
                expected,
                if at > expected {
                    "missing (deleted)"
                } else {
                    "out of order"
                },
                good,
                prev,
            );
        }
        let Ok(event) = AuditEvent::decode(record.event.as_slice()) else {
            return bad(at, "undecodable event", good, prev);
        };
        if event.seq != at {
            return bad(
                at,
                "sequence number does not match its place (reordered or inserted)",
                good,
                prev,
            );
        }
        let hash = chain_hash(&prev, &record.event);
        if record.hash.as_slice() != hash.as_slice() {
            return bad(
                at,
                "hash does not match the event and its predecessor (changed, reordered or inserted)",
                good,
                prev,
            );
        }
        if let Some(k) = key
            && !k.verify(&hash, &record.mac)
        {
            return bad(
                at,
                "MAC does not match (not written by this vault)",
                good,
                prev,
            );
        }
        prev = hash;
        good += 1;
    }
    Verified {
        good,
        first_bad: None,
        head: prev,
    }
}

/// The vault's audit log.
pub struct AuditLog {
    engine: Arc<Engine>,
    head: Mutex<Head>,
    timeout: Duration,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

fn decode_seq(key: &[u8]) -> Option<u64> {
    let raw: [u8; 8] = key.get(keys::AUDIT_PREFIX.len()..)?.try_into().ok()?;
    Some(u64::from_be_bytes(raw))
}

impl AuditLog {
    /// Opens the log at its last record; a request waits at most `timeout`
    /// for its events to be durable.
    pub fn open(engine: Arc<Engine>, timeout: Duration) -> Result<Self> {
        let head = match engine.store().last_with_prefix(keys::AUDIT_PREFIX)? {
            None => Head {
                next: 1,
                hash: [0; 32],
            },
            Some((key, value)) => {
                let seq = decode_seq(&key).ok_or(Error::Integrity)?;
                let record = AuditRecord::decode(value.as_slice()).map_err(|_| Error::Integrity)?;
                let hash: [u8; 32] = record
                    .hash
                    .as_slice()
                    .try_into()
                    .map_err(|_| Error::Integrity)?;
                Head {
                    next: seq.checked_add(1).ok_or(Error::Integrity)?,
                    hash,
                }
            }
        };
        Ok(Self {
            engine,
            head: Mutex::new(head),
            timeout,
        })
    }

    /// Numbers and chains `events`, then applies them and, after them,
    /// `then`, in one ordered write; does not wait for the disk. Returns the
    /// sequence numbers given.
    pub fn append(&self, events: Vec<AuditEvent>, then: Batch) -> Result<Vec<u64>> {
        let mut head = self
            .head
            .lock()
            .map_err(|_| Error::Internal("audit head lock poisoned".into()))?;
        let mut next = *head;
        let mut batch = Batch::new();
        let mut seqs = Vec::with_capacity(events.len());
        let now = self.engine.clock().now_micros();
        for mut e in events {
            e.seq = next.next;
            if e.time_unix_micros == 0 {
                e.time_unix_micros = now;
            }
            let bytes = e.encode_to_vec();
            let hash = chain_hash(&next.hash, &bytes);
            let mac = self.engine.keyring().audit().mac(&hash);
            let record = AuditRecord {
                event: bytes,
                hash: hash.to_vec(),
                mac: mac.to_vec(),
            };
            batch.put(keys::audit(next.next), record.encode_to_vec());
            seqs.push(next.next);
            next = Head {
                next: next.next + 1,
                hash,
            };
        }
        batch.extend(then);
        // On failure the head stays: the next append reuses (overwrites) any
        // sequence numbers this one may have written.
        self.engine.store().apply(batch)?;
        *head = next;
        Ok(seqs)
    }

    /// [`AuditLog::append`], then waits until the events (and `then`) are
    /// durable, at most the configured time: after that, `UNAVAILABLE`.
    pub async fn record(&self, events: Vec<AuditEvent>, then: Batch) -> Result<Vec<u64>> {
        let seqs = self.append(events, then)?;
        match tokio::time::timeout(self.timeout, self.engine.store().durable()).await {
            Ok(Ok(())) => Ok(seqs),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(Error::Unavailable(format!(
                "audit events not durable within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }

    /// Checks the whole stored chain (hashes, MACs, sequence).
    pub fn verify(&self) -> Result<Verified> {
        // Undecodable records are kept (as empty ones) so that the chain
        // check names them rather than the scan failing.
        let mut records = Vec::new();
        self.scan_after(0, |seq, bytes| {
            records.push((seq, AuditRecord::decode(bytes).unwrap_or_default()));
            Ok(true)
        })?;
        Ok(verify_chain(
            records,
            1,
            [0; 32],
            Some(self.engine.keyring().audit()),
        ))
    }

    /// Calls `f` with each stored record after `after_seq`, in order, a
    /// chunk at a time, until `f` answers `false` or the records end.
    fn scan_after(
        &self,
        after_seq: u64,
        mut f: impl FnMut(u64, &[u8]) -> Result<bool>,
    ) -> Result<()> {
        let mut from = after_seq.saturating_add(1);
        loop {
            let chunk =
                self.engine
                    .store()
                    .scan_from(keys::AUDIT_PREFIX, &keys::audit(from), 4096)?;
            let Some(last) = chunk.last().and_then(|(k, _)| decode_seq(k)) else {
                return Ok(());
            };
            for (k, v) in &chunk {
                if !f(decode_seq(k).unwrap_or(0), v)? {
                    return Ok(());
                }
            }
            from = last.saturating_add(1);
        }
    }

    /// Events after `q.after_seq` that pass `q`'s filters, in order, at
    /// most `q.limit` (default 1,000, at most [`MAX_QUERY_EVENTS`]).
    pub fn query(&self, q: &QueryRequest) -> Result<Vec<AuditEvent>> {
        let limit = match q.limit {
            0 => 1000,
            n => usize::try_from(n)
                .unwrap_or(MAX_QUERY_EVENTS)
                .min(MAX_QUERY_EVENTS),
        };
        let mut out = Vec::new();
        self.scan_after(q.after_seq, |_, bytes| {
            let record = AuditRecord::decode(bytes).map_err(|_| Error::Integrity)?;
            let event =
                AuditEvent::decode(record.event.as_slice()).map_err(|_| Error::Integrity)?;
            if matches(q, &event) {
                out.push(event);
            }
            Ok(out.len() < limit)
        })?;
        Ok(out)
    }

    /// Every record after `after_seq`: `(hash before the first, records)`.
    pub fn export(&self, after_seq: u64) -> Result<([u8; 32], Records)> {
        let prev = if after_seq == 0 {
            [0; 32]
        } else {
            let v = self
                .engine
                .store()
                .get(&keys::audit(after_seq))?
                .ok_or(Error::NotFound("audit event"))?;
            let r = AuditRecord::decode(v.as_slice()).map_err(|_| Error::Integrity)?;
            r.hash.as_slice().try_into().map_err(|_| Error::Integrity)?
        };
        let mut out = Vec::new();
        self.scan_after(after_seq, |seq, bytes| {
            out.push((
                seq,
                AuditRecord::decode(bytes).map_err(|_| Error::Integrity)?,
            ));
            Ok(true)
        })?;
        Ok((prev, out))
    }

    /// Signs a checkpoint over `(seq, hash)`.
    pub fn sign_checkpoint(&self, seq: u64, hash: &[u8]) -> Vec<u8> {
        self.engine
            .keyring()
            .checkpoint()
            .sign(&checkpoint_message(seq, hash))
    }

    /// The checkpoint public key.
    pub fn public_key(&self) -> Vec<u8> {
        self.engine.keyring().checkpoint().public()
    }

    /// The next sequence number.
    pub fn next_seq(&self) -> u64 {
        self.head.lock().map_or(0, |h| h.next)
    }
}

#[cfg(test)]
mod tests;
