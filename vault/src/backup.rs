//! Backups: a snapshot of the store as one authenticated file, and
//! restoring it into an empty data directory.
//!
//! Ciphertexts stay ciphertexts and keys stay wrapped: a backup holds
//! exactly what the data directory holds (subject records, token and index
//! pointers, wrapped KEKs and seed, credentials' keyed hashes, the erasure
//! and revocation journals), never a raw key, so restoring it needs the
//! same root key (its key file, its shares or its HSM). The audit trail is
//! not in it (export it with `vaultctl audit export`).
//!
//! Format (version 2):
//!
//! ```text
//! "VAULT-BACKUP-2\n"
//! kind (1 byte: 'F' whole store, 'J' journals only)
//! seed length (u32 BE) ‖ the derivation seed as stored (wrapped by the root key)
//! frames: kind (1 byte: 1 entry, 2 subject record) ‖ key length (u32 BE) ‖ key
//!         ‖ value length (u32 BE) ‖ value
//! end:    0 ‖ frame count (u64 BE) ‖ HMAC-SHA256(backup key, every byte before it)
//! ```
//!
//! The backup key is derived by HKDF from the seed
//! ([`crate::crypto::keys::BACKUP_KEY_LABEL`]). A restore unwraps the
//! header's seed with the root key (an AEAD: a changed or foreign seed does
//! not open), derives the key and checks the tag in constant time over the
//! whole file before it writes anything. Whoever changes a byte cannot make
//! a new tag without the root key. Journals given to a restore are checked
//! with the same key, so they must come from the same vault. Version-1
//! backups (a bare SHA-256, which anyone can recompute) are refused.
//!
//! Subjects' wrapped data keys live in their key slots, not in their stored
//! records; a backup puts them back into each record it holds (as records
//! held them before key slots), and a restore moves them into key slots
//! again. A backup made before key slots restores the same way: each of
//! its subjects gets a key slot, and its tokens keep their pointers (the
//! way to move a data directory of that layout to this one: see
//! docs/operations.md).
//!
//! Consistency without stopping writes: subject records are read first,
//! then the other entries. Records are the commit point of every write and
//! everything else is a pointer checked against them, so a write that
//! overlaps the backup is either wholly in it or shows only as pointers
//! that lead nowhere; an erasure that overlaps it has its journal entry in
//! the backup whenever the record still is, and the restore replays it. A
//! revocation writes its journal entry before the credential record, so a
//! backup that shows it revoked holds its entry too.

use crate::crypto::keyring::{self, Root};
use crate::crypto::keys::{BackupKey, BackupMac};
use crate::engine::records::SubjectRecord;
use crate::store::{Batch, Store, StoreError, keys};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The first bytes of a backup.
pub const MAGIC: &[u8] = b"VAULT-BACKUP-2\n";
/// The first bytes of a version-1 backup (SHA-256 only; refused).
pub const MAGIC_V1: &[u8] = b"VAULT-BACKUP-1\n";

const END: u8 = 0;
const ENTRY: u8 = 1;
const RECORD: u8 = 2;
const KIND_FULL: u8 = b'F';
const KIND_JOURNAL: u8 = b'J';
/// The longest wrapped seed a header may hold.
const MAX_SEED: usize = 4096;
/// The longest key or value a frame may hold.
const MAX_FIELD: usize = 64 << 20;

/// Why a backup could not be written, read or restored. Never holds a value
/// or key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// Reading or writing failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Not a backup, cut short, or malformed.
    #[error("not a valid backup: {0}")]
    Invalid(&'static str),
    /// The tag does not verify: the file was changed (or damaged) after the
    /// vault wrote it, or another vault wrote it.
    #[error(
        "not a valid backup: {0}: its authentication tag does not verify (the file was changed or damaged, or another vault wrote it); nothing was restored from it"
    )]
    NotAuthentic(&'static str),
    /// The root key does not open the backup's seed.
    #[error(
        "the root key does not open this backup (another vault's root key or shares, or a changed backup); nothing was restored"
    )]
    WrongRootKey,
    /// The root key could not be had (key file, shares or HSM).
    #[error("root key: {0}")]
    RootKey(String),
    /// The restore was given something it cannot use.
    #[error("{0}")]
    Refused(&'static str),
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
    /// Revocation journal entries (among `entries`).
    pub revocations: u64,
}

