//! The embedded store on sled, with group commit.
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
//! Subject records (`sub/` keys) are not in sled but in files of their own
//! ([`super::record_files`]), written by the same flusher after sled's flush, so
//! that an erased subject leaves no old version behind in sled's log.
//!
//! A commit that fails leaves nothing behind ([`Store::commit`]): it keeps
//! the old value of every key it changes in sled (sled's `insert` and
//! `remove` hand it back), and on failure puts them back, drops its staged
//! records (the record files are already rolled back by the failed write)
//! and makes the undo durable with one more flush, so that neither a later
//! commit nor sled's own periodic flush can carry the failed change to disk.
//! If even that fails the store stops taking writes ([`StoreError::Failed`])
//! until it is restarted: which version of the failed request's keys the
//! disk then holds is not known, and nothing more is built on top of it.

use super::record_files::{RecordFiles, create_private_dir, make_private};
use super::{Batch, BoxFuture, Op, Store, StoreError, keys};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
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

/// A commit waiting for the flusher, with the generations of the subject
/// records it staged.
type Waiter = (oneshot::Sender<Result<(), String>>, Vec<u64>);

/// What puts back one key a commit changed.
enum Undo {
    /// Restore `key` in sled to its old value (`None`: absent).
    Sled(Vec<u8>, Option<sled::IVec>),
    /// Drop the staged record of `key` of this generation.
    Record(Vec<u8>, u64),
}

/// sled-backed [`Store`].
pub struct SledStore {
    db: sled::Db,
    /// One sled tree per key family (see [`SledStore::tree_for`]).
    trees: [sled::Tree; 3],
    /// Subject records, one file each.
    records: Arc<RecordFiles>,
    sync: bool,
    dir: PathBuf,
    flush_tx: Mutex<Option<mpsc::Sender<Waiter>>>,
    flusher: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Set once a failed write could not be undone: no more writes.
    failed: Arc<AtomicBool>,
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

impl SledStore {
    /// Opens (creating if needed) the store in `dir`, with a page cache of
    /// `cache_bytes`.
    pub fn open(dir: &Path, cache_bytes: u64, durability: Durability) -> Result<Self, StoreError> {
        // The data is encrypted, but its shape (how many subjects, when) is
        // nobody else's business either: owner-only, whoever made it.
        create_private_dir(dir).map_err(backend)?;
        if make_private(dir).map_err(backend)? {
            tracing::warn!(dir = %dir.display(), "the data directory let others in: made it owner-only (0700)");
        }
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .mode(sled::Mode::HighThroughput)
            // Our own flusher makes commits durable; sled's timer is a backstop.
            .flush_every_ms(Some(1000))
            .open()
            .map_err(backend)?;
        // Separate trees keep small pointer entries out of the leaves that hold
        // kilobyte subject records: sled copies a leaf on every write.
        let trees = [
            db.open_tree("meta").map_err(backend)?,
            db.open_tree("tokens").map_err(backend)?,
            db.open_tree("index").map_err(backend)?,
        ];
        let records = Arc::new(RecordFiles::open(&dir.join("subjects")).map_err(backend)?);
        let sync = durability == Durability::Fsync;
        let data_file = match durability {
            Durability::Fsync => Some(File::open(dir.join("db")).map_err(backend)?),
            Durability::Flush => None,
        };
        let (tx, rx) = mpsc::channel::<Waiter>();
        let flush_db = db.clone();
        let flush_records = records.clone();
        let failed = Arc::new(AtomicBool::new(false));
        let flush_failed = failed.clone();
        let flusher = std::thread::Builder::new()
            .name("vault-group-commit".into())
            .spawn(move || {
                group_commit(flush_db, data_file, &flush_records, sync, &flush_failed, rx);
            })
            .map_err(backend)?;
        Ok(Self {
            db,
            trees,
            records,
            sync,
            dir: dir.to_owned(),
            flush_tx: Mutex::new(Some(tx)),
            flusher: Mutex::new(Some(flusher)),
            failed,
        })
    }

