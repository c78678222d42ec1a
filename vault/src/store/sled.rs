//! The embedded store on sled, with group commit, and the key-slot file.
//!
//! Each commit applies its operations in order, each one atomic (sled's
//! `apply_batch` and transactions take a process-wide write lock that stalls
//! every other reader and writer, so they are not used), and then waits for
//! a flusher thread. The flusher takes every waiting commit at once, makes the
//! log durable once, and answers them all: concurrent requests share one
//! flush. With [`Durability::Fsync`] (the default) the flusher follows sled's
//! flush (which uses `sync_file_range`) with an `fsync` of sled's data file,
//! so an acknowledged write survives power loss, not only a killed process.
//!
//! Wrapped data keys are not in sled but in the key-slot file
//! ([`super::slots`]). A new key is written into its slot when its commit is
//! applied, and the flusher syncs the slot file *before* it flushes sled, so
//! a record never reaches the disk before its key. Shredding a key is the
//! other way round: the commit records its intent (`shred/` in sled), and
//! the flusher overwrites the slot with zeros only *after* sled's flush
//! (the erasure journal and the record's removal are then durable), then
//! syncs the slot file and answers. An intent left by a crash is carried
//! out when the store opens again.
//!
//! A commit that fails leaves nothing behind ([`Store::commit`]): it keeps
//! the old value of every key it changes in sled (sled's `insert` and
//! `remove` hand it back) and the old content of every key slot it writes,
//! and on failure puts them back (its shreds, not yet carried out, are
//! dropped) and makes the undo durable with one more flush, so that neither
//! a later commit nor sled's own periodic flush can carry the failed change
//! to disk. If even that fails, or a shred fails after its journal is
//! durable, the store stops taking writes ([`StoreError::Failed`]) until it
//! is restarted (which finishes the shreds).

use super::private::{create_private_dir, make_private};
use super::slots::{SlotFile, SlotKeys};
use super::{Batch, BoxFuture, Op, Store, StoreError, keys};
use crate::model::faults;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use tokio::sync::oneshot;

/// What an acknowledged write survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Flush sled's log and `fsync` its file: survives power loss (default).
    Fsync,
    /// Flush sled's log only: survives a killed process, maybe not power loss.
    Flush,
}

/// A commit waiting for the flusher, with its id (0: a wait for durability
/// alone, of [`Store::durable`] or of an undo).
type Waiter = (oneshot::Sender<Outcome>, u64);

/// What the flusher did for a commit.
#[derive(Debug, Clone)]
enum Outcome {
    /// Everything is durable, shreds done.
    Durable,
    /// Not durable: the commit is to be undone.
    NotDurable(String),
    /// Durable, but a shred failed: not to be undone (the intents stay
    /// and the next open finishes them); the store takes no more writes.
    ShredFailed,
}

/// A key shred staged by commit `.0`: slot, version (`None`: whole slot).
type Shred = (u64, u64, Option<u32>);

/// What puts back one change a commit made.
enum Undo {
    /// Restore `key` in sled to its old value (`None`: absent).
    Sled(Vec<u8>, Option<sled::IVec>),
    /// Restore the half of `slot` for `version` to its old bytes.
    Key(u64, u32, Vec<u8>),
    /// Nothing to put back.
    Nothing,
}

/// The slot file and what the flusher must do with it.
struct Slots {
    file: SlotFile,
    /// Set by every key write: the next flush syncs the file first.
    dirty: AtomicBool,
    /// Shreds waiting for their commit's flush.
    pending: Mutex<Vec<Shred>>,
    /// Unit tests: the next flush fails.
    #[cfg(test)]
    fail_next_flush: AtomicBool,
    /// Unit tests: the next shred fails.
    #[cfg(test)]
    fail_next_shred: AtomicBool,
    /// Unit tests: the flusher waits a moment before it takes its next
    /// group (so that commits made together share it).
    #[cfg(test)]
    hold_next_group: AtomicBool,
}

