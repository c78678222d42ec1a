//! Backups: a snapshot of the store as one file, and restoring it into an
//! empty data directory.
//!
//! Ciphertexts stay ciphertexts and keys stay wrapped: a backup holds
//! exactly what the data directory holds (subject records, token and index
//! pointers, wrapped KEKs and seed, credentials' keyed hashes, the erasure
//! journal), never a raw key, so restoring it needs the same root key (its
//! key file or its shares). The audit trail is not in it (export it with
//! `vaultctl audit export`).
//!
//! Format: `VAULT-BACKUP-1\n`, then frames `kind (1 byte: 1 entry, 2 subject
//! record) ‖ key length (u32 BE) ‖ key ‖ value length (u32 BE) ‖ value`, then
//! an end frame `0 ‖ frame count (u64 BE) ‖ SHA-256 of everything before`.
//!
//! Consistency without stopping writes: subject records are read first,
//! then the other entries. Records are the commit point of every write and
//! everything else is a pointer checked against them, so a write that
//! overlaps the backup is either wholly in it or shows only as pointers
//! that lead nowhere; an erasure that overlaps it has its journal entry in
//! the backup whenever the record still is, and the restore replays it.

use crate::store::{Batch, Store, StoreError, keys};
use ring::digest::{Context, SHA256};
use std::io::{Read, Write};

/// The first bytes of a backup.
pub const MAGIC: &[u8] = b"VAULT-BACKUP-1\n";

const END: u8 = 0;
const ENTRY: u8 = 1;
const RECORD: u8 = 2;

/// Why a backup could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// Reading or writing failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Not a backup, cut short, or changed: the checksum or a frame is wrong.
    #[error("not a valid backup: {0}")]
    Invalid(&'static str),
}

/// What a backup holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackupStats {
    /// Subject records.
    pub records: u64,
    /// Other entries.
    pub entries: u64,
    /// Erasure journal entries (among `entries`).
    pub erasures: u64,
}

struct Framer<W: Write> {
    out: W,
    hash: Context,
    frames: u64,
    error: Option<std::io::Error>,
}

impl<W: Write> Framer<W> {
    fn put(&mut self, bytes: &[u8]) {
        if self.error.is_none() {
            self.hash.update(bytes);
            if let Err(e) = self.out.write_all(bytes) {
                self.error = Some(e);
            }
        }
    }

    fn frame(&mut self, kind: u8, key: &[u8], value: &[u8]) {
        let (Ok(kl), Ok(vl)) = (u32::try_from(key.len()), u32::try_from(value.len())) else {
            self.error = Some(std::io::Error::other("entry too large"));
            return;
        };
        self.put(&[kind]);
        self.put(&kl.to_be_bytes());
        self.put(key);
        self.put(&vl.to_be_bytes());
        self.put(value);
        self.frames += 1;
    }
}

/// Writes a backup of `store` to `out` (blocking); with `journal_only`,
/// only the erasure journal (to replay on an older backup).
pub fn write(
    store: &dyn Store,
    out: impl Write,
    journal_only: bool,
) -> Result<BackupStats, BackupError> {
    let mut f = Framer {
        out,
        hash: Context::new(&SHA256),
        frames: 0,
        error: None,
    };
    let mut stats = BackupStats::default();
    f.put(MAGIC);
    if !journal_only {
        store.for_each_subject(&mut |k, v| {
            f.frame(RECORD, k, v);
            stats.records += 1;
        })?;
    }
    store.for_each_entry(&mut |k, v| {
        let erasure = k.starts_with(keys::ERASED_PREFIX);
        if journal_only && !erasure {
            return;
        }
        f.frame(ENTRY, k, v);
        stats.entries += 1;
        stats.erasures += u64::from(erasure);
    })?;
    if let Some(e) = f.error.take() {
        return Err(e.into());
    }
    let digest = f.hash.clone().finish();
    let mut end = vec![END];
    end.extend_from_slice(&f.frames.to_be_bytes());
    end.extend_from_slice(digest.as_ref());
    f.out.write_all(&end)?;
    f.out.flush()?;
    Ok(stats)
}

