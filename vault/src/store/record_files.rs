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
//! and leftovers there are removed at start. Files are created `0600` and
//! directories `0700` (and `subjects/` is made `0700` at start), whatever
//! the umask and whoever made the data directory.
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
//!
//! **A failed write is undone, whole.** A [`RecordFiles::write`] either puts
//! every record of its snapshot in place or none: a record it replaces is
//! kept as a hard link in `tmp/` (an erased one is moved there) until the
//! second sync is done, and a failure at any step moves the old versions
//! back. Either way the snapshot's records leave the staging area (readers
//! then see the files, that is the old versions), and their generations are
//! remembered as failed ([`RecordFiles::take_failed`]) so that a request
//! whose record was in a failed snapshot is told so even if it asks after
//! the failure. Nothing of a failed write is staged again by a later one.
//! The copies in `tmp/` are unlinked once a write is durable (an unlink
//! that fails is retried by the next write, and `tmp/` is emptied at
//! start). While a write is under way, a reader that misses the engine's
//! cache may see its staged record before it is durable.

use crate::model::hex;
use std::collections::{HashMap, HashSet};
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

/// Staged changes taken for one [`RecordFiles::write`], in key order.
pub struct Snapshot(Vec<(Vec<u8>, Staged)>);

// Records are ciphertexts and wrapped keys: say how many, not what.
impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Snapshot({} records)", self.0.len())
    }
}

/// Why a [`RecordFiles::write`] failed, and whether it was undone.
#[derive(Debug)]
pub struct WriteError {
    /// The first failure.
    pub error: std::io::Error,
    /// Whether every record is back at its old version (`false`: a step of
    /// the undo failed too, and which version a file holds is unknown).
    pub undone: bool,
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.undone {
            write!(f, "writing subject records: {} (undone)", self.error)
        } else {
            write!(
                f,
                "writing subject records: {} (and the undo failed)",
                self.error
            )
        }
    }
}

/// The staged records and the generations of failed writes.
#[derive(Default)]
struct State {
    staged: HashMap<Vec<u8>, Staged>,
    /// Generations whose write failed, until their request is told.
    failed: HashSet<u64>,
    /// Copies in `tmp/` that a successful write could not unlink.
    leftovers: Vec<PathBuf>,
}

/// Subject records as files.
pub struct RecordFiles {
    dir: PathBuf,
    state: Mutex<State>,
    generation: AtomicU64,
}

impl std::fmt::Debug for RecordFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordFiles")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Creates `dir` and its missing parents, owner-only (`0700`).
pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

/// Makes an existing `dir` owner-only (`0700`) if it lets anyone else in.
pub(crate) fn make_private(dir: &Path) -> std::io::Result<bool> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir)?.permissions().mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
            return Ok(true);
        }
    }
    Ok(false)
}

/// Creates (truncating) a file that only its owner may read (`0600`).
fn create_private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
}

/// A step of a write that is undone if a later one fails.
enum Done {
    /// `path` now holds the new version; the old one is at `saved` (`None`:
    /// there was none).
    Replaced {
        path: PathBuf,
        saved: Option<PathBuf>,
    },
    /// `path` (an erased record) was moved to `to`.
    Moved { path: PathBuf, to: PathBuf },
}