    /// The tree that holds keys starting like `key`.
    fn tree_for(&self, key: &[u8]) -> &sled::Tree {
        let i = if key.starts_with(keys::TOKEN_PREFIX) {
            1
        } else if key.starts_with(keys::INDEX_PREFIX) {
            2
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

impl Drop for SledStore {
    /// The flusher ends with the store, not some time after: a store opened
    /// again on the same directory (the next run of an embedded vault)
    /// finds it free.
    fn drop(&mut self) {
        self.stop_flusher();
    }
}

/// The flusher: waits for a commit, takes every commit waiting, flushes once
/// (sled, then the subject records), answers them all. A commit whose
/// record was in an earlier snapshot that failed to write is told so too.
/// Ends when the store is closed.
fn group_commit(
    db: sled::Db,
    data_file: Option<File>,
    records: &RecordFiles,
    sync: bool,
    failed: &AtomicBool,
    rx: mpsc::Receiver<Waiter>,
) {
    while let Ok(first) = rx.recv() {
        let mut waiters = vec![first];
        waiters.extend(rx.try_iter());
        // Every waiter staged its record before it asked: the snapshot holds
        // them all, and their pointers are in sled before the flush below.
        let staged = records.snapshot();
        let flushed = db
            .flush()
            .map(drop)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                data_file
                    .as_ref()
                    .map_or(Ok(()), |f| f.sync_data().map_err(|e| e.to_string()))
            });
        let result = match flushed {
            // The records are not written: they fail like a failed write.
            Err(e) => {
                records.discard(staged);
                Err(e)
            }
            Ok(()) => records.write(staged, sync).map_err(|e| {
                if !e.undone {
                    failed.store(true, Ordering::Release);
                    tracing::error!(error = %e, "the store takes no more writes until restarted");
                }
                e.to_string()
            }),
        };
        for (w, generations) in waiters {
            let earlier = records.take_failed(&generations);
            let answer = match &result {
                Err(e) => Err(e.clone()),
                Ok(()) if earlier => {
                    Err("a subject record of this commit was in a write that failed".to_owned())
                }
                Ok(()) => Ok(()),
            };
            let _ = w.send(answer);
        }
    }
}

impl SledStore {
    /// Applies `batch` like [`Store::apply`] and returns what undoes it;
    /// on an error, undoes what it applied before returning it.
    fn apply_undoable(&self, batch: Batch) -> Result<(Vec<Undo>, Vec<u64>), StoreError> {
        self.writable()?;
        let mut undo = Vec::with_capacity(batch.ops.len());
        let mut generations = Vec::new();
        for op in batch.ops {
            let step = match op {
                Op::Put(k, v) if k.starts_with(keys::SUBJECT_PREFIX) => {
                    let g = self.records.stage(k.clone(), Some(v));
                    generations.push(g);
                    Ok(Undo::Record(k, g))
                }
                Op::Delete(k) if k.starts_with(keys::SUBJECT_PREFIX) => {
                    let g = self.records.stage(k.clone(), None);
                    generations.push(g);
                    Ok(Undo::Record(k, g))
                }
                Op::Put(k, v) => self
                    .tree_for(&k)
                    .insert(k.as_slice(), v)
                    .map(|old| Undo::Sled(k, old)),
                Op::Delete(k) => self
                    .tree_for(&k)
                    .remove(k.as_slice())
                    .map(|old| Undo::Sled(k, old)),
            };
            match step {
                Ok(u) => undo.push(u),
                Err(e) => {
                    self.undo_in_memory(undo);
                    return Err(backend(e));
                }
            }
        }
        Ok((undo, generations))
    }

    /// Puts back what `undo` records, last change first. Returns whether
    /// every step succeeded.
    fn undo_in_memory(&self, undo: Vec<Undo>) -> bool {
        let mut ok = true;
        for u in undo.into_iter().rev() {
            match u {
                Undo::Record(k, g) => self.records.unstage(&k, g),
                Undo::Sled(k, old) => {
                    let tree = self.tree_for(&k);
                    let r = match old {
                        Some(v) => tree.insert(k, v).map(drop),
                        None => tree.remove(k).map(drop),
                    };
                    if let Err(e) = r {
                        tracing::error!(error = %e, "could not undo a failed write in sled");
                        ok = false;
                    }
                }
            }
        }
        ok
    }

