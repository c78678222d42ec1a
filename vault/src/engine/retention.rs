//! Retention (GDPR 5(1)(e), PCI DSS 3.2.1): when each stored value expires,
//! the sweeper that shreds expired values, and the report of what is due.
//!
//! A value's expiry follows its field's class in `fields.toml`: a number of
//! days after its collection, after the subject's last activity, or after
//! the end of travel (the `travel_end_date` anchor of Tokenize; without one,
//! after collection). A value past its expiry answers `EXPIRED` at once, even
//! before the sweeper reaches it; the sweeper then deletes its ciphertext and
//! index entry (the token stays, answering `EXPIRED`). A legal hold keeps a
//! subject's values readable and unswept.

use super::Engine;
use super::records::{FieldEntry, SubjectRecord};
use crate::error::{Error, Result};
use crate::schema::{FieldDef, RetentionAnchor};
use crate::store::{Batch, keys};
use std::collections::BTreeMap;
use std::sync::Arc;
use vault_proto::v1::ClassReport;

/// Seconds in a day.
const DAY: i64 = 86_400;
/// Subjects the sweeper changes at once (each is one commit; the group
/// commit shares their syncs).
const SWEEP_CONCURRENCY: usize = 16;

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepStats {
    /// Subjects changed.
    pub subjects: u64,
    /// Values shredded.
    pub fields: u64,
    /// Subjects with expired values kept by a legal hold.
    pub held: u64,
}

/// Whether an entry still holds a value the sweeper could shred.
fn stored(e: &FieldEntry) -> bool {
    e.shredded_at == 0 && !e.ciphertext.is_empty()
}

/// The rule of [`Engine::is_expired`]: shredded, or past `expires_at` (asked
/// only if needed) without a legal hold.
fn expired(
    record: &SubjectRecord,
    entry: &FieldEntry,
    now: i64,
    expires_at: impl FnOnce() -> Option<i64>,
) -> bool {
    entry.shredded_at > 0
        || (record.legal_hold_case.is_empty() && expires_at().is_some_and(|t| t <= now))
}

impl Engine {
    /// When `entry` of `record` expires (Unix seconds), by its class.
    pub(crate) fn expires_at(&self, record: &SubjectRecord, entry: &FieldEntry) -> Option<i64> {
        let field = self.schema.field(&entry.field)?;
        self.expires_at_as(record, entry, field)
    }

    /// [`Engine::expires_at`] for an entry whose field definition the
    /// caller already holds.
    fn expires_at_as(
        &self,
        record: &SubjectRecord,
        entry: &FieldEntry,
        field: &FieldDef,
    ) -> Option<i64> {
        let retention = self.schema.class(&field.class)?.retention;
        let from = match retention.after {
            RetentionAnchor::Collection => entry.created_at,
            RetentionAnchor::LastActivity => record.last_activity.max(entry.created_at),
            RetentionAnchor::TravelEnd if record.travel_end > 0 => record.travel_end,
            RetentionAnchor::TravelEnd => entry.created_at,
        };
        let computed = from.saturating_add(i64::from(retention.days).saturating_mul(DAY));
        // Once found expired (under a legal hold), it stays expired.
        Some(match entry.expired_at {
            0 => computed,
            stamped => computed.min(stamped),
        })
    }

    /// Whether `entry`'s value is gone or past its retention at `now`
    /// (a legal hold keeps it).
    pub(crate) fn is_expired(&self, record: &SubjectRecord, entry: &FieldEntry, now: i64) -> bool {
        expired(record, entry, now, || self.expires_at(record, entry))
    }

    /// [`Engine::is_expired`] for an entry whose field definition (`field`,
    /// the one named by `entry.field`) the caller already holds.
    pub(crate) fn is_expired_as(
        &self,
        record: &SubjectRecord,
        entry: &FieldEntry,
        field: &FieldDef,
        now: i64,
    ) -> bool {
        expired(record, entry, now, || {
            self.expires_at_as(record, entry, field)
        })
    }