/// sled-backed [`Store`].
pub struct SledStore {
    db: sled::Db,
    /// One sled tree per key family (see [`SledStore::tree_for`]).
    trees: [sled::Tree; 4],
    slots: Arc<Slots>,
    dir: PathBuf,
    flush_tx: Mutex<Option<mpsc::Sender<Waiter>>>,
    flusher: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Set once a failed write could not be undone: no more writes.
    failed: Arc<AtomicBool>,
    next_commit: AtomicU64,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// Name of the key-slot file in the data directory.
pub const SLOT_FILE: &str = "keyslots";
/// Directory of the one-file-per-subject layout before issue 19.
pub const LEGACY_RECORDS: &str = "subjects";

impl SledStore {
    /// Opens (creating if needed) the store in `dir`, with a page cache of
    /// `cache_bytes`, and finishes the shreds a crash interrupted.
    pub fn open(dir: &Path, cache_bytes: u64, durability: Durability) -> Result<Self, StoreError> {
        // The data is encrypted, but its shape (how many subjects, when) is
        // nobody else's business either: owner-only, whoever made it.
        create_private_dir(dir).map_err(backend)?;
        if make_private(dir).map_err(backend)? {
            tracing::warn!(dir = %dir.display(), "the data directory let others in: made it owner-only (0700)");
        }
        if legacy_records(dir) {
            return Err(StoreError::Backend(format!(
                "{} holds subject records in the layout before key slots (one file per subject in {LEGACY_RECORDS}/): \
                 this version cannot read it; take a backup with the previous version and restore it with this one \
                 (docs/operations.md, \"Upgrading the storage layout\")",
                dir.display()
            )));
        }
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .mode(sled::Mode::HighThroughput)
            // Only our flusher flushes, always after syncing the key slots:
            // sled's own timer could carry a record to disk before its key.
            .flush_every_ms(None)
            .open()
            .map_err(backend)?;
        // Separate trees keep small pointer entries out of the leaves that hold
        // kilobyte subject records: sled copies a leaf on every write.
        let trees = [
            db.open_tree("meta").map_err(backend)?,
            db.open_tree("tokens").map_err(backend)?,
            db.open_tree("index").map_err(backend)?,
            db.open_tree("subjects").map_err(backend)?,
        ];
        let slots = Arc::new(Slots {
            file: SlotFile::open(&dir.join(SLOT_FILE)).map_err(backend)?,
            dirty: AtomicBool::new(false),
            pending: Mutex::new(Vec::new()),
            #[cfg(test)]
            fail_next_flush: AtomicBool::new(false),
            #[cfg(test)]
            fail_next_shred: AtomicBool::new(false),
            #[cfg(test)]
            hold_next_group: AtomicBool::new(false),
        });
        check_slot_file(&trees[0], &slots.file, dir)?;
        finish_shreds(&db, &trees[0], &slots.file)?;
        let data_file = match durability {
            Durability::Fsync => Some(File::open(dir.join("db")).map_err(backend)?),
            Durability::Flush => None,
        };
        let (tx, rx) = mpsc::channel::<Waiter>();
        let failed = Arc::new(AtomicBool::new(false));
        let flusher = {
            let (db, meta, slots, failed) =
                (db.clone(), trees[0].clone(), slots.clone(), failed.clone());
            std::thread::Builder::new()
                .name("vault-group-commit".into())
                .spawn(move || group_commit(&db, &meta, data_file, &slots, &failed, &rx))
                .map_err(backend)?
        };
        Ok(Self {
            db,
            trees,
            slots,
            dir: dir.to_owned(),
            flush_tx: Mutex::new(Some(tx)),
            flusher: Mutex::new(Some(flusher)),
            failed,
            next_commit: AtomicU64::new(1),
        })
    }

    /// The tree that holds keys starting like `key`.
    fn tree_for(&self, key: &[u8]) -> &sled::Tree {
        let i = if key.starts_with(keys::TOKEN_PREFIX) {
            1
        } else if key.starts_with(keys::INDEX_PREFIX) {
            2
        } else if key.starts_with(keys::SUBJECT_PREFIX) {
            3
        } else {
            0
        };
        &self.trees[i]
    }

    /// Stops the flusher after a last flush. Commits after this fail `Closed`.
    pub fn close(&self) -> Result<(), StoreError> {
        self.stop_flusher();
        self.flush()
    }