impl BackupStats {
    fn count(&mut self, record: bool, key: &[u8]) {
        if record {
            self.records += 1;
        } else {
            self.entries += 1;
            self.erasures += u64::from(key.starts_with(keys::ERASED_PREFIX));
            self.revocations += u64::from(key.starts_with(keys::REVOKED_PREFIX));
        }
    }
}

struct Framer<W: Write> {
    out: W,
    mac: BackupMac,
    frames: u64,
    error: Option<std::io::Error>,
}

impl<W: Write> Framer<W> {
    fn put(&mut self, bytes: &[u8]) {
        if self.error.is_none() {
            self.mac.update(bytes);
            if let Err(e) = self.out.write_all(bytes) {
                self.error = Some(e);
            }
        }
    }

    fn field(&mut self, bytes: &[u8]) {
        let Ok(len) = u32::try_from(bytes.len()) else {
            self.error = Some(std::io::Error::other("entry too large"));
            return;
        };
        self.put(&len.to_be_bytes());
        self.put(bytes);
    }

    fn frame(&mut self, kind: u8, key: &[u8], value: &[u8]) {
        self.put(&[kind]);
        self.field(key);
        self.field(value);
        self.frames += 1;
    }
}

/// Writes a backup of `store` to `out` (blocking), authenticated with
/// `key` (the keyring's backup key); with `journal_only`, only the erasure
/// and revocation journals (to replay on an older backup).
pub fn write(
    store: &dyn Store,
    key: &BackupKey,
    out: impl Write,
    journal_only: bool,
) -> Result<BackupStats, BackupError> {
    let seed = store
        .get(keys::SEED)?
        .ok_or(BackupError::Invalid("the store holds no seed"))?;
    let mut f = Framer {
        out,
        mac: key.start(),
        frames: 0,
        error: None,
    };
    let mut stats = BackupStats::default();
    f.put(MAGIC);
    f.put(&[if journal_only {
        KIND_JOURNAL
    } else {
        KIND_FULL
    }]);
    f.field(&seed);
    if !journal_only {
        let mut failed = None;
        store.for_each_subject(&mut |k, v| {
            if failed.is_some() {
                return;
            }
            match with_keys(store, k, v) {
                Ok(Some(record)) => {
                    f.frame(RECORD, k, &record);
                    stats.count(true, k);
                }
                Ok(None) => {}
                Err(e) => failed = Some(e),
            }
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
    }
    store.for_each_entry(&mut |k, v| {
        if journal_only && !keys::is_journal(k) {
            return;
        }
        f.frame(ENTRY, k, v);
        stats.count(false, k);
    })?;
    f.put(&[END]);
    let frames = f.frames;
    f.put(&frames.to_be_bytes());
    if let Some(e) = f.error.take() {
        return Err(e.into());
    }
    f.out.write_all(&f.mac.finish())?;
    f.out.flush()?;
    Ok(stats)
}

/// A backup's header: what it holds and its wrapped seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Whether it holds only the journals.
    pub journal_only: bool,
    /// The derivation seed, wrapped by the root key, as the store holds it.
    pub wrapped_seed: Vec<u8>,
}

/// Reads exactly `buf.len()` bytes; a short read is a cut-short backup.
fn exact(input: &mut impl Read, buf: &mut [u8]) -> Result<(), BackupError> {
    input.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => BackupError::Invalid("cut short"),
        _ => BackupError::Io(e),
    })
}

/// A length-prefixed field of at most `max` bytes.
fn field(input: &mut impl Read, max: usize) -> Result<(Vec<u8>, [u8; 4]), BackupError> {
    let mut len = [0u8; 4];
    exact(input, &mut len)?;
    let n = usize::try_from(u32::from_be_bytes(len))
        .ok()
        .filter(|n| *n <= max)
        .ok_or(BackupError::Invalid("frame too large"))?;
    let mut v = vec![0u8; n];
    exact(input, &mut v)?;
    Ok((v, len))
}