    /// Shreds every value past its retention: deletes its ciphertext and
    /// index entry, keeps its token (answering `EXPIRED`). Reads every
    /// subject record once (off the async workers), then changes the
    /// subjects that have something due, a few at a time, each under its
    /// lock, re-checked against its current record.
    pub async fn sweep(self: &Arc<Self>) -> Result<SweepStats> {
        let now = self.clock.now();
        let engine = self.clone();
        let (due, held) = tokio::task::spawn_blocking(move || engine.due_subjects(now))
            .await
            .map_err(|e| Error::task("sweep scan", e))??;
        let stats = SweepStats {
            held,
            ..SweepStats::default()
        };
        self.each_subject(
            due,
            SWEEP_CONCURRENCY,
            move |engine, sid| async move { engine.shred_expired(&sid, now).await },
            stats,
            |stats, n| {
                if n > 0 {
                    stats.subjects += 1;
                    stats.fields += n;
                }
            },
        )
        .await
    }

    /// Runs `work` on each of `subjects`, at most `limit` at a time (each
    /// task takes its subject's lock itself), folding every result into
    /// `acc`. Every task started runs to its end; then the first error, if
    /// any, is returned.
    pub(crate) async fn each_subject<S, T, A, F>(
        self: &Arc<Self>,
        subjects: Vec<S>,
        limit: usize,
        work: impl Fn(Arc<Engine>, S) -> F,
        mut acc: A,
        mut fold: impl FnMut(&mut A, T),
    ) -> Result<A>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Result<T>> + Send + 'static,
    {
        let mut tasks = tokio::task::JoinSet::new();
        let mut first_error = None;
        let mut take = |done: std::result::Result<Result<T>, tokio::task::JoinError>,
                        acc: &mut A| {
            match done {
                Ok(Ok(t)) => fold(acc, t),
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(e) => {
                    first_error.get_or_insert(Error::task("subject task", e));
                }
            }
        };
        for sid in subjects {
            if tasks.len() >= limit.max(1)
                && let Some(done) = tasks.join_next().await
            {
                take(done, &mut acc);
            }
            tasks.spawn(work(self.clone(), sid));
        }
        while let Some(done) = tasks.join_next().await {
            take(done, &mut acc);
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(acc),
        }
    }

    /// Subjects with a value past its retention (and how many more a legal
    /// hold keeps).
    fn due_subjects(&self, now: i64) -> Result<(Vec<String>, u64)> {
        let mut held = 0;
        let due = self.subjects_where(|record| {
            let expired = record
                .entries
                .iter()
                .any(|e| stored(e) && self.expires_at(record, e).is_some_and(|t| t <= now));
            if expired && !record.legal_hold_case.is_empty() {
                held += 1;
                return false;
            }
            expired
        })?;
        Ok((due, held))
    }