    /// Ends the flusher thread and waits for it (it holds the database, so
    /// the directory is free again once this and the store are gone).
    fn stop_flusher(&self) {
        if let Ok(mut tx) = self.flush_tx.lock() {
            tx.take();
        }
        if let Some(handle) = self.flusher.lock().ok().and_then(|mut h| h.take()) {
            let _ = handle.join();
        }
    }
}

/// Refuses a key-slot file shorter than the slots the store has handed out:
/// missing, truncated or another directory's (every subject's values would
/// fail their integrity check).
fn check_slot_file(meta: &sled::Tree, slots: &SlotFile, dir: &Path) -> Result<(), StoreError> {
    let last = meta
        .scan_prefix(keys::SLOT_PREFIX)
        .keys()
        .next_back()
        .transpose()
        .map_err(backend)?
        .and_then(|k| keys::slot_number(&k));
    let len = slots.len().map_err(backend)?;
    match last {
        // (slot n's first key written reaches at least into slot n)
        Some(n) if len <= n.saturating_mul(super::slots::SLOT_LEN) => {
            Err(StoreError::Backend(format!(
                "{} is shorter than the {} key slots this data directory has handed out: the key-slot file is missing or truncated, and without it no subject's values can be read; put the right file back (from the same copy of the data directory) before starting",
                dir.join(SLOT_FILE).display(),
                n + 1
            )))
        }
        _ => Ok(()),
    }
}

/// Whether `dir` holds record files of the layout before key slots.
fn legacy_records(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir.join(LEGACY_RECORDS)) else {
        return false;
    };
    entries
        .filter_map(|e| e.ok())
        .any(|e| e.file_name() != "tmp")
}

impl Drop for SledStore {
    /// The flusher ends with the store, not some time after: a store opened
    /// again on the same directory (the next run of an embedded vault)
    /// finds it free.
    fn drop(&mut self) {
        self.stop_flusher();
    }
}

/// The key of the intent to shred `version` (`None`: all) of `slot`.
pub(crate) fn shred_intent(slot: u64, version: Option<u32>) -> Vec<u8> {
    let mut k = keys::SHRED_PREFIX.to_vec();
    k.extend_from_slice(&slot.to_be_bytes());
    k.extend_from_slice(&version.unwrap_or(u32::MAX).to_be_bytes());
    k
}

fn parse_intent(key: &[u8]) -> Option<(u64, Option<u32>)> {
    let rest = key.strip_prefix(keys::SHRED_PREFIX)?;
    let slot = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
    let version = u32::from_be_bytes(rest.get(8..12)?.try_into().ok()?);
    Some((slot, (version != u32::MAX).then_some(version)))
}

/// Carries out the erasures' shreds (whole slots) whose intent a crash
/// left in `meta`: an erasure writes its journal before its intent, so the
/// erasure is finished at start anyway. Intents to shred one version (a
/// re-key) are left to the engine, which checks that the durable record no
/// longer uses it ([`Store::pending_key_shreds`]).
fn finish_shreds(db: &sled::Db, meta: &sled::Tree, slots: &SlotFile) -> Result<(), StoreError> {
    let mut intents = Vec::new();
    for key in meta.scan_prefix(keys::SHRED_PREFIX).keys() {
        let key = key.map_err(backend)?;
        if let Some((slot, None)) = parse_intent(&key) {
            slots.shred(slot, None).map_err(backend)?;
            intents.push(key);
        }
    }
    if intents.is_empty() {
        return Ok(());
    }
    slots.sync().map_err(backend)?;
    for key in intents {
        meta.remove(key).map_err(backend)?;
    }
    db.flush().map_err(backend)?;
    tracing::info!("finished the key shreds a crash interrupted");
    Ok(())
}