/// Reads the frames of a backup from `input`, calling `each(kind_is_record,
/// key, value)` for each; checks the end frame's count and checksum. The
/// callback sees frames before the checksum is known: read a backup once to
/// [`verify`] it before applying it.
pub fn read(
    mut input: impl Read,
    mut each: impl FnMut(bool, Vec<u8>, Vec<u8>) -> Result<(), BackupError>,
) -> Result<BackupStats, BackupError> {
    let mut hash = Context::new(&SHA256);
    let mut magic = vec![0u8; MAGIC.len()];
    input
        .read_exact(&mut magic)
        .map_err(|_| BackupError::Invalid("too short"))?;
    if magic != MAGIC {
        return Err(BackupError::Invalid("not a vault backup"));
    }
    hash.update(&magic);
    let mut stats = BackupStats::default();
    let mut frames = 0u64;
    let cut = |_| BackupError::Invalid("cut short");
    loop {
        let mut kind = [0u8; 1];
        input.read_exact(&mut kind).map_err(cut)?;
        if kind[0] == END {
            let mut count = [0u8; 8];
            let mut sum = [0u8; 32];
            input.read_exact(&mut count).map_err(cut)?;
            input.read_exact(&mut sum).map_err(cut)?;
            if u64::from_be_bytes(count) != frames {
                return Err(BackupError::Invalid("frame count differs"));
            }
            if !crate::crypto::ct_eq(hash.finish().as_ref(), &sum) {
                return Err(BackupError::Invalid(
                    "checksum differs: the file was changed or damaged",
                ));
            }
            let mut extra = [0u8; 1];
            if input.read(&mut extra)? != 0 {
                return Err(BackupError::Invalid("data after the end"));
            }
            return Ok(stats);
        }
        if kind[0] != ENTRY && kind[0] != RECORD {
            return Err(BackupError::Invalid("unknown frame"));
        }
        hash.update(&kind);
        let mut field = |hash: &mut Context| -> Result<Vec<u8>, BackupError> {
            let mut len = [0u8; 4];
            input.read_exact(&mut len).map_err(cut)?;
            hash.update(&len);
            let n = usize::try_from(u32::from_be_bytes(len))
                .map_err(|_| BackupError::Invalid("frame too large"))?;
            if n > 64 << 20 {
                return Err(BackupError::Invalid("frame too large"));
            }
            let mut v = vec![0u8; n];
            input.read_exact(&mut v).map_err(cut)?;
            hash.update(&v);
            Ok(v)
        };
        let key = field(&mut hash)?;
        let value = field(&mut hash)?;
        frames += 1;
        let record = kind[0] == RECORD;
        if record != key.starts_with(keys::SUBJECT_PREFIX) {
            return Err(BackupError::Invalid(
                "a frame's kind does not match its key",
            ));
        }
        if record {
            stats.records += 1;
        } else {
            stats.entries += 1;
            stats.erasures += u64::from(key.starts_with(keys::ERASED_PREFIX));
        }
        each(record, key, value)?;
    }
}

/// Checks a whole backup (format, count, checksum) without using it.
pub fn verify(input: impl Read) -> Result<BackupStats, BackupError> {
    read(input, |_, _, _| Ok(()))
}

/// Writes every frame of a checked backup into `store`, in batches.
pub async fn apply(store: &dyn Store, input: impl Read) -> Result<BackupStats, BackupError> {
    let mut batch = Batch::new();
    let stats = read(input, |_, k, v| {
        batch.put(k, v);
        if batch.ops().len() >= 1000 {
            store.apply(std::mem::take(&mut batch))?;
        }
        Ok(())
    })?;
    store.apply(batch)?;
    store.durable().await?;
    Ok(stats)
}

/// The erasure journal entries of a checked backup (or journal export).
pub fn journal(input: impl Read) -> Result<crate::store::Entries, BackupError> {
    let mut out = Vec::new();
    read(input, |_, k, v| {
        if k.starts_with(keys::ERASED_PREFIX) {
            out.push((k, v));
        }
        Ok(())
    })?;
    Ok(out)
}