    /// Ids of the subjects whose record `pick` accepts (blocking: reads
    /// every record once).
    pub(crate) fn subjects_where(
        &self,
        mut pick: impl FnMut(&SubjectRecord) -> bool,
    ) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut bad = None;
        self.store.for_each_subject(&mut |key, bytes| {
            let Some(sid) = key
                .strip_prefix(keys::SUBJECT_PREFIX)
                .and_then(|s| std::str::from_utf8(s).ok())
            else {
                return;
            };
            match super::decode::<SubjectRecord>(bytes, "subject") {
                Ok(r) => {
                    if pick(&r) {
                        out.push(sid.to_owned());
                    }
                }
                Err(e) => bad = Some(e),
            }
        })?;
        match bad {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// Shreds `sid`'s values past their retention at `now`; returns how many.
    async fn shred_expired(&self, sid: &str, now: i64) -> Result<u64> {
        let _guard = self.lock_for(sid).lock().await;
        let Some(current) = self.subject_record(sid)? else {
            return Ok(0);
        };
        if !current.legal_hold_case.is_empty() {
            return Ok(0);
        }
        let mut record = SubjectRecord::clone(&current);
        let mut batch = Batch::new();
        let shredded = self.settle_expired(sid, &mut record, &mut batch, now)?;
        if shredded > 0 {
            self.commit_subject(sid, Some(&current), record, batch, None)
                .await?;
        }
        Ok(shredded)
    }

    /// Makes expiry final in `record` before a write records new activity
    /// (GDPR 5(1)(e): activity after expiry must not revive a value whose
    /// retention runs from the last activity). Every value past its
    /// retention at `now` is shredded here, its index entry deleted in
    /// `batch`; under a legal hold it stays readable, but its expiry is
    /// stamped so that it is expired the moment the hold is lifted. Returns
    /// how many values were shredded.
    pub(crate) fn settle_expired(
        &self,
        sid: &str,
        record: &mut SubjectRecord,
        batch: &mut Batch,
        now: i64,
    ) -> Result<u64> {
        let held = !record.legal_hold_case.is_empty();
        let mut shredded = 0;
        for i in 0..record.entries.len() {
            let entry = &record.entries[i];
            if !stored(entry) {
                continue;
            }
            let Some(t) = self.expires_at(record, entry).filter(|t| *t <= now) else {
                continue;
            };
            let entry = &mut record.entries[i];
            if held {
                if entry.expired_at == 0 {
                    entry.expired_at = t;
                }
                continue;
            }
            if let Ok(blind) = <[u8; keys::BLIND_LEN]>::try_from(entry.blind.as_slice()) {
                batch.delete(keys::index(&blind, sid));
            }
            entry.ciphertext = Vec::new();
            entry.blind = Vec::new();
            entry.shredded_at = now;
            shredded += 1;
        }
        if shredded > 0 {
            // The old ciphertexts may linger in the store's log: the key
            // that opened them goes with this commit. (Not while the active
            // KEK may wrap no new key: the shredding is not held up for it;
            // the subject's next re-key, a correction or a later expiry
            // after the rotation, takes the old key away.)
            if self.check_wrapping().is_ok() {
                self.rekey_in(sid, record, batch)?;
            } else {
                tracing::warn!(
                    "expired values shredded without re-keying their subject: the active KEK is past its cryptoperiod"
                );
            }
        }
        Ok(shredded)
    }

    /// Per class: values live, due within `due_days`, overdue (past
    /// retention, not yet swept), held, and shredded, as of `now`.
    pub fn lifecycle_report(&self, due_days: u32, now: i64) -> Result<Vec<ClassReport>> {
        let mut classes: BTreeMap<String, ClassReport> = self
            .schema
            .classes()
            .map(|c| {
                let r = c.retention;
                (
                    c.name.clone(),
                    ClassReport {
                        class: c.name.clone(),
                        retention: format!("{}d after {}", r.days, r.after.name()),
                        ..ClassReport::default()
                    },
                )
            })
            .collect();
        let soon = now.saturating_add(i64::from(due_days).saturating_mul(DAY));
        let mut bad = None;
        self.store.for_each_subject(&mut |_, bytes| {
            let record = match super::decode::<SubjectRecord>(bytes, "subject") {
                Ok(r) => r,
                Err(e) => {
                    bad = Some(e);
                    return;
                }
            };
            for e in &record.entries {
                let Some(field) = self.schema.field(&e.field) else {
                    continue;
                };
                let (Some(c), Some(t)) =
                    (classes.get_mut(&field.class), self.expires_at(&record, e))
                else {
                    continue;
                };
                if e.shredded_at > 0 {
                    c.shredded += 1;
                } else if e.ciphertext.is_empty() {
                    // A CVV: never stored, nothing to keep or shred.
                } else if t <= now && !record.legal_hold_case.is_empty() {
                    c.held += 1;
                } else if t <= now {
                    c.overdue += 1;
                } else {
                    c.live += 1;
                    if t <= soon {
                        c.due += 1;
                    }
                }
            }
        })?;
        match bad {
            Some(e) => Err(e),
            None => Ok(classes.into_values().collect()),
        }
    }
}