/// Reads a backup's header (magic, kind, wrapped seed); nothing in it is
/// authentic until the whole file's tag is checked.
pub fn header(mut input: impl Read) -> Result<Header, BackupError> {
    read_header(&mut input, None)
}

fn read_header(input: &mut impl Read, mac: Option<&mut BackupMac>) -> Result<Header, BackupError> {
    let mut magic = vec![0u8; MAGIC.len()];
    exact(input, &mut magic).map_err(|_| BackupError::Invalid("too short"))?;
    if magic == MAGIC_V1 {
        return Err(BackupError::Invalid(
            "a version-1 backup, checked only by a plain SHA-256 that anyone can recompute after changing it; this vault restores only authenticated (version-2) backups: take a new backup",
        ));
    }
    if magic != MAGIC {
        return Err(BackupError::Invalid("not a vault backup"));
    }
    let mut kind = [0u8; 1];
    exact(input, &mut kind)?;
    let journal_only = match kind[0] {
        KIND_FULL => false,
        KIND_JOURNAL => true,
        _ => return Err(BackupError::Invalid("unknown backup kind")),
    };
    let (wrapped_seed, len) = field(input, MAX_SEED)?;
    if let Some(m) = mac {
        m.update(&magic);
        m.update(&kind);
        m.update(&len);
        m.update(&wrapped_seed);
    }
    Ok(Header {
        journal_only,
        wrapped_seed,
    })
}

/// Reads the frames of a backup from `input`, calling `each(kind_is_record,
/// key, value)` for each, and checks the end: the frame count and the tag
/// under `key`. The callback sees frames before the tag is checked: read a
/// backup once to [`verify`] it before applying it.
pub fn read(
    mut input: impl Read,
    key: &BackupKey,
    mut each: impl FnMut(bool, Vec<u8>, Vec<u8>) -> Result<(), BackupError>,
) -> Result<(Header, BackupStats), BackupError> {
    let mut mac = key.start();
    let header = read_header(&mut input, Some(&mut mac))?;
    let mut stats = BackupStats::default();
    let mut frames = 0u64;
    loop {
        let mut kind = [0u8; 1];
        exact(&mut input, &mut kind)?;
        mac.update(&kind);
        if kind[0] == END {
            let mut count = [0u8; 8];
            let mut tag = [0u8; 32];
            exact(&mut input, &mut count)?;
            exact(&mut input, &mut tag)?;
            mac.update(&count);
            if !mac.verify(&tag) {
                return Err(BackupError::NotAuthentic("changed"));
            }
            if u64::from_be_bytes(count) != frames {
                return Err(BackupError::Invalid("frame count differs"));
            }
            let mut extra = [0u8; 1];
            if input.read(&mut extra)? != 0 {
                return Err(BackupError::Invalid("data after the end"));
            }
            return Ok((header, stats));
        }
        if kind[0] != ENTRY && kind[0] != RECORD {
            return Err(BackupError::Invalid("unknown frame"));
        }
        let (k, klen) = field(&mut input, MAX_FIELD)?;
        mac.update(&klen);
        mac.update(&k);
        let (v, vlen) = field(&mut input, MAX_FIELD)?;
        mac.update(&vlen);
        mac.update(&v);
        frames += 1;
        let record = kind[0] == RECORD;
        if record != k.starts_with(keys::SUBJECT_PREFIX) {
            return Err(BackupError::Invalid(
                "a frame's kind does not match its key",
            ));
        }
        if header.journal_only && !keys::is_journal(&k) {
            return Err(BackupError::Invalid("a journal holds a non-journal entry"));
        }
        stats.count(record, &k);
        each(record, k, v)?;
    }
}

