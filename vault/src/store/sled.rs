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
//! ([`super::records`]), written by the same flusher after sled's flush, so
//! that an erased subject leaves no old version behind in sled's log.

use super::records::RecordFiles;
use super::{Batch, BoxFuture, Op, Store, StoreError, keys};
use std::fs::File;
use std::path::{Path, PathBuf};
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

type Waiter = oneshot::Sender<Result<(), String>>;

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
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(backend)?;
            // The data is encrypted, but its shape (how many subjects, when)
            // is nobody else's business either.
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(backend)?;
            }
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
        let flusher = std::thread::Builder::new()
            .name("vault-group-commit".into())
            .spawn(move || group_commit(flush_db, data_file, &flush_records, sync, rx))
            .map_err(backend)?;
        Ok(Self {
            db,
            trees,
            records,
            sync,
            dir: dir.to_owned(),
            flush_tx: Mutex::new(Some(tx)),
            flusher: Mutex::new(Some(flusher)),
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
        if let Ok(mut tx) = self.flush_tx.lock() {
            tx.take();
        }
        if let Some(handle) = self.flusher.lock().ok().and_then(|mut h| h.take()) {
            let _ = handle.join();
        }
        self.flush()
    }
}

/// The flusher: waits for a commit, takes every commit waiting, flushes once
/// (sled, then the subject records), answers them all. Ends when the store
/// is closed.
fn group_commit(
    db: sled::Db,
    data_file: Option<File>,
    records: &RecordFiles,
    sync: bool,
    rx: mpsc::Receiver<Waiter>,
) {
    while let Ok(first) = rx.recv() {
        let mut waiters = vec![first];
        waiters.extend(rx.try_iter());
        // Every waiter staged its record before it asked: the snapshot holds
        // them all, and their pointers are in sled before the flush below.
        let staged = records.snapshot();
        let result = db
            .flush()
            .map_err(|e| e.to_string())
            .and_then(|_| {
                data_file
                    .as_ref()
                    .map_or(Ok(()), |f| f.sync_data().map_err(|e| e.to_string()))
            })
            .and_then(|()| records.write(staged, sync).map_err(|e| e.to_string()));
        for w in waiters {
            let _ = w.send(result.clone());
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

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        if self.flush_tx.lock().ok().is_none_or(|t| t.is_none()) {
            return Err(StoreError::Closed);
        }
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
        Box::pin(async move {
            let tx = self
                .flush_tx
                .lock()
                .ok()
                .and_then(|t| t.clone())
                .ok_or(StoreError::Closed)?;
            let (done, wait) = oneshot::channel();
            tx.send(done).map_err(|_| StoreError::Closed)?;
            match wait.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(StoreError::Backend(e)),
                Err(_) => Err(StoreError::Closed),
            }
        })
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
        self.db.flush().map_err(backend)?;
        self.records.write(staged, self.sync).map_err(backend)?;
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.db.size_on_disk().map_err(backend)
    }

    fn backend(&self) -> &'static str {
        "sled"
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
}