/// What a restore did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Restored {
    /// What the backup held.
    pub backup: BackupStats,
    /// Erasure journal entries added from newer journals.
    pub journal_added: u64,
    /// Subjects shredded again because the journal says they were erased.
    pub erased_again: u64,
}

/// A reader that advances a progress bar.
struct Counting<R> {
    inner: R,
    bar: indicatif::ProgressBar,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

fn open_counting(
    path: &std::path::Path,
    what: &str,
) -> Result<Counting<std::io::BufReader<std::fs::File>>, BackupError> {
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        indicatif::ProgressBar::new(len)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{what} {{bar:40}} {{bytes}}/{{total_bytes}} ({{bytes_per_sec}}, eta {{eta}})"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    Ok(Counting {
        inner: std::io::BufReader::with_capacity(1 << 20, file),
        bar,
    })
}

/// Restores the backup at `from` into `store`, which must hold nothing:
/// checks the whole file first, writes it, adds the erasure journal entries
/// of `journals` (newer backups or journal exports) and shreds every
/// subject the journal names, so that a subject erased after the backup
/// stays erased.
pub async fn restore(
    store: &dyn Store,
    from: &std::path::Path,
    journals: &[std::path::PathBuf],
) -> Result<Restored, BackupError> {
    if crate::crypto::keyring::is_initialised(store)? || !store.scan_prefix(b"", 1)?.is_empty() {
        return Err(BackupError::Invalid(
            "the data directory is not empty: restore only into an empty one",
        ));
    }
    let mut journal_entries = Vec::new();
    for j in journals {
        journal_entries.extend(journal(open_counting(j, "journal")?)?);
    }
    verify(open_counting(from, "check  ")?)?;
    let backup = apply(store, open_counting(from, "restore")?).await?;
    let mut b = Batch::new();
    let mut journal_added = 0;
    for (k, v) in journal_entries {
        if store.get(&k)?.is_none() {
            b.put(k, v);
            journal_added += 1;
        }
    }
    store.commit(b).await?;
    let erased_again = crate::engine::replay_erasures(store)
        .await
        .map_err(|e| BackupError::Store(StoreError::Backend(e.to_string())))?
        .len() as u64;
    store.flush()?;
    Ok(Restored {
        backup,
        journal_added,
        erased_again,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sled::{Durability, SledStore};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_backup_round_trips_and_any_change_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("a"), 1 << 20, Durability::Flush).unwrap();
        let mut b = Batch::new();
        b.put(keys::subject("s1"), b"record".to_vec());
        b.put(keys::token("t1"), b"s1".to_vec());
        b.put(keys::erased("s0"), b"receipt".to_vec());
        store.commit(b).await.unwrap();
        store.flush().unwrap();
        let mut bytes = Vec::new();
        let stats = write(&store, &mut bytes, false).unwrap();
        assert_eq!((stats.records, stats.entries, stats.erasures), (1, 2, 1));
        assert_eq!(verify(bytes.as_slice()).unwrap(), stats);
        let other = SledStore::open(&dir.path().join("b"), 1 << 20, Durability::Flush).unwrap();
        apply(&other, bytes.as_slice()).await.unwrap();
        other.flush().unwrap();
        assert_eq!(other.get(&keys::subject("s1")).unwrap().unwrap(), b"record");
        assert_eq!(other.get(&keys::token("t1")).unwrap().unwrap(), b"s1");
        assert_eq!(journal(bytes.as_slice()).unwrap().len(), 1);
        let mut journal_only = Vec::new();
        let j = write(&store, &mut journal_only, true).unwrap();
        assert_eq!((j.records, j.entries), (0, 1));
        for at in [3, MAGIC.len() + 5, bytes.len() - 40, bytes.len() - 1] {
            let mut changed = bytes.clone();
            changed[at] ^= 1;
            assert!(verify(changed.as_slice()).is_err(), "byte {at}");
        }
        assert!(verify(&bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(verify(longer.as_slice()).is_err());
    }
}