/// The flusher: waits for a commit, takes every commit waiting, syncs the
/// new keys, flushes sled once, carries out the waiting commits' shreds,
/// answers them all. Ends when the store is closed.
fn group_commit(
    db: &sled::Db,
    meta: &sled::Tree,
    data_file: Option<File>,
    slots: &Slots,
    failed: &AtomicBool,
    rx: &mpsc::Receiver<Waiter>,
) {
    while let Ok(first) = rx.recv() {
        let mut waiters = vec![first];
        #[cfg(test)]
        if slots.hold_next_group.swap(false, Ordering::AcqRel) {
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        waiters.extend(rx.try_iter());
        // Only the shreds of commits answered now: a commit still to come
        // may yet fail, and then its shreds must not have happened.
        let shreds: Vec<Shred> = slots.pending.lock().map_or_else(
            |_| Vec::new(),
            |mut p| {
                let (now, later) = std::mem::take(&mut *p)
                    .into_iter()
                    .partition(|(id, _, _)| waiters.iter().any(|(_, w)| w == id));
                *p = later;
                now
            },
        );
        let keys_synced = if slots.dirty.swap(false, Ordering::AcqRel) {
            faults::hit("store.sync-keys")
                .and_then(|()| slots.file.sync())
                .map_err(|e| e.to_string())
        } else {
            Ok(())
        };
        let flushed = keys_synced.and_then(|()| {
            #[cfg(test)]
            if slots.fail_next_flush.swap(false, Ordering::AcqRel) {
                return Err("injected flush failure".to_owned());
            }
            faults::hit("store.flush").map_err(|e| e.to_string())?;
            db.flush().map(drop).map_err(|e| e.to_string())?;
            data_file
                .as_ref()
                .map_or(Ok(()), |f| f.sync_data().map_err(|e| e.to_string()))
        });
        let outcome = match flushed {
            Err(e) => Outcome::NotDurable(e),
            Ok(()) => shred_all(meta, slots, &shreds, failed),
        };
        for (w, id) in waiters {
            // A failed shred fails only the commits that asked for one: the
            // others are durable and done.
            let mine = match &outcome {
                Outcome::ShredFailed if !shreds.iter().any(|(s, _, _)| *s == id) => {
                    Outcome::Durable
                }
                o => o.clone(),
            };
            let _ = w.send(mine);
        }
    }
}

/// Carries out `shreds` once their commits are durable.
fn shred_all(meta: &sled::Tree, slots: &Slots, shreds: &[Shred], failed: &AtomicBool) -> Outcome {
    if shreds.is_empty() {
        return Outcome::Durable;
    }
    #[cfg(test)]
    if slots.fail_next_shred.swap(false, Ordering::AcqRel) {
        failed.store(true, Ordering::Release);
        return Outcome::ShredFailed;
    }
    let shredded = faults::hit("store.shred")
        .and_then(|()| {
            shreds
                .iter()
                .try_for_each(|(_, slot, version)| slots.file.shred(*slot, *version))
        })
        .and_then(|()| slots.file.sync());
    match shredded {
        Ok(()) => {
            // The intents are done; their removal reaches the disk with a
            // later flush (a shred done twice is harmless: a slot with a
            // durable pointer is not handed out again, and one version is
            // shredded only where it still is).
            for (_, slot, version) in shreds {
                let _ = meta.remove(shred_intent(*slot, *version));
            }
            Outcome::Durable
        }
        Err(e) => {
            failed.store(true, Ordering::Release);
            tracing::error!(error = %e, "a key could not be shredded: the store takes no more writes until restarted, which finishes the shred");
            Outcome::ShredFailed
        }
    }
}

impl SledStore {
    /// Applies `batch` like [`Store::apply`], staging its shreds as commit
    /// `id`, and returns what undoes it; on an error, undoes what it
    /// applied before returning it.
    ///
    /// A shred's intent is written where the batch has it: before the
    /// record that stops using the key (the engine's order). sled's log is
    /// ordered, so a record that reaches the disk has its intents there too;
    /// an intent may reach it without its record (a flush of another
    /// group), which is why the next open leaves intents to shred one
    /// version to the engine, which checks the record
    /// ([`Store::pending_key_shreds`]).
    fn apply_undoable(&self, batch: Batch, id: u64) -> Result<Vec<Undo>, StoreError> {
        self.writable()?;
        faults::hit("store.apply").map_err(backend)?;
        let mut undo = Vec::with_capacity(batch.ops.len());
        let mut shreds = Vec::new();
        for op in batch.ops {
            let step = match op {
                Op::ShredKey { slot, version } => {
                    let intent = shred_intent(slot, version);
                    shreds.push((id, slot, version));
                    self.trees[0]
                        .insert(intent.as_slice(), Vec::new())
                        .map(|old| Undo::Sled(intent, old))
                        .map_err(backend)
                }
                other => self.apply_now(other),
            };
            match step {
                Ok(u) => undo.push(u),
                Err(e) => {
                    self.undo_in_memory(undo);
                    return Err(e);
                }
            }
        }
        if !shreds.is_empty()
            && let Ok(mut p) = self.slots.pending.lock()
        {
            p.extend(shreds);
        }
        Ok(undo)
    }

    /// Applies `op` at once and returns what undoes it (a shred: the slot
    /// overwritten now, nothing to undo).
    fn apply_now(&self, op: Op) -> Result<Undo, StoreError> {
        match op {
            Op::Put(k, v) => self
                .tree_for(&k)
                .insert(k.as_slice(), v)
                .map(|old| Undo::Sled(k, old))
                .map_err(backend),
            Op::Delete(k) => self
                .tree_for(&k)
                .remove(k.as_slice())
                .map(|old| Undo::Sled(k, old))
                .map_err(backend),
            Op::Insert(k, v) => match self
                .tree_for(&k)
                .compare_and_swap(k.as_slice(), None::<&[u8]>, Some(v))
                .map_err(backend)?
            {
                Ok(()) => Ok(Undo::Sled(k, None)),
                Err(_) => Err(StoreError::Conflict),
            },
            Op::Expect(k, v) => match self.tree_for(&k).get(k.as_slice()).map_err(backend)? {
                Some(now) if now.as_ref() == v.as_slice() => Ok(Undo::Nothing),
                _ => Err(StoreError::Conflict),
            },
            Op::PutKey {
                slot,
                version,
                wrapped,
            } => {
                let put = self.slots.file.put(slot, version, &wrapped);
                // Marked after the write: a flush that saw the mark syncs
                // what was written before it.
                self.slots.dirty.store(true, Ordering::Release);
                put.map(|old| Undo::Key(slot, version, old))
                    .map_err(backend)
            }
            Op::ShredKey { slot, version } => {
                let shred = self.slots.file.shred(slot, version);
                self.slots.dirty.store(true, Ordering::Release);
                shred.map(|()| Undo::Nothing).map_err(backend)
            }
        }
    }

    /// Puts back what `undo` records, last change first. Returns whether
    /// every step succeeded.
    fn undo_in_memory(&self, undo: Vec<Undo>) -> bool {
        let mut ok = true;
        for u in undo.into_iter().rev() {
            let r = match u {
                Undo::Nothing => Ok(()),
                Undo::Key(slot, version, old) => {
                    let r = self.slots.file.restore(slot, version, &old);
                    self.slots.dirty.store(true, Ordering::Release);
                    r.map_err(|e| e.to_string())
                }
                Undo::Sled(k, old) => {
                    let tree = self.tree_for(&k);
                    match old {
                        Some(v) => tree.insert(k, v).map(drop),
                        None => tree.remove(k).map(drop),
                    }
                    .map_err(|e| e.to_string())
                }
            };
            if let Err(e) = r {
                tracing::error!(error = %e, "could not undo a failed write");
                ok = false;
            }
        }
        ok
    }

    /// Drops the staged shreds of commit `id` (it failed).
    fn drop_shreds(&self, id: u64) {
        if let Ok(mut p) = self.slots.pending.lock() {
            p.retain(|(i, _, _)| *i != id);
        }
    }

    /// Fails once a failed write could not be undone.
    fn writable(&self) -> Result<(), StoreError> {
        if self.failed.load(Ordering::Acquire) {
            return Err(StoreError::Failed);
        }
        Ok(())
    }

    /// Waits for the flusher to make durable everything applied so far, as
    /// commit `id`.
    async fn wait_durable(&self, id: u64) -> Result<(), StoreError> {
        match self.wait_outcome(id).await? {
            Outcome::Durable => Ok(()),
            Outcome::NotDurable(e) => Err(StoreError::Backend(e)),
            Outcome::ShredFailed => Err(StoreError::Failed),
        }
    }

    /// What the flusher did for commit `id`.
    async fn wait_outcome(&self, id: u64) -> Result<Outcome, StoreError> {
        let tx = self
            .flush_tx
            .lock()
            .ok()
            .and_then(|t| t.clone())
            .ok_or(StoreError::Closed)?;
        let (done, wait) = oneshot::channel();
        tx.send((done, id)).map_err(|_| StoreError::Closed)?;
        wait.await.map_err(|_| StoreError::Closed)
    }

    fn closed(&self) -> bool {
        self.flush_tx.lock().ok().is_none_or(|t| t.is_none())
    }
}

impl Store for SledStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .tree_for(key)
            .get(key)
            .map_err(backend)?
            .map(|v| v.to_vec()))
    }

    fn scan_prefix(&self, prefix: &[u8], limit: usize) -> Result<super::Entries, StoreError> {
        self.tree_for(prefix)
            .scan_prefix(prefix)
            .take(limit)
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(backend))
            .collect()
    }

    fn keys(&self, slot: u64) -> Result<SlotKeys, StoreError> {
        self.slots.file.read(slot).map_err(backend)
    }

    fn pending_key_shreds(&self) -> Result<Vec<(u64, u32)>, StoreError> {
        let mut out = Vec::new();
        for key in self.trees[0].scan_prefix(keys::SHRED_PREFIX).keys() {
            if let Some((slot, Some(version))) = parse_intent(&key.map_err(backend)?) {
                out.push((slot, version));
            }
        }
        Ok(out)
    }

    fn forget_key_shred(&self, slot: u64, version: u32) -> Result<(), StoreError> {
        self.trees[0]
            .remove(shred_intent(slot, Some(version)))
            .map(drop)
            .map_err(backend)
    }

    fn commit(&self, batch: Batch) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            if self.closed() {
                return Err(StoreError::Closed);
            }
            let id = self.next_commit.fetch_add(1, Ordering::Relaxed);
            let undo = self.apply_undoable(batch, id)?;
            let e = match self.wait_outcome(id).await {
                Ok(Outcome::Durable) => return Ok(()),
                // Durable, a shred failed: nothing is undone, the intents
                // stay, and the next open finishes them.
                Ok(Outcome::ShredFailed) => return Err(StoreError::Failed),
                Ok(Outcome::NotDurable(e)) => StoreError::Backend(e),
                Err(e) => e,
            };
            // Put back what the batch changed, and make that durable before
            // the caller hears of the failure.
            self.drop_shreds(id);
            let undone = self.undo_in_memory(undo) && self.wait_durable(0).await.is_ok();
            if !undone {
                self.failed.store(true, Ordering::Release);
                tracing::error!(error = %e, "a failed write could not be undone durably: the store takes no more writes until restarted");
            }
            Err(e)
        })
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        if self.closed() {
            return Err(StoreError::Closed);
        }
        self.writable()?;
        for op in batch.ops {
            self.apply_now(op)?;
        }
        Ok(())
    }

    fn durable(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.wait_durable(0))
    }

    fn scan_from(
        &self,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> Result<super::Entries, StoreError> {
        self.tree_for(prefix)
            .range(start.to_vec()..)
            .take_while(|r| r.as_ref().map_or(true, |(k, _)| k.starts_with(prefix)))
            .take(limit)
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(backend))
            .collect()
    }

    fn last_with_prefix(&self, prefix: &[u8]) -> Result<Option<super::Entry>, StoreError> {
        self.tree_for(prefix)
            .scan_prefix(prefix)
            .next_back()
            .transpose()
            .map(|o| o.map(|(k, v)| (k.to_vec(), v.to_vec())))
            .map_err(backend)
    }

    fn for_each_subject(&self, f: &mut dyn FnMut(&[u8], &[u8])) -> Result<(), StoreError> {
        for item in self.trees[3].iter() {
            let (k, v) = item.map_err(backend)?;
            f(&k, &v);
        }
        Ok(())
    }

    fn for_each_entry(&self, f: &mut dyn FnMut(&[u8], &[u8])) -> Result<(), StoreError> {
        for tree in &self.trees[..3] {
            for item in tree.iter() {
                let (k, v) = item.map_err(backend)?;
                if !k.starts_with(keys::SHRED_PREFIX) {
                    f(&k, &v);
                }
            }
        }
        Ok(())
    }

    fn for_each_key_slot(&self, f: &mut dyn FnMut(u64, &SlotKeys)) -> Result<(), StoreError> {
        self.slots.file.for_each(f).map_err(backend)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.slots.file.sync().map_err(backend)?;
        self.db.flush().map_err(backend)?;
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk().map_err(backend)? + self.slots.file.len().map_err(backend)?)
    }

    fn backend(&self) -> &'static str {
        "sled"
    }

    fn close(&self) -> Result<(), StoreError> {
        SledStore::close(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commits_are_visible_in_order_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path(), 1 << 20, Durability::Fsync).unwrap();
            let mut b = Batch::new();
            b.put(b"a/1".to_vec(), b"x".to_vec());
            b.put(b"a/2".to_vec(), b"y".to_vec());
            b.delete(b"a/1".to_vec());
            s.commit(b).await.unwrap();
            let mut tasks = Vec::new();
            let s = std::sync::Arc::new(s);
            for i in 0..50u32 {
                let s = s.clone();
                tasks.push(tokio::spawn(async move {
                    let mut b = Batch::new();
                    b.put(format!("c/{i:03}").into_bytes(), vec![1]);
                    s.commit(b).await
                }));
            }
            for t in tasks {
                t.await.unwrap().unwrap();
            }
            s.close().unwrap();
            assert!(matches!(
                s.commit(Batch::new()).await,
                Err(StoreError::Closed)
            ));
        }
        let s = SledStore::open(dir.path(), 1 << 20, Durability::Fsync).unwrap();
        assert_eq!(s.get(b"a/1").unwrap(), None);
        assert_eq!(s.get(b"a/2").unwrap(), Some(b"y".to_vec()));
        assert_eq!(s.scan_prefix(b"c/", 1000).unwrap().len(), 50);
        assert_eq!(s.scan_prefix(b"c/", 10).unwrap().len(), 10);
    }

    /// A shred that fails fails only the commit that asked for it: a commit
    /// flushed in the same group is durable and answered so (its client
    /// must not hear that a stored write failed); the store then takes no
    /// more writes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_shred_fails_only_its_own_commit() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path(), 1 << 20, Durability::Fsync).unwrap();
        let mut b = Batch::new();
        b.put_key(1, 1, b"key-one".to_vec());
        s.commit(b).await.unwrap();

        s.slots.hold_next_group.store(true, Ordering::Release);
        s.slots.fail_next_shred.store(true, Ordering::Release);
        let mut shred = Batch::new();
        shred.shred_key(1, None);
        let mut put = Batch::new();
        put.put(b"sub/s2".to_vec(), b"v2".to_vec());
        // The first commit wakes the flusher, which waits for the second.
        let (shredded, stored) = tokio::join!(s.commit(shred), async {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            s.commit(put).await
        });
        assert!(matches!(shredded, Err(StoreError::Failed)), "{shredded:?}");
        assert!(stored.is_ok(), "{stored:?}");
        assert_eq!(s.get(b"sub/s2").unwrap().as_deref(), Some(&b"v2"[..]));
        assert!(s.writable().is_err(), "no more writes");
    }

    /// A commit that fails leaves nothing behind: not its sled entries, not
    /// the keys it wrote into key slots, not the shreds it asked for; not in
    /// a later commit, and not after a restart. An erasure too. A shred
    /// overwrites the slot once the commit is durable, and one a crash
    /// left undone is finished when the store opens again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_commit_is_undone_whole_and_shreds_happen_after_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path(), 1 << 20, Durability::Fsync).unwrap();
        let mut b = Batch::new();
        b.put_key(1, 1, b"key-one".to_vec());
        b.put(b"tok/a".to_vec(), b"s1".to_vec());
        b.put(b"sub/s1".to_vec(), b"v1".to_vec());
        s.commit(b).await.unwrap();

        s.slots.fail_next_flush.store(true, Ordering::Release);
        let mut b = Batch::new();
        b.put_key(1, 2, b"key-two".to_vec());
        b.put_key(2, 1, b"key-other".to_vec());
        b.shred_key(1, Some(1));
        b.put(b"tok/a".to_vec(), b"changed".to_vec());
        b.put(b"tok/b".to_vec(), b"s2".to_vec());
        b.put(b"sub/s1".to_vec(), b"v2".to_vec());
        b.put(b"sub/s2".to_vec(), b"new".to_vec());
        assert!(s.commit(b).await.is_err());
        let unchanged = |s: &SledStore| {
            assert_eq!(s.get(b"tok/a").unwrap(), Some(b"s1".to_vec()));
            assert_eq!(s.get(b"tok/b").unwrap(), None);
            assert_eq!(s.get(b"sub/s1").unwrap(), Some(b"v1".to_vec()));
            assert_eq!(s.get(b"sub/s2").unwrap(), None);
            assert_eq!(s.get(b"erased/s1").unwrap(), None);
            assert_eq!(s.keys(1).unwrap(), vec![(1, b"key-one".to_vec())]);
            assert!(s.keys(2).unwrap().is_empty());
            assert!(s.scan_prefix(keys::SHRED_PREFIX, 10).unwrap().is_empty());
        };
        unchanged(&s);
        // A later commit does not pick it up.
        let mut b = Batch::new();
        b.put(b"c/1".to_vec(), vec![1]);
        s.commit(b).await.unwrap();
        unchanged(&s);

        // An erasure that fails did not happen either: the key is intact.
        s.slots.fail_next_flush.store(true, Ordering::Release);
        let erase = || {
            let mut b = Batch::new();
            b.put(b"erased/s1".to_vec(), b"journal".to_vec());
            b.put(b"tok/a".to_vec(), b"\0tombstone".to_vec());
            b.delete(b"sub/s1".to_vec());
            b.shred_key(1, None);
            b
        };
        assert!(s.commit(erase()).await.is_err());
        unchanged(&s);
        s.close().unwrap();
        drop(s);
        let s = SledStore::open(dir.path(), 1 << 20, Durability::Fsync).unwrap();
        unchanged(&s);
        assert_eq!(s.get(b"c/1").unwrap(), Some(vec![1]));

        // One that succeeds has overwritten the slot before it returns.
        s.commit(erase()).await.unwrap();
        assert!(s.keys(1).unwrap().is_empty());
        assert_eq!(s.get(b"sub/s1").unwrap(), None);
        let on_disk = std::fs::read(dir.path().join(SLOT_FILE)).unwrap();
        assert!(!on_disk.windows(7).any(|w| w == b"key-one"));

        // A shred whose intent a crash left behind is done at the next open.
        let mut b = Batch::new();
        b.put_key(3, 1, b"key-three".to_vec());
        s.commit(b).await.unwrap();
        s.apply({
            let mut b = Batch::new();
            b.put(shred_intent(3, None), Vec::new());
            b
        })
        .unwrap();
        s.close().unwrap();
        drop(s);
        let s = SledStore::open(dir.path(), 1 << 20, Durability::Fsync).unwrap();
        assert!(s.keys(3).unwrap().is_empty());
        assert!(s.scan_prefix(keys::SHRED_PREFIX, 10).unwrap().is_empty());
    }

    /// The data directory and the key-slot file are their owner's only,
    /// even when someone else made the directory readable; a data
    /// directory of the layout before key slots is refused, saying how to
    /// move it.
    #[cfg(unix)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_data_directory_is_owner_only_and_an_old_layout_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        let s = SledStore::open(&data, 1 << 20, Durability::Flush).unwrap();
        let mut b = Batch::new();
        b.put_key(1, 1, b"k".to_vec());
        s.commit(b).await.unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join(SLOT_FILE)), 0o600);
        s.close().unwrap();
        drop(s);

        let old = dir.path().join("old");
        std::fs::create_dir_all(old.join("subjects/ab/cd")).unwrap();
        std::fs::write(old.join("subjects/ab/cd/x.rec"), b"record").unwrap();
        let err = SledStore::open(&old, 1 << 20, Durability::Flush).unwrap_err();
        let shown = err.to_string();
        assert!(shown.contains("layout before key slots"), "{shown}");
        assert!(shown.contains("Upgrading the storage layout"), "{shown}");
    }

    /// A key-slot file missing or shorter than the slots handed out is
    /// refused at open, saying so, rather than every subject failing later.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_missing_key_slot_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path(), 1 << 20, Durability::Flush).unwrap();
        let mut b = Batch::new();
        b.put_key(3, 1, b"k".to_vec());
        b.put(keys::slot(3), b"s3".to_vec());
        s.commit(b).await.unwrap();
        s.close().unwrap();
        drop(s);
        std::fs::remove_file(dir.path().join(SLOT_FILE)).unwrap();
        let err = SledStore::open(dir.path(), 1 << 20, Durability::Flush)
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing or truncated"), "{err}");
    }
}
