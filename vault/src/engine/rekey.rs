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
        self.keyring
            .rotate(self.store.as_ref())
            .await
            .map_err(|e| Error::Internal(format!("KEK rotation: {e}")))
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
                b.delete(keys::REWRAP.to_vec());
                self.store.commit(b).await?;
                return Ok(Some(stats));
            }
        }
    }

    /// One pass of [`Engine::rewrap_all`] towards KEK `target`.
    async fn rewrap_pass(self: &Arc<Self>, target: u32) -> Result<RewrapStats> {
        let engine = self.clone();
        let due = tokio::task::spawn_blocking(move || engine.subjects_to_rewrap(target))
            .await
            .map_err(|e| Error::Internal(format!("rewrap scan: {e}")))??;
        self.rewrap.done.store(0, Ordering::Relaxed);
        self.rewrap.total.store(due.len() as u64, Ordering::Relaxed);
        let mut stats = RewrapStats::default();
        let mut tasks = tokio::task::JoinSet::new();
        let mut first_error = None;
        let mut collect = |done: std::result::Result<Result<u64>, tokio::task::JoinError>,
                           stats: &mut RewrapStats| {
            match done {
                Ok(Ok(n)) => {
                    stats.deks += n;
                    stats.subjects += u64::from(n > 0);
                }
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(e) => {
                    first_error.get_or_insert(Error::Internal(format!("rewrap task: {e}")));
                }
            }
        };
        for sid in due {
            if tasks.len() >= REWRAP_CONCURRENCY
                && let Some(done) = tasks.join_next().await
            {
                collect(done, &mut stats);
            }
            let engine = self.clone();
            tasks.spawn(async move {
                let r = engine.rewrap_subject(&sid).await;
                engine.rewrap.done.fetch_add(1, Ordering::Relaxed);
                r
            });
        }
        while let Some(done) = tasks.join_next().await {
            collect(done, &mut stats);
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(stats),
        }
    }

    /// Subjects with a DEK that `target` does not wrap.
    fn subjects_to_rewrap(&self, target: u32) -> Result<Vec<String>> {
        let mut due = Vec::new();
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
                    if r.deks
                        .iter()
                        .any(|d| crate::crypto::envelope::key_version(&d.wrapped) != Some(target))
                    {
                        due.push(sid.to_owned());
                    }
                }
                Err(e) => bad = Some(e),
            }
        })?;
        match bad {
            Some(e) => Err(e),
            None => Ok(due),
        }
    }

    /// Rewraps `sid`'s DEKs under the active KEK; returns how many changed.
    async fn rewrap_subject(&self, sid: &str) -> Result<u64> {
        let _guard = self.lock_for(sid).lock().await;
        let Some(current) = self.subject_record(sid)? else {
            return Ok(0);
        };
        let mut record = SubjectRecord::clone(&current);
        let mut changed = 0;
        for d in &mut record.deks {
            if let Some(w) = self
                .keyring
                .rewrap(sid, d.version, &d.wrapped)
                .map_err(crypto)?
            {
                d.wrapped = w;
                changed += 1;
            }
        }
        if changed > 0 {
            self.commit_subject(sid, record, Batch::new(), None).await?;
        }
        Ok(changed)
    }
}
