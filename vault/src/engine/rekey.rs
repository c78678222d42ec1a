//! KEK rotation and the rewrap of every subject's DEKs under the new KEK,
//! in the background, a few subjects at a time, resumable after a restart.

use super::records::SubjectRecord;
use super::{Engine, crypto};
use crate::error::{Error, Result};
use crate::store::{Batch, keys};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Subjects rewrapped at once.
const REWRAP_CONCURRENCY: usize = 16;

/// Progress of the running (or last) rewrap, for `Status`.
#[derive(Debug, Default)]
pub struct RewrapProgress {
    running: AtomicBool,
    total: AtomicU64,
    done: AtomicU64,
}

/// A snapshot of [`RewrapProgress`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RewrapState {
    /// Whether a rewrap is running.
    pub running: bool,
    /// Subjects with a DEK under an older KEK when it began.
    pub total: u64,
    /// Of those, subjects rewrapped so far.
    pub done: u64,
}

/// What one rewrap pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RewrapStats {
    /// Subjects changed.
    pub subjects: u64,
    /// DEKs rewrapped.
    pub deks: u64,
}

/// Clears the running flag when a pass ends, however it ends.
struct Running<'a>(&'a AtomicBool);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Engine {
    /// Makes a new KEK version the one that wraps new DEKs (one rotation at
    /// a time). The rewrap of existing DEKs is [`Engine::rewrap_all`]'s.
    /// Returns the new version.
    pub async fn rotate_kek(&self) -> Result<u32> {
        let _one = self.rotation.lock().await;
        crate::keystore::rotate(&self.keyring, self.store.as_ref(), self.clock.now())
            .await
            .map_err(|e| Error::keyring("KEK rotation", e))
    }

    /// Progress of the rewrap.
    pub fn rewrap_state(&self) -> RewrapState {
        RewrapState {
            running: self.rewrap.running.load(Ordering::Acquire),
            total: self.rewrap.total.load(Ordering::Relaxed),
            done: self.rewrap.done.load(Ordering::Relaxed),
        }
    }

    /// Whether a rotation's rewrap is unfinished (recorded in the store).
    pub fn rewrap_pending(&self) -> Result<bool> {
        Ok(self.store.get(keys::REWRAP)?.is_some())
    }