/// The stored record `value` of key `key` with its data keys put back in
/// from its key slot, or `None` if the subject is gone (erased while the
/// backup ran: its journal entry is in the backup). A record re-keyed
/// while the backup ran is read again, so that its keys match it.
fn with_keys(store: &dyn Store, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>, BackupError> {
    use prost::Message;
    let mut value = value.to_vec();
    for _ in 0..8 {
        let mut record = SubjectRecord::decode(value.as_slice())
            .map_err(|_| BackupError::Invalid("a stored subject record does not decode"))?;
        if record.slot == 0 {
            return Ok(Some(value));
        }
        if record.fill_keys(&store.keys(record.slot)?) {
            return Ok(Some(record.encode_to_vec()));
        }
        match store.get(key)? {
            Some(again) if again == value => {
                // Not a re-key under way: the record's key is missing from
                // its slot (a crash, a damaged file). It is backed up as it
                // is, keyless (its values open nowhere), not the whole
                // backup refused.
                tracing::warn!(
                    "a subject record whose key slot holds none of its keys is backed up without them"
                );
                return Ok(Some(record.encode_to_vec()));
            }
            Some(again) => value = again,
            None => return Ok(None),
        }
    }
    Err(BackupError::Refused(
        "a subject kept changing its keys while the backup ran: try again",
    ))
}

/// Turns a subject record of a backup (its data keys inside) into what
/// the store holds: the record without its keys, and its keys in its key
/// slot. A record from before key slots is given the next slot of `next`
/// (its tokens keep their pointers).
fn into_slot(
    key: Vec<u8>,
    value: &[u8],
    next: &mut u64,
    batch: &mut Batch,
) -> Result<(), BackupError> {
    use prost::Message;
    let invalid = BackupError::Invalid("a subject record does not decode");
    let mut record = SubjectRecord::decode(value).map_err(|_| invalid)?;
    if record.slot == 0 {
        let sid = key
            .strip_prefix(keys::SUBJECT_PREFIX)
            .ok_or(BackupError::Invalid(
                "a frame's kind does not match its key",
            ))?;
        record.slot = *next;
        batch.put(keys::slot(record.slot), sid.to_vec());
        for e in &mut record.entries {
            e.pointer = true;
        }
        if record.deks.len() > 1 {
            return Err(BackupError::Refused(
                "a subject of this backup has more than one data key (it sealed 2^24 values): re-key it with the version that made the backup (vaultctl keys compromise) and back up again",
            ));
        }
    }
    *next = (*next).max(record.slot.saturating_add(1));
    for d in &mut record.deks {
        batch.put_key(record.slot, d.version, std::mem::take(&mut d.wrapped));
    }
    batch.put(key, record.encode_to_vec());
    Ok(())
}

/// Checks a whole backup (format, count, tag under `key`) without using it.
pub fn verify(input: impl Read, key: &BackupKey) -> Result<(Header, BackupStats), BackupError> {
    read(input, key, |_, _, _| Ok(()))
}

/// Writes every frame of a backup into `store`, in batches. The tag is
/// checked only at the end: [`verify`] the backup first.
pub async fn apply(
    store: &dyn Store,
    input: impl Read,
    key: &BackupKey,
) -> Result<BackupStats, BackupError> {
    let mut batch = Batch::new();
    let mut next_slot = 1;
    let (_, stats) = read(input, key, |record, k, v| {
        if record {
            into_slot(k, &v, &mut next_slot, &mut batch)?;
        } else {
            batch.put(k, v);
        }
        if batch.ops().len() >= 1000 {
            store.apply(std::mem::take(&mut batch))?;
        }
        Ok(())
    })?;
    store.apply(batch)?;
    store.durable().await?;
    Ok(stats)
}

/// The journal entries (erasures, revocations) of a backup or journal
/// export, once its tag under `key` is checked.
pub fn journal(input: impl Read, key: &BackupKey) -> Result<crate::store::Entries, BackupError> {
    let mut out = Vec::new();
    read(input, key, |_, k, v| {
        if keys::is_journal(&k) {
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
    /// Journal entries added from newer journals.
    pub journal_added: u64,
    /// Subjects shredded again because the journal says they were erased.
    pub erased_again: u64,
    /// Credentials revoked again because the journal says they were revoked.
    pub revoked_again: u64,
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

fn counting(
    file: &std::fs::File,
    what: &str,
) -> Result<Counting<std::io::BufReader<std::fs::File>>, BackupError> {
    let mut file = file.try_clone()?;
    file.rewind()?;
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

/// The root key a restore checks backups with: rebuilt from custodians'
/// share files if `shares` names any, else the configured HSM (with
/// `VAULT_HSM_PIN`), else the development root key file. Never makes a new
/// key.
pub fn restore_root(
    config: &crate::config::Config,
    shares: &[PathBuf],
) -> Result<Root, BackupError> {
    use crate::crypto::{keys::RootKey, rootkey, shamir};
    if !shares.is_empty() {
        let mut got: Vec<shamir::EncodedShare> = Vec::new();
        for path in shares {
            let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
                BackupError::RootKey(format!("share file {}: {e}", path.display()))
            })?);
            let share = shamir::decode(&text)
                .map_err(|e| BackupError::RootKey(format!("share file {}: {e}", path.display())))?;
            if let Some(first) = got.first()
                && (first.vault_id != share.vault_id || first.threshold != share.threshold)
            {
                return Err(BackupError::RootKey(format!(
                    "share file {}: the shares belong to different vaults",
                    path.display()
                )));
            }
            if got.iter().any(|s| s.share.index == share.share.index) {
                return Err(BackupError::RootKey(format!(
                    "share file {}: share {} was already given",
                    path.display(),
                    share.share.index
                )));
            }
            got.push(share);
        }
        let threshold = got.first().map_or(0, |s| usize::from(s.threshold));
        if got.len() < threshold {
            return Err(BackupError::RootKey(format!(
                "{} share(s) given, {threshold} needed",
                got.len()
            )));
        }
        let shares: Vec<shamir::Share> = got.into_iter().map(|s| s.share).collect();
        let root = shamir::combine(&shares)
            .ok_or_else(|| BackupError::RootKey("the shares do not combine".into()))?;
        return Ok(Root::Key(Box::new(RootKey::from_bytes(&root))));
    }
    if let Some(hsm) = &config.hsm {
        let pin = zeroize::Zeroizing::new(std::env::var("VAULT_HSM_PIN").map_err(|_| {
            BackupError::RootKey("VAULT_HSM_PIN is not set (the token's user PIN)".into())
        })?);
        let root = crate::crypto::hsm::HsmRoot::open(hsm, &pin, false)
            .map_err(|e| BackupError::RootKey(e.to_string()))?;
        return Ok(Root::Hsm(root));
    }
    let key = rootkey::load_dev_key_file(&config.root_key_file)
        .map_err(|e| BackupError::RootKey(e.to_string()))?;
    Ok(Root::Key(Box::new(key)))
}

/// A backup and its journals, checked and ready to restore: nothing has
/// been written yet.
pub struct Checked {
    file: std::fs::File,
    key: BackupKey,
    journal: crate::store::Entries,
}

impl std::fmt::Debug for Checked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checked")
            .field("journal_entries", &self.journal.len())
            .finish_non_exhaustive()
    }
}

/// Checks the backup at `from` and every journal in `journals` (journal
/// exports or newer backups of the same vault) under the backup key that
/// `root` opens, reading each whole once; writes nothing.
pub fn check(root: &Root, from: &Path, journals: &[PathBuf]) -> Result<Checked, BackupError> {
    let file = std::fs::File::open(from)?;
    let header = header(std::io::BufReader::new(file.try_clone()?))?;
    if header.journal_only {
        return Err(BackupError::Refused(
            "this file holds only journals: restore a whole backup and give the journal with --journal",
        ));
    }
    let key = keyring::backup_key(root, &header.wrapped_seed).map_err(|e| match e {
        keyring::KeyringError::WrongRootKey => BackupError::WrongRootKey,
        other => BackupError::RootKey(other.to_string()),
    })?;
    verify(counting(&file, "check  ")?, &key)?;
    let mut journal = Vec::new();
    for j in journals {
        let f = std::fs::File::open(j)?;
        journal.extend(
            self::journal(counting(&f, "journal")?, &key).map_err(|e| match e {
                BackupError::NotAuthentic(_) => {
                    BackupError::NotAuthentic("a journal (or it is from another vault)")
                }
                other => other,
            })?,
        );
    }
    Ok(Checked { file, key, journal })
}

/// Restores a [`check`]ed backup into `store`, which must hold nothing:
/// writes it, adds the journal entries of the newer journals, shreds every
/// subject the erasure journal names and revokes every credential the
/// revocation journal names, so that what was erased or revoked after the
/// backup stays so.
///
/// The restored vault mints new value tokens under the next token key
/// version: its key slots and token counters are those of the backup's
/// time, and a token minted again for a slot and counter handed out after
/// the backup must not be one a client already holds (for another value
/// or another subject).
pub async fn restore(store: &dyn Store, checked: Checked) -> Result<Restored, BackupError> {
    if crate::keystore::is_initialised(store)? || !store.scan_prefix(b"", 1)?.is_empty() || {
        let mut any = false;
        store.for_each_key_slot(&mut |_, _| any = true)?;
        any
    } {
        return Err(BackupError::Refused(
            "the data directory is not empty: restore only into an empty one",
        ));
    }
    let Checked { file, key, journal } = checked;
    let backup = apply(store, counting(&file, "restore")?, &key)
        .await
        .map_err(|e| match e {
            BackupError::NotAuthentic(_) | BackupError::Invalid(_) => BackupError::Refused(
                "the backup changed while it was restored: the data directory is incomplete; delete it and restore again",
            ),
            other => other,
        })?;
    let mut b = Batch::new();
    // `key/token-version` is the version, then one random salt per version
    // a restore started: two restores of one backup mint under two keys.
    let mut token_versions = store
        .get(keys::TOKEN_VERSION)?
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| vec![crate::crypto::keyring::TOKEN_KEY_VERSION]);
    let token_version = token_versions[0];
    if token_version >= crate::tokens::locator::MAX_VERSION {
        return Err(BackupError::Refused(
            "this vault has been restored as many times as its token format allows (14): its tokens would no longer be unique",
        ));
    }
    token_versions[0] = token_version + 1;
    let salt = crate::crypto::random_array::<16>()
        .map_err(|e| BackupError::Store(StoreError::Backend(e.to_string())))?;
    token_versions.extend_from_slice(&salt);
    b.put(keys::TOKEN_VERSION, token_versions);
    let mut journal_added = 0;
    for (k, v) in journal {
        if store.get(&k)?.is_none() {
            b.put(k, v);
            journal_added += 1;
        }
    }
    store.commit(b).await?;
    let failed = |e: crate::error::Error| BackupError::Store(StoreError::Backend(e.to_string()));
    let erased_again = crate::engine::replay_erasures(store)
        .await
        .map_err(failed)?
        .len() as u64;
    let (b, revoked_again) = crate::auth::credentials::replay_revocations(store).map_err(failed)?;
    store.commit(b).await?;
    store.flush()?;
    Ok(Restored {
        backup,
        journal_added,
        erased_again,
        revoked_again,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keys::DerivationSeed;
    use crate::store::sled::{Durability, SledStore};

    fn key(n: u8) -> BackupKey {
        BackupKey::derive(&DerivationSeed::from_bytes(&[n; 32]))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_backup_round_trips_and_any_change_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("a"), 1 << 20, Durability::Flush).unwrap();
        use crate::engine::records::WrappedDek;
        use prost::Message;
        // A record as stored (its key in slot 4), and one as a backup made
        // before key slots holds it (its key inside).
        let stored = |slot: u64, wrapped: &[u8]| SubjectRecord {
            deks: vec![WrappedDek {
                version: 1,
                wrapped: wrapped.to_vec(),
                encryptions: 1,
            }],
            active_dek: 1,
            slot,
            ..Default::default()
        };
        let mut b = Batch::new();
        b.put(keys::SEED, b"wrapped seed".to_vec());
        b.put_key(4, 1, b"wrapped dek".to_vec());
        b.put(keys::slot(4), b"s1".to_vec());
        b.put(keys::subject("s1"), stored(4, b"").encode_to_vec());
        b.put(keys::token("t1"), b"s1".to_vec());
        b.put(keys::erased("s0"), b"receipt".to_vec());
        b.put(keys::revoked("c0"), 7i64.to_be_bytes().to_vec());
        store.commit(b).await.unwrap();
        store.flush().unwrap();
        let mut bytes = Vec::new();
        let stats = write(&store, &key(1), &mut bytes, false).unwrap();
        assert_eq!(
            (
                stats.records,
                stats.entries,
                stats.erasures,
                stats.revocations
            ),
            (1, 5, 1, 1)
        );
        let (head, read_stats) = verify(bytes.as_slice(), &key(1)).unwrap();
        assert_eq!(read_stats, stats);
        assert_eq!(
            head,
            Header {
                journal_only: false,
                wrapped_seed: b"wrapped seed".to_vec()
            }
        );
        assert!(matches!(
            verify(bytes.as_slice(), &key(2)),
            Err(BackupError::NotAuthentic(_))
        ));
        let other = SledStore::open(&dir.path().join("b"), 1 << 20, Durability::Flush).unwrap();
        apply(&other, bytes.as_slice(), &key(1)).await.unwrap();
        other.flush().unwrap();
        // The key goes back into its slot, not into the record.
        assert_eq!(
            other.get(&keys::subject("s1")).unwrap().unwrap(),
            stored(4, b"").encode_to_vec()
        );
        assert_eq!(other.keys(4).unwrap(), vec![(1, b"wrapped dek".to_vec())]);
        assert_eq!(other.get(&keys::token("t1")).unwrap().unwrap(), b"s1");
        // A record of the layout before key slots gets a slot of its own.
        let mut batch = Batch::new();
        let mut next = 1;
        into_slot(
            keys::subject("old"),
            &stored(0, b"inline key").encode_to_vec(),
            &mut next,
            &mut batch,
        )
        .unwrap();
        other.apply(batch).unwrap();
        let moved = SubjectRecord::decode(
            other
                .get(&keys::subject("old"))
                .unwrap()
                .unwrap()
                .as_slice(),
        )
        .unwrap();
        assert_eq!((moved.slot, next), (1, 2));
        assert!(moved.deks[0].wrapped.is_empty());
        assert_eq!(other.keys(1).unwrap(), vec![(1, b"inline key".to_vec())]);
        assert_eq!(other.get(&keys::slot(1)).unwrap().unwrap(), b"old");
        assert_eq!(journal(bytes.as_slice(), &key(1)).unwrap().len(), 2);
        let mut journal_only = Vec::new();
        let j = write(&store, &key(1), &mut journal_only, true).unwrap();
        assert_eq!((j.records, j.entries, j.revocations), (0, 2, 1));
        assert!(header(journal_only.as_slice()).unwrap().journal_only);
        assert_eq!(journal(journal_only.as_slice(), &key(1)).unwrap().len(), 2);
        for at in [
            3,
            MAGIC.len(),
            MAGIC.len() + 5,
            bytes.len() / 2,
            bytes.len() - 40,
            bytes.len() - 1,
        ] {
            let mut changed = bytes.clone();
            changed[at] ^= 1;
            assert!(verify(changed.as_slice(), &key(1)).is_err(), "byte {at}");
        }
        assert!(verify(&bytes[..bytes.len() - 1], &key(1)).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(verify(longer.as_slice(), &key(1)).is_err());
        // A version-1 backup is refused whatever its checksum.
        let mut v1 = MAGIC_V1.to_vec();
        v1.extend_from_slice(&bytes[MAGIC.len()..]);
        let err = verify(v1.as_slice(), &key(1)).unwrap_err().to_string();
        assert!(err.contains("version-1"), "{err}");
    }

    /// A value changed and the frame count kept: only the tag catches it,
    /// and the error names no value.
    #[test]
    fn a_changed_value_fails_the_tag() {
        let mut f = Framer {
            out: Vec::new(),
            mac: key(1).start(),
            frames: 0,
            error: None,
        };
        f.put(MAGIC);
        f.put(&[KIND_FULL]);
        f.field(b"seed");
        f.frame(ENTRY, b"tok/t1", b"secret-pointer");
        f.put(&[END]);
        f.put(&1u64.to_be_bytes());
        let tag = f.mac.finish();
        let mut bytes = f.out;
        bytes.extend_from_slice(&tag);
        assert!(verify(bytes.as_slice(), &key(1)).is_ok());
        let at = bytes.windows(6).position(|w| w == b"secret").unwrap();
        bytes[at] = b'S';
        let err = verify(bytes.as_slice(), &key(1)).unwrap_err().to_string();
        assert!(err.contains("does not verify"), "{err}");
        assert!(!err.contains("ecret"), "{err}");
    }
}
