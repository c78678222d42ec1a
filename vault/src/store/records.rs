//! Subject records in files of their own, one per subject.
//!
//! A subject record holds the subject's wrapped DEKs and every ciphertext of
//! its values. sled, like most log-structured stores, keeps old versions of
//! a value in its log until the segment is reused, so a record deleted from
//! sled would stay readable in the data directory for a while: an erased
//! subject's wrapped DEK and ciphertexts must not (GDPR 17). Here each record
//! is its own file, replaced whole on every change (written to a new file,
//! made durable, renamed over the old one) and unlinked on erasure, so that
//! the data directory never holds a version but the current one.
//!
//! Layout: `DATA_DIR/subjects/ab/cd/<SHA-256 of the key, hex>.rec`, each file
//! `u16 BE key length ‖ key ‖ record`; new versions are written in
//! `DATA_DIR/subjects/tmp/` first (same file system, so the rename is atomic)
//! and leftovers there are removed at start.
//!
//! Writes are staged by [`RecordFiles::stage`] (visible to readers at once)
//! and carried out by [`RecordFiles::write`]. The store's group-commit thread
//! takes a [`RecordFiles::snapshot`] of the staged records *before* it
//! flushes sled, and writes it after: every record in the snapshot was staged
//! after its request's pointers were applied to sled, so those are durable
//! before the record is (pointers first, record last, as the engine's layout
//! needs). With `sync`, one `syncfs` makes the
//! new files durable before the renames and one more makes the renames
//! durable: two syncs per group of commits, whatever its size.

use crate::crypto::hex;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// A staged change: the new record, or `None` to delete it.
#[derive(Clone)]
struct Staged {
    value: Option<Arc<Vec<u8>>>,
    generation: u64,
}

/// Staged changes taken for one [`RecordFiles::write`].
pub struct Snapshot(Vec<(Vec<u8>, Staged)>);

// Records are ciphertexts and wrapped keys: say how many, not what.
impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Snapshot({} records)", self.0.len())
    }
}

/// Subject records as files.
pub struct RecordFiles {
    dir: PathBuf,
    staged: Mutex<HashMap<Vec<u8>, Staged>>,
    generation: AtomicU64,
}