    /// Fails once a failed write could not be undone.
    fn writable(&self) -> Result<(), StoreError> {
        if self.failed.load(Ordering::Acquire) {
            return Err(StoreError::Failed);
        }
        Ok(())
    }

    /// Waits for the flusher to make durable everything applied so far, as
    /// a commit that staged the records of `generations`.
    async fn wait_durable(&self, generations: Vec<u64>) -> Result<(), StoreError> {
        let tx = self
            .flush_tx
            .lock()
            .ok()
            .and_then(|t| t.clone())
            .ok_or(StoreError::Closed)?;
        let (done, wait) = oneshot::channel();
        tx.send((done, generations))
            .map_err(|_| StoreError::Closed)?;
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Backend(e)),
            Err(_) => Err(StoreError::Closed),
        }
    }
}

impl Store for SledStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if key.starts_with(keys::SUBJECT_PREFIX) {
            return self.records.get(key).map_err(backend);
        }
        Ok(self
            .tree_for(key)
            .get(key)
            .map_err(backend)?
            .map(|v| v.to_vec()))
    }

    fn scan_prefix(&self, prefix: &[u8], limit: usize) -> Result<super::Entries, StoreError> {
        if prefix.starts_with(keys::SUBJECT_PREFIX) {
            // Reads every record file: for sweeps and tools, not requests.
            let mut out = Vec::new();
            self.records
                .for_each(|k, v| {
                    if k.starts_with(prefix) {
                        out.push((k.to_vec(), v.to_vec()));
                    }
                })
                .map_err(backend)?;
            out.sort();
            out.truncate(limit);
            return Ok(out);
        }
        self.tree_for(prefix)
            .scan_prefix(prefix)
            .take(limit)
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(backend))
            .collect()
    }

    fn commit(&self, batch: Batch) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            if self.flush_tx.lock().ok().is_none_or(|t| t.is_none()) {
                return Err(StoreError::Closed);
            }
            let (undo, generations) = self.apply_undoable(batch)?;
            let Err(e) = self.wait_durable(generations).await else {
                return Ok(());
            };
            // Put back what the batch changed, and make that durable before
            // the caller hears of the failure.
            let undone = self.undo_in_memory(undo) && self.wait_durable(Vec::new()).await.is_ok();
            if !undone {
                self.failed.store(true, Ordering::Release);
                tracing::error!(error = %e, "a failed write could not be undone durably: the store takes no more writes until restarted");
            }
            Err(e)
        })
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        if self.flush_tx.lock().ok().is_none_or(|t| t.is_none()) {
            return Err(StoreError::Closed);
        }
        self.writable()?;
        for op in batch.ops {
            match op {
                Op::Put(k, v) if k.starts_with(keys::SUBJECT_PREFIX) => {
                    self.records.stage(k, Some(v));
                    Ok(())
                }
                Op::Delete(k) if k.starts_with(keys::SUBJECT_PREFIX) => {
                    self.records.stage(k, None);
                    Ok(())
                }
                Op::Put(k, v) => self.tree_for(&k).insert(k, v).map(drop),
                Op::Delete(k) => self.tree_for(&k).remove(k).map(drop),
            }
            .map_err(backend)?;
        }
        Ok(())
    }

    fn durable(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.wait_durable(Vec::new()))
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
        self.records.for_each(f).map_err(backend)
    }

    fn for_each_entry(&self, f: &mut dyn FnMut(&[u8], &[u8])) -> Result<(), StoreError> {
        for tree in &self.trees {
            for item in tree.iter() {
                let (k, v) = item.map_err(backend)?;
                f(&k, &v);
            }
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        let staged = self.records.snapshot();
        if let Err(e) = self.db.flush() {
            self.records.discard(staged);
            return Err(backend(e));
        }
        self.records.write(staged, self.sync).map_err(backend)?;
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.db.size_on_disk().map_err(backend)
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

    /// A commit that fails leaves nothing behind: not its sled entries, not
    /// its records (a record it had already put in place is put back), not
    /// in a later commit, and not after a restart. An erasure too.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_commit_is_undone_whole() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path(), 1 << 20, Durability::Fsync).unwrap();
        let mut b = Batch::new();
        b.put(b"tok/a".to_vec(), b"s1".to_vec());
        b.put(b"sub/s1".to_vec(), b"v1".to_vec());
        s.commit(b).await.unwrap();

        // The new record of s2 cannot be renamed into place (a directory
        // is in the way); s1's new version, renamed first, is put back.
        let (blocked, _) = s.records.path_and_next_generation(b"sub/s2");
        std::fs::create_dir_all(blocked.join("in-the-way")).unwrap();
        let mut b = Batch::new();
        b.put(b"tok/a".to_vec(), b"changed".to_vec());
        b.put(b"tok/b".to_vec(), b"s2".to_vec());
        b.put(b"sub/s1".to_vec(), b"v2".to_vec());
        b.put(b"sub/s2".to_vec(), b"new".to_vec());
        assert!(s.commit(b).await.is_err());
        let unchanged = |s: &SledStore| {
            assert_eq!(s.get(b"tok/a").unwrap(), Some(b"s1".to_vec()));
            assert_eq!(s.get(b"tok/b").unwrap(), None);
            assert_eq!(s.get(b"sub/s1").unwrap(), Some(b"v1".to_vec()));
            assert_eq!(s.get(b"erased/s1").unwrap(), None);
            if !blocked.exists() {
                assert_eq!(s.get(b"sub/s2").unwrap(), None);
            }
        };
        unchanged(&s);
        // A later commit does not pick it up.
        std::fs::remove_dir_all(&blocked).unwrap();
        let mut b = Batch::new();
        b.put(b"c/1".to_vec(), vec![1]);
        s.commit(b).await.unwrap();
        unchanged(&s);

        // An erasure whose record cannot be removed did not happen either.
        let (_, g) = s.records.path_and_next_generation(b"sub/s1");
        let way = dir
            .path()
            .join("subjects/tmp")
            .join(format!("{}.del", g + 1));
        std::fs::create_dir_all(way.join("in-the-way")).unwrap();
        let mut b = Batch::new();
        b.put(b"erased/s1".to_vec(), b"journal".to_vec());
        b.put(b"tok/a".to_vec(), b"\0tombstone".to_vec());
        b.put(b"sub/s0".to_vec(), b"staged before".to_vec());
        b.delete(b"sub/s1".to_vec());
        assert!(s.commit(b).await.is_err());
        assert_eq!(s.get(b"sub/s0").unwrap(), None);
        unchanged(&s);
        std::fs::remove_dir_all(&way).unwrap();
        let mut b = Batch::new();
        b.put(b"c/2".to_vec(), vec![2]);
        s.commit(b).await.unwrap();
        unchanged(&s);
        s.close().unwrap();
        drop(s);

        let s = SledStore::open(dir.path(), 1 << 20, Durability::Fsync).unwrap();
        unchanged(&s);
        assert_eq!(s.get(b"sub/s0").unwrap(), None);
        assert_eq!(s.get(b"c/2").unwrap(), Some(vec![2]));
        // Nothing is left in tmp/.
        assert_eq!(
            std::fs::read_dir(dir.path().join("subjects/tmp"))
                .unwrap()
                .count(),
            0
        );
    }

    /// Record files and their directories are their owner's only, and so
    /// is a data directory someone else made readable.
    #[cfg(unix)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn record_files_and_directories_are_owner_only_whoever_made_the_directory() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir_all(data.join("subjects/tmp")).unwrap();
        std::fs::set_permissions(
            data.join("subjects"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let s = SledStore::open(&data, 1 << 20, Durability::Flush).unwrap();
        let mut b = Batch::new();
        b.put(b"sub/p1".to_vec(), b"v".to_vec());
        s.commit(b).await.unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700);
        let (file, _) = s.records.path_and_next_generation(b"sub/p1");
        assert_eq!(mode(&file), 0o600);
        let mut p = file.parent().unwrap();
        while p != data {
            assert_eq!(mode(p), 0o700, "{}", p.display());
            p = p.parent().unwrap();
        }
        assert_eq!(mode(&data.join("subjects/tmp")), 0o700);
    }
}