    /// Rewraps every DEK that an older KEK wraps under the active one:
    /// reads every subject record once off the async workers, then changes
    /// the subjects concerned, a few at a time, each under its lock. When
    /// nothing is left under an older KEK and no rotation happened
    /// meanwhile, the pending mark is removed. `None` if a pass is already
    /// running.
    pub async fn rewrap_all(self: &Arc<Self>) -> Result<Option<RewrapStats>> {
        if self.rewrap.running.swap(true, Ordering::AcqRel) {
            return Ok(None);
        }
        let _running = Running(&self.rewrap.running);
        self.check_wrapping()?;
        let mut stats = RewrapStats::default();
        // Again if a rotation happened meanwhile, until the active KEK wraps
        // every DEK.
        loop {
            let target = self.keyring.active_kek_version();
            let pass = self.rewrap_pass(target).await?;
            stats.subjects += pass.subjects;
            stats.deks += pass.deks;
            if self.keyring.active_kek_version() == target {
                let mut b = Batch::new();
                if self.store.shared() {
                    // (Only the mark of this rotation: another node's newer
                    // rotation keeps its own, and this pass goes on.)
                    b.expect(keys::REWRAP.to_vec(), target.to_be_bytes().to_vec());
                }
                b.delete(keys::REWRAP.to_vec());
                match self.store.commit(b).await {
                    Ok(()) => return Ok(Some(stats)),
                    Err(crate::store::StoreError::Conflict) => {
                        // Gone (another node finished it): done; another
                        // rotation's mark: its KEK, and on.
                        if self.store.get(keys::REWRAP)?.is_none() {
                            return Ok(Some(stats));
                        }
                        self.refresh_keks();
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }

    /// One pass of [`Engine::rewrap_all`] towards KEK `target`.
    async fn rewrap_pass(self: &Arc<Self>, target: u32) -> Result<RewrapStats> {
        let due = self
            .subjects_with_key(move |w| crate::crypto::envelope::key_version(w) != Some(target))
            .await?;
        self.rewrap.done.store(0, Ordering::Relaxed);
        self.rewrap.total.store(due.len() as u64, Ordering::Relaxed);
        self.each_subject(
            due,
            REWRAP_CONCURRENCY,
            |engine, (sid, slot)| async move {
                let r = engine.rewrap_subject(&sid, slot).await;
                engine.rewrap.done.fetch_add(1, Ordering::Relaxed);
                r
            },
            RewrapStats::default(),
            |stats, n| {
                stats.deks += n;
                stats.subjects += u64::from(n > 0);
            },
        )
        .await
    }

    /// The subjects, with the slot, whose key slot holds a wrapped key
    /// `matches` takes (reads the key slots, not the records, off the async
    /// workers). A slot that holds such a key but belongs to no subject (a
    /// first Tokenize a crash cut short between its key and its pointer) is
    /// shredded, so that it does not keep an old KEK in use; only slots
    /// handed out before this run are taken for that (a later one may be a
    /// Tokenize under way). A slot whose pointer names a subject whose
    /// record is elsewhere (cut short between the pointer and the record)
    /// is for [`Engine::orphaned`] to find, under the subject's lock.
    async fn subjects_with_key(
        self: &Arc<Self>,
        matches: impl Fn(&[u8]) -> bool + Send + 'static,
    ) -> Result<Vec<(String, u64)>> {
        let horizon = self.slot_horizon()?;
        let engine = self.clone();
        let (subjects, orphans) = tokio::task::spawn_blocking(move || {
            let mut slots = Vec::new();
            engine.store.for_each_key_slot(&mut |slot, held| {
                if held.iter().any(|(_, w)| matches(w)) {
                    slots.push(slot);
                }
            })?;
            let (mut subjects, mut orphans) = (Vec::with_capacity(slots.len()), Vec::new());
            for slot in slots {
                match engine.slot_owner(slot)? {
                    super::SlotOwner::Subject(sid) => subjects.push((sid, slot)),
                    super::SlotOwner::Nobody if slot < horizon => orphans.push(slot),
                    _ => {}
                }
            }
            Ok::<_, Error>((subjects, orphans))
        })
        .await
        .map_err(|e| Error::task("key slot scan", e))??;
        // (On a store that several nodes share, commits are transactions:
        // no crash leaves a slot without its pointer, and a slot that looks
        // so may be another node's Tokenize under way.)
        if !orphans.is_empty() && !self.store.shared() {
            let mut batch = Batch::new();
            for slot in &orphans {
                batch.shred_key(*slot, None);
            }
            self.store.commit(batch).await?;
            tracing::info!(
                slots = orphans.len(),
                "shredded key slots that belong to no subject"
            );
        }
        Ok(subjects)
    }

    /// Rewraps `sid`'s DEKs under the active KEK, in place in its key slot
    /// `slot` (the record does not change); returns how many changed.
    async fn rewrap_subject(&self, sid: &str, slot: u64) -> Result<u64> {
        let _guard = self.lock_for(sid).lock().await;
        let Some(current) = self.orphaned(sid, slot).await? else {
            return Ok(0);
        };
        let mut record = SubjectRecord::clone(&current);
        let mut batch = Batch::new();
        let mut changed = 0;
        for d in &mut record.deks {
            if let Some(w) = self
                .keyring
                .rewrap(sid, d.version, &d.wrapped)
                .map_err(crypto)?
            {
                batch.put_key(record.slot, d.version, w.clone());
                d.wrapped = w;
                changed += 1;
            }
        }
        // A key the record does not use (a re-key a crash cut short) is
        // shredded, not rewrapped: it must not keep an old KEK in use.
        for (v, _) in self.store.keys(record.slot)? {
            if !record.deks.iter().any(|d| d.version == v) {
                batch.shred_key(record.slot, Some(v));
            }
        }
        if !batch.is_empty() {
            let batch = self.guarded(sid, Some(&current), batch);
            if let Err(e) = self.store.commit(batch).await {
                self.cache.forget_subject(sid);
                return Err(e.into());
            }
            self.cache.write_through(sid, Arc::new(record));
        }
        Ok(changed)
    }
}

/// What re-keying after a compromised KEK did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompromiseStats {
    /// Subjects given a new data key.
    pub subjects: u64,
    /// Values re-encrypted under their new keys.
    pub fields: u64,
}

impl Engine {
    /// Refuses wrapping under the active KEK once its cryptoperiod is over.
    pub(crate) fn check_wrapping(&self) -> Result<()> {
        if self.clock.now() >= self.kek_expires_at() {
            return Err(Error::FailedPrecondition(
                "the active key-encrypting key is past its cryptoperiod: an operator must rotate keys (vaultctl keys rotate)",
            ));
        }
        Ok(())
    }

    /// When the active KEK's cryptoperiod ends (Unix seconds).
    pub fn kek_expires_at(&self) -> i64 {
        let v = self.keyring.active_kek_version();
        self.keyring
            .kek_created_at(v)
            .unwrap_or(0)
            .saturating_add(self.kek_period)
    }

    /// A warning when the active KEK's cryptoperiod is over or ends soon.
    pub fn kek_warning(&self) -> Option<String> {
        let now = self.clock.now();
        let end = self.kek_expires_at();
        let v = self.keyring.active_kek_version();
        if now >= end {
            Some(format!(
                "KEK v{v} is past its cryptoperiod: new data keys are refused until keys are rotated"
            ))
        } else if now >= end.saturating_sub(self.kek_warning) {
            Some(format!(
                "KEK v{v}'s cryptoperiod ends in {} days: rotate keys",
                (end - now + 86_399) / 86_400
            ))
        } else {
            None
        }
    }

    /// Retires KEK `version` (operators): refused for the active version
    /// and while any data key is still wrapped under it; then the wrapped
    /// KEK is destroyed and the version never wraps again.
    pub async fn retire_kek(self: &Arc<Self>, version: u32) -> Result<()> {
        let _one = self.rotation.lock().await;
        self.retire_locked(version).await
    }

    async fn retire_locked(self: &Arc<Self>, version: u32) -> Result<()> {
        if !self.keyring.kek_versions().contains(&version) {
            return Err(Error::NotFound("key-encrypting key version"));
        }
        if version == self.keyring.active_kek_version() {
            return Err(Error::FailedPrecondition(
                "the active key-encrypting key cannot be retired: rotate keys first",
            ));
        }
        let still = self.subjects_under(version).await?;
        if !still.is_empty() {
            return Err(Error::FailedPrecondition(
                "data keys are still wrapped under this version: wait for the rewrap to finish (vaultctl status)",
            ));
        }
        crate::keystore::retire(
            &self.keyring,
            self.store.as_ref(),
            version,
            self.clock.now(),
        )
        .await
        .map_err(|e| Error::keyring("retiring a KEK", e))
    }

    /// Handles a compromised KEK `version` (operators): rotates first if it
    /// is the active one, gives every subject with a data key under it a
    /// new data key under the active KEK and re-encrypts all its values,
    /// then retires the version.
    pub async fn kek_compromised(self: &Arc<Self>, version: u32) -> Result<CompromiseStats> {
        if !self.keyring.kek_versions().contains(&version) {
            return Err(Error::NotFound("key-encrypting key version"));
        }
        if version == self.keyring.active_kek_version() {
            self.rotate_kek().await?;
        }
        let _one = self.rotation.lock().await;
        self.check_wrapping()?;
        let due = self.subjects_under(version).await?;
        let stats = self
            .each_subject(
                due,
                REWRAP_CONCURRENCY,
                move |engine, (sid, slot)| async move {
                    engine.rekey_subject(&sid, slot, version).await
                },
                CompromiseStats::default(),
                |stats, n| {
                    if let Some(n) = n {
                        stats.subjects += 1;
                        stats.fields += n;
                    }
                },
            )
            .await?;
        self.retire_locked(version).await?;
        Ok(stats)
    }

    /// Subjects with a data key wrapped under KEK `version`.
    async fn subjects_under(self: &Arc<Self>, version: u32) -> Result<Vec<(String, u64)>> {
        self.subjects_with_key(move |w| crate::crypto::envelope::key_version(w) == Some(version))
            .await
    }

    /// `sid`'s record, if it is the one key slot `slot` belongs to; if not
    /// (no record, or a record in another slot: a first Tokenize a crash
    /// cut short between the slot's pointer and the record, and then
    /// retried), the slot's keys open nothing and are shredded, and `None`.
    /// The caller holds `sid`'s lock, so no Tokenize of `sid` is under way.
    ///
    /// On a store that several nodes share, a commit is one transaction, so
    /// no crash leaves such a slot: a record elsewhere is one this node's
    /// cache has not caught up with (another node erased the subject and
    /// stored it again), and nothing is shredded.
    async fn orphaned(&self, sid: &str, slot: u64) -> Result<Option<Arc<SubjectRecord>>> {
        match self.subject_record(sid)? {
            Some(r) if r.slot == slot => Ok(Some(r)),
            _ if self.store.shared() => {
                self.cache.forget_subject(sid);
                Ok(None)
            }
            _ => {
                let mut batch = Batch::new();
                batch.shred_key(slot, None);
                self.store.commit(batch).await?;
                tracing::info!("shredded a key slot whose subject's record is elsewhere");
                Ok(None)
            }
        }
    }

    /// Gives `sid` one new data key under the active KEK and re-encrypts
    /// every value under it, if any of its keys is wrapped under `version`;
    /// the old keys are dropped. Returns the values re-encrypted.
    async fn rekey_subject(&self, sid: &str, slot: u64, version: u32) -> Result<Option<u64>> {
        let _guard = self.lock_for(sid).lock().await;
        let Some(current) = self.orphaned(sid, slot).await? else {
            return Ok(None);
        };
        if !current
            .deks
            .iter()
            .any(|d| crate::crypto::envelope::key_version(&d.wrapped) == Some(version))
        {
            return Ok(None);
        }
        let mut record = SubjectRecord::clone(&current);
        let mut batch = Batch::new();
        self.rekey_in(sid, &mut record, &mut batch)?;
        let fields = record.deks.first().map_or(0, |d| d.encryptions);
        self.commit_subject(sid, Some(&current), record, batch, None)
            .await?;
        // The old keys must not outlive their record in memory either.
        self.keyring.forget_subject(sid);
        Ok(Some(fields))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::test_store_email as store_email;

    /// A key slot whose first Tokenize a crash cut short (its key written,
    /// its pointer and record not) belongs to no subject: the next rewrap
    /// shreds it, and the old KEK can then be retired.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_orphan_key_slot_does_not_keep_an_old_kek_in_use() {
        let dir = tempfile::tempdir().unwrap();
        {
            let engine = crate::engine::test_engine(dir.path()).await;
            store_email(&engine, "or-1", "one@example.com").await;
            store_email(&engine, "or-2", "two@example.com").await;
            store_email(&engine, "or-3", "three@example.com").await;
            // What a crash leaves of or-1's first Tokenize: only its key;
            // of or-3's: its key and its slot's pointer, no record.
            let mut b = Batch::new();
            b.delete(keys::slot(1));
            b.delete(keys::subject("or-1"));
            b.delete(keys::subject("or-3"));
            engine.store().commit(b).await.unwrap();
            assert_eq!(engine.store().keys(1).unwrap().len(), 1);
            assert_eq!(engine.store().keys(3).unwrap().len(), 1);
        }
        // The next run: slots 1 to 3 were handed out before it.
        let engine = crate::engine::test_engine(dir.path()).await;
        // A Tokenize of this run under way: its key written, its pointer
        // not yet. Its slot is not taken for an orphan.
        let under_way = engine.allocate_slot().unwrap();
        assert!(under_way > 3);
        let (_, wrapped) = engine.keyring().new_dek("or-4", 1).unwrap();
        let mut b = Batch::new();
        b.put_key(under_way, 1, wrapped);
        engine.store().commit(b).await.unwrap();

        engine.rotate_kek().await.unwrap();
        engine.rewrap_all().await.unwrap();
        assert!(engine.store().keys(1).unwrap().is_empty(), "no pointer");
        assert!(engine.store().keys(3).unwrap().is_empty(), "no record");
        assert_eq!(engine.store().keys(2).unwrap().len(), 1);
        assert_eq!(
            engine.store().keys(under_way).unwrap().len(),
            1,
            "a slot of this run is not shredded"
        );
    }

    /// The orphans shredded, the old KEK retires (nothing else holds it).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_kek_retires_once_orphan_slots_are_shredded() {
        let dir = tempfile::tempdir().unwrap();
        {
            let engine = crate::engine::test_engine(dir.path()).await;
            store_email(&engine, "or-1", "one@example.com").await;
            store_email(&engine, "or-2", "two@example.com").await;
            let mut b = Batch::new();
            b.delete(keys::subject("or-1"));
            engine.store().commit(b).await.unwrap();
        }
        let engine = crate::engine::test_engine(dir.path()).await;
        let new = engine.rotate_kek().await.unwrap();
        assert!(engine.retire_kek(new - 1).await.is_err(), "slot 1 holds it");
        engine.rewrap_all().await.unwrap();
        assert!(engine.store().keys(1).unwrap().is_empty());
        engine.retire_kek(new - 1).await.unwrap();
    }
}