impl RecordFiles {
    /// Opens (creating if needed) the records below `dir`, removing new
    /// versions a crash left unrenamed, and makes `dir` owner-only.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        let tmp = dir.join("tmp");
        create_private_dir(&tmp)?;
        make_private(dir)?;
        make_private(&tmp)?;
        for entry in std::fs::read_dir(&tmp)? {
            std::fs::remove_file(entry?.path())?;
        }
        Ok(Self {
            dir: dir.to_owned(),
            state: Mutex::new(State::default()),
            generation: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change under the lock leaves the state whole.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
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
        if let Some(s) = self.lock().staged.get(key) {
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
    /// at once, written by the next [`RecordFiles::write`]. Returns the
    /// change's generation (see [`RecordFiles::take_failed`]).
    pub fn stage(&self, key: Vec<u8>, value: Option<Vec<u8>>) -> u64 {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        self.lock().staged.insert(
            key,
            Staged {
                value: value.map(Arc::new),
                generation,
            },
        );
        generation
    }

    /// Drops the staged change of `key` if it is still the one of
    /// `generation` (a request undoing what it staged): readers see the
    /// file again.
    pub fn unstage(&self, key: &[u8], generation: u64) {
        let mut st = self.lock();
        if st
            .staged
            .get(key)
            .is_some_and(|s| s.generation == generation)
        {
            st.staged.remove(key);
        }
    }

    /// Whether a write of any of `generations` failed (forgetting them: a
    /// request asks once).
    pub fn take_failed(&self, generations: &[u64]) -> bool {
        if generations.is_empty() {
            return false;
        }
        let mut st = self.lock();
        if st.failed.is_empty() {
            return false;
        }
        let mut any = false;
        for g in generations {
            any |= st.failed.remove(g);
        }
        any
    }

    /// The changes staged so far, to [`RecordFiles::write`].
    pub fn snapshot(&self) -> Snapshot {
        let mut work: Vec<_> = self
            .lock()
            .staged
            .iter()
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect();
        work.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Snapshot(work)
    }

    /// Writes `snapshot`: new files in `tmp/`, then (with `sync`) one
    /// `syncfs`, the renames and deletions, and one more `syncfs`; all of
    /// it or, on failure, none (see the module's documentation). Either way
    /// the snapshot's changes leave the staging area; a change staged again
    /// since the snapshot stays staged for the next write.
    pub fn write(&self, snapshot: Snapshot, sync: bool) -> Result<(), WriteError> {
        let work = snapshot.0;
        let leftovers = std::mem::take(&mut self.lock().leftovers);
        let mut lingering = unlink_all(leftovers);
        if work.is_empty() {
            self.lock().leftovers.append(&mut lingering);
            return Ok(());
        }
        let result = self.write_files(&work, sync, &mut lingering);
        self.settle(work, result.is_err(), lingering);
        result
    }

    /// Drops `snapshot`'s changes unwritten, as failed (the store could not
    /// make what they depend on durable).
    pub fn discard(&self, snapshot: Snapshot) {
        self.settle(snapshot.0, true, Vec::new());
    }

    /// Takes `work` out of the staging area (changes staged again since
    /// stay), remembering its generations if it `failed`.
    fn settle(&self, work: Vec<(Vec<u8>, Staged)>, failed: bool, mut lingering: Vec<PathBuf>) {
        let mut st = self.lock();
        st.leftovers.append(&mut lingering);
        for (key, done) in work {
            if st
                .staged
                .get(&key)
                .is_some_and(|s| s.generation == done.generation)
            {
                st.staged.remove(&key);
            }
            if failed {
                st.failed.insert(done.generation);
            }
        }
    }

    fn write_files(
        &self,
        work: &[(Vec<u8>, Staged)],
        sync: bool,
        lingering: &mut Vec<PathBuf>,
    ) -> Result<(), WriteError> {
        let tmp_dir = self.dir.join("tmp");
        let undone = |error| WriteError {
            error,
            undone: true,
        };
        // 1. The new versions, in `tmp/`: nothing is in place yet.
        let mut created = Vec::new();
        let mut renames = Vec::new();
        let mut deletions = Vec::new();
        let written = (|| -> std::io::Result<std::fs::File> {
            for (key, staged) in work {
                let path = self.path(key);
                match &staged.value {
                    Some(value) => {
                        let tmp = tmp_dir.join(format!("{}.tmp", staged.generation));
                        created.push(tmp.clone());
                        let mut f = create_private_file(&tmp)?;
                        let n = u16::try_from(key.len()).map_err(|_| {
                            std::io::Error::new(std::io::ErrorKind::InvalidInput, "key too long")
                        })?;
                        f.write_all(&n.to_be_bytes())?;
                        f.write_all(key)?;
                        f.write_all(value)?;
                        let saved = tmp_dir.join(format!("{}.old", staged.generation));
                        renames.push((tmp, path, saved));
                    }
                    None => {
                        let to = tmp_dir.join(format!("{}.del", staged.generation));
                        deletions.push((path, to));
                    }
                }
            }
            let root = std::fs::File::open(&self.dir)?;
            if sync {
                rustix::fs::syncfs(&root)?;
            }
            Ok(root)
        })();
        let root = match written {
            Ok(root) => root,
            Err(e) => {
                lingering.extend(unlink_all(created));
                return Err(undone(e));
            }
        };
        // 2. Into place, each step undoable, then durable.
        let mut done = Vec::with_capacity(renames.len() + deletions.len());
        let placed = (|| -> std::io::Result<()> {
            for (tmp, path, saved) in &renames {
                if let Some(parent) = path.parent() {
                    create_private_dir(parent)?;
                }
                let saved = match std::fs::hard_link(path, saved) {
                    Ok(()) => Some(saved.clone()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => return Err(e),
                };
                if let Err(e) = std::fs::rename(tmp, path) {
                    lingering.extend(unlink_all(saved.into_iter().collect()));
                    return Err(e);
                }
                done.push(Done::Replaced {
                    path: path.clone(),
                    saved,
                });
            }
            for (path, to) in &deletions {
                match std::fs::rename(path, to) {
                    Ok(()) => done.push(Done::Moved {
                        path: path.clone(),
                        to: to.clone(),
                    }),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            if sync {
                rustix::fs::syncfs(&root)?;
            }
            Ok(())
        })();
        if let Err(error) = placed {
            let undo = undo(done).and_then(|()| {
                if sync {
                    rustix::fs::syncfs(&root)?;
                }
                Ok(())
            });
            // New versions not yet renamed stay in `tmp/`: remove them.
            lingering.extend(unlink_all(
                renames.into_iter().map(|(tmp, _, _)| tmp).collect(),
            ));
            if let Err(e) = &undo {
                tracing::error!(error = %e, "could not undo a failed write of subject records");
            }
            return Err(WriteError {
                error,
                undone: undo.is_ok(),
            });
        }
        // 3. Durable: the old versions go.
        let old = done
            .into_iter()
            .filter_map(|d| match d {
                Done::Replaced { saved, .. } => saved,
                Done::Moved { to, .. } => Some(to),
            })
            .collect();
        lingering.extend(unlink_all(old));
        Ok(())
    }
}

/// Unlinks each of `paths` (one already gone is fine); returns those that
/// could not be.
fn unlink_all(paths: Vec<PathBuf>) -> Vec<PathBuf> {
    paths
        .into_iter()
        .filter(|p| match std::fs::remove_file(p) {
            Ok(()) => false,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => {
                tracing::warn!(error = %e, "could not remove a subject record's old copy; retried at the next write");
                true
            }
        })
        .collect()
}

/// Undoes `done`, last step first, trying every step; returns the first
/// failure.
fn undo(done: Vec<Done>) -> std::io::Result<()> {
    let mut first = None;
    for d in done.into_iter().rev() {
        let r = match d {
            Done::Replaced {
                path,
                saved: Some(saved),
            } => std::fs::rename(&saved, &path),
            Done::Replaced { path, saved: None } => std::fs::remove_file(&path),
            Done::Moved { path, to } => std::fs::rename(&to, &path),
        };
        if let Err(e) = r {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

impl RecordFiles {
    /// The file of `key`, and the generation the next change gets (tests
    /// that make a write fail).
    #[cfg(test)]
    pub(crate) fn path_and_next_generation(&self, key: &[u8]) -> (PathBuf, u64) {
        (self.path(key), self.generation.load(Ordering::Relaxed))
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
        let files = crate::store::record_files::tests::count_files(dir.path());
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