impl std::fmt::Debug for RecordFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordFiles")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl RecordFiles {
    /// Opens (creating if needed) the records below `dir`, removing new
    /// versions a crash left unrenamed.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&tmp)?;
        for entry in std::fs::read_dir(&tmp)? {
            std::fs::remove_file(entry?.path())?;
        }
        Ok(Self {
            dir: dir.to_owned(),
            staged: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Vec<u8>, Staged>> {
        // Every change under the lock is one insert or remove.
        self.staged.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The file of `key`.
    fn path(&self, key: &[u8]) -> PathBuf {
        let name = hex(ring::digest::digest(&ring::digest::SHA256, key).as_ref());
        self.dir
            .join(&name[0..2])
            .join(&name[2..4])
            .join(name + ".rec")
    }

    /// The record at `key`: a staged change first, else the file.
    pub fn get(&self, key: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
        if let Some(s) = self.lock().get(key) {
            return Ok(s.value.as_ref().map(|v| v.to_vec()));
        }
        let bytes = match std::fs::read(self.path(key)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed record file");
        let n = usize::from(u16::from_be_bytes(
            bytes
                .get(0..2)
                .ok_or_else(bad)?
                .try_into()
                .map_err(|_| bad())?,
        ));
        // The key is in the file (so records can be listed); it must be this one.
        if bytes.get(2..2 + n) != Some(key) {
            return Err(bad());
        }
        Ok(Some(bytes[2 + n..].to_vec()))
    }

    /// Stages `value` (or a deletion) for `key`, visible to [`RecordFiles::get`]
    /// at once, written by the next [`RecordFiles::write_staged`].
    pub fn stage(&self, key: Vec<u8>, value: Option<Vec<u8>>) {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(
            key,
            Staged {
                value: value.map(Arc::new),
                generation,
            },
        );
    }

    /// The changes staged so far, to [`RecordFiles::write`].
    pub fn snapshot(&self) -> Snapshot {
        Snapshot(
            self.lock()
                .iter()
                .map(|(k, s)| (k.clone(), s.clone()))
                .collect(),
        )
    }

    /// Writes `snapshot`: new files in `tmp/`, then (with `sync`) one
    /// `syncfs`, the renames and deletions, and one more `syncfs`. A change
    /// staged again since the snapshot stays staged for the next one.
    pub fn write(&self, snapshot: Snapshot, sync: bool) -> std::io::Result<()> {
        let work = snapshot.0;
        if work.is_empty() {
            return Ok(());
        }
        let mut renames = Vec::new();
        let mut deletions = Vec::new();
        for (key, staged) in &work {
            let path = self.path(key);
            match &staged.value {
                Some(value) => {
                    let tmp = self
                        .dir
                        .join("tmp")
                        .join(format!("{}.tmp", staged.generation));
                    let mut f = std::fs::File::create(&tmp)?;
                    let n = u16::try_from(key.len()).map_err(|_| {
                        std::io::Error::new(std::io::ErrorKind::InvalidInput, "key too long")
                    })?;
                    f.write_all(&n.to_be_bytes())?;
                    f.write_all(key)?;
                    f.write_all(value)?;
                    renames.push((tmp, path));
                }
                None => deletions.push(path),
            }
        }
        let root = std::fs::File::open(&self.dir)?;
        if sync {
            rustix::fs::syncfs(&root)?;
        }
        for (tmp, path) in &renames {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::rename(tmp, path)?;
        }
        for path in &deletions {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if sync {
            rustix::fs::syncfs(&root)?;
        }
        let mut staged = self.lock();
        for (key, done) in work {
            if staged
                .get(&key)
                .is_some_and(|s| s.generation == done.generation)
            {
                staged.remove(&key);
            }
        }
        Ok(())
    }

    /// Every stored key and record, in no particular order (for sweeps and
    /// backups: reads every file).
    pub fn for_each(&self, mut f: impl FnMut(&[u8], &[u8])) -> std::io::Result<()> {
        for a in std::fs::read_dir(&self.dir)? {
            let a = a?.path();
            if !a.is_dir() || a.file_name().is_some_and(|n| n == "tmp") {
                continue;
            }
            for b in std::fs::read_dir(&a)? {
                for file in std::fs::read_dir(b?.path())? {
                    let bytes = std::fs::read(file?.path())?;
                    let Some(n) = bytes
                        .get(0..2)
                        .map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])))
                    else {
                        continue;
                    };
                    if let (Some(key), Some(value)) = (bytes.get(2..2 + n), bytes.get(2 + n..)) {
                        f(key, value);
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_records_are_read_at_once_and_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let r = RecordFiles::open(dir.path()).unwrap();
        r.stage(b"sub/a".to_vec(), Some(b"one".to_vec()));
        assert_eq!(r.get(b"sub/a").unwrap(), Some(b"one".to_vec()));
        r.write(r.snapshot(), true).unwrap();
        r.stage(b"sub/a".to_vec(), Some(b"two".to_vec()));
        r.stage(b"sub/b".to_vec(), Some(b"three".to_vec()));
        r.write(r.snapshot(), false).unwrap();
        let r = RecordFiles::open(dir.path()).unwrap();
        assert_eq!(r.get(b"sub/a").unwrap(), Some(b"two".to_vec()));
        let mut all = Vec::new();
        r.for_each(|k, v| all.push((k.to_vec(), v.to_vec())))
            .unwrap();
        all.sort();
        assert_eq!(
            all,
            vec![
                (b"sub/a".to_vec(), b"two".to_vec()),
                (b"sub/b".to_vec(), b"three".to_vec())
            ]
        );
        // Deleted: gone from the directory, not just unreadable.
        r.stage(b"sub/a".to_vec(), None);
        assert_eq!(r.get(b"sub/a").unwrap(), None);
        r.write(r.snapshot(), true).unwrap();
        assert_eq!(r.get(b"sub/a").unwrap(), None);
        let files = crate::store::records::tests::count_files(dir.path());
        assert_eq!(files, 1, "one record file left");
    }

    #[test]
    fn a_crash_before_the_rename_leaves_the_old_version() {
        let dir = tempfile::tempdir().unwrap();
        let r = RecordFiles::open(dir.path()).unwrap();
        r.stage(b"sub/a".to_vec(), Some(b"old".to_vec()));
        r.write(r.snapshot(), true).unwrap();
        std::fs::write(dir.path().join("tmp").join("7.tmp"), b"half").unwrap();
        let r = RecordFiles::open(dir.path()).unwrap();
        assert_eq!(r.get(b"sub/a").unwrap(), Some(b"old".to_vec()));
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }

    pub(super) fn count_files(dir: &Path) -> usize {
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            n += if p.is_dir() { count_files(&p) } else { 1 };
        }
        n
    }
}
