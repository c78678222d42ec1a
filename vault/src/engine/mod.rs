//! The vault's core: tokenize, detokenize, look up and correct values.
//!
//! The engine takes validated input (see [`types`]) and works on the store
//! and keyring. Writes of one subject are serialised by a striped lock (the
//! read-modify-write of its record); different subjects proceed in parallel,
//! and every write is one atomic, durable batch.

mod export;
mod lifecycle;
pub mod records;
mod rekey;
mod retention;
pub use export::{Companion, ExportedValue, SubjectData, ValueState};
pub(crate) use lifecycle::replay_erasures;
pub use rekey::{CompromiseStats, RewrapState, RewrapStats};
pub use retention::SweepStats;
pub mod types;

use crate::cards::cvv::{CvvVault, Held};
use crate::crypto::ct_eq;
use crate::crypto::keyring::Keyring;
use crate::crypto::keys::DataKey;
use crate::error::{Error, Result};
use crate::policy::Reveal;
use crate::schema::{FieldDef, Validator};
use crate::store::{Batch, Store, keys};
use crate::tokens::Token;
use prost::Message;
use records::{FieldEntry, SubjectRecord, WrappedDek};
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use types::{PolicyVersion, Purpose, SubjectId};
use zeroize::Zeroizing;

/// Number of record cache shards (each behind its own mutex).
const CACHE_SHARDS: usize = 16;
/// Number of lock stripes serialising writes per subject.
const LOCK_STRIPES: usize = 1024;

/// Days a KEK wraps new data keys after it is made (NIST SP 800-57: up to
/// two years for a key-wrapping key's originator use; one year here).
pub const DEFAULT_KEK_CRYPTOPERIOD_DAYS: u32 = 365;

/// Days before a KEK's cryptoperiod ends that the vault warns.
pub const DEFAULT_KEK_WARNING_DAYS: u32 = 30;

/// Values a subject's DEK seals before it is replaced (2^24: far under the
/// 2^32 random-nonce limit of AES-GCM, NIST SP 800-38D).
pub const DEFAULT_DEK_MAX_ENCRYPTIONS: u64 = 1 << 24;
/// Most tokens a look-up returns; a look-up that would return more fails
/// `RESOURCE_EXHAUSTED` rather than leave any subject out unsaid.
pub const MAX_LOOKUP_RESULTS: usize = 256;
/// Most index entries one look-up reads (each costs a subject record read):
/// beyond it the look-up fails `RESOURCE_EXHAUSTED`, never answers from a
/// part of the entries.
pub const MAX_LOOKUP_SCAN: usize = 4096;
/// Index entries read per page of a look-up.
const LOOKUP_PAGE: usize = 256;
/// Draws of a card token before giving up on finding a free one (each is
/// taken with a chance of at most the vault's share of the token space).
const CARD_TOKEN_DRAWS: usize = 32;

/// Where the engine gets the time; tests move it.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Seconds since the Unix epoch.
    fn now(&self) -> i64;

    /// Microseconds since the Unix epoch.
    fn now_micros(&self) -> i64 {
        self.now().saturating_mul(1_000_000)
    }
}

/// The operating system's clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }

    fn now_micros(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
    }
}

/// The operating system's clock shifted by a fixed number of seconds
/// (`VAULT_TEST_CLOCK_OFFSET_SECS`: tests and drills only).
#[derive(Debug)]
pub struct OffsetClock(pub i64);

impl Clock for OffsetClock {
    fn now(&self) -> i64 {
        SystemClock.now().saturating_add(self.0)
    }

    fn now_micros(&self) -> i64 {
        SystemClock
            .now_micros()
            .saturating_add(self.0.saturating_mul(1_000_000))
    }
}

/// A write's audit event and the log to write it to, durable before the
/// data (see [`crate::audit::AuditLog::record_then`]). The engine fills in
/// the items it touched.
#[derive(Debug)]
pub struct Audited<'a> {
    /// The audit log.
    pub log: &'a crate::audit::AuditLog,
    /// The event so far (who, what, why).
    pub event: crate::audit::AuditEvent,
}

fn item(field: &str, token: &str, disclosure: &str, subject: &str) -> crate::audit::AuditItem {
    crate::audit::AuditItem {
        field: field.to_owned(),
        token: token.to_owned(),
        disclosure: disclosure.to_owned(),
        subject_id: subject.to_owned(),
    }
}

/// One field of a tokenize request, validated and canonical.
pub struct NewValue {
    /// The field's definition.
    pub field: Arc<FieldDef>,
    /// The canonical value.
    pub value: Zeroizing<String>,
}

/// Most values (entries, each with its token) one subject may hold: its
/// record is rewritten whole by every write, so a caller that stores the
/// same card again and again must not make it grow without end.
pub const MAX_SUBJECT_ENTRIES: usize = 4096;

/// What a Tokenize collects with its values, and what its caller may do.
pub struct Collect<'a> {
    /// The purposes the subject consents to with this collection (none:
    /// unchanged).
    pub purposes: &'a [Purpose],
    /// The privacy-policy version the data is collected under ("":
    /// unchanged).
    pub policy_version: &'a PolicyVersion,
    /// The end of travel, the retention anchor of travel data.
    pub travel_end: Option<types::TravelEnd>,
    /// Whether the caller may change the consent of a subject already
    /// stored (`set_consent`): without it, the consent a Tokenize gives for
    /// an existing subject is left as held (and the event says so).
    pub may_set_consent: bool,
    /// Whether the caller may be handed back the existing token of a value
    /// it stores again: only a caller that could see or look the value up
    /// anyway, or else the answer would confirm a guess (an equality oracle).
    pub may_dedupe: &'a (dyn Fn(&FieldDef, &SubjectRecord) -> bool + Send + Sync),
}

impl std::fmt::Debug for Collect<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collect")
            .field("purposes", &self.purposes)
            .field("may_set_consent", &self.may_set_consent)
            .finish_non_exhaustive()
    }
}

/// What detokenizing one token found.
pub enum Found {
    /// The token exists and the caller may see it: its field, and its value
    /// in clear, partial or masked as the decision said.
    Value {
        /// The field's definition.
        field: Arc<FieldDef>,
        /// The subject the token belongs to.
        subject: Arc<str>,
        /// [`Reveal::Plain`], [`Reveal::Partial`] or [`Reveal::Masked`].
        reveal: Reveal,
        /// The canonical value, or its mask.
        value: Zeroizing<String>,
        /// A card number's brand.
        brand: Option<&'static str>,
        /// A CVV taken out for this one reveal: give it back if the reveal
        /// fails ([`Engine::put_back_cvv`]).
        held: Option<Held>,
    },
    /// The token exists and the caller may see it, but its value is gone: a
    /// CVV after its one reveal, its time to live, or a restart.
    Expired {
        /// The field's definition.
        field: Arc<FieldDef>,
        /// The subject the token belongs to.
        subject: Arc<str>,
    },
    /// The token exists but the decision denied it (nothing was decrypted).
    Denied {
        /// The field's definition.
        field: Arc<FieldDef>,
        /// The subject the token belongs to.
        subject: Arc<str>,
    },
    /// The token's subject was erased; the caller may see the field.
    Erased {
        /// The field's definition.
        field: Arc<FieldDef>,
    },
    /// No such token.
    NotFound,
}

/// Where a token points.
enum Pointer {
    /// To a subject.
    Live(Arc<str>),
    /// To nothing any more: its subject was erased; the token's field.
    Erased(String),
}

/// A subject one Detokenize reached: its record (`None` if gone) and the
/// DEKs opened for it, by version.
struct Reached {
    sid: Arc<str>,
    record: Option<Arc<SubjectRecord>>,
    deks: Vec<(u32, Arc<DataKey>)>,
}

/// Caches of what reads need from the store: token → subject pointers (which
/// never change while the token exists) and decoded subject records. They
/// hold ciphertexts and wrapped keys only, never a plaintext value.
///
/// Writers put the record they committed (under the subject's lock) and bump
/// their shard's generation; readers that missed fill the cache only if no
/// write reached the shard since their read began, so a slow reader can never
/// put back a record older than one a writer committed.
struct RecordCache {
    pointers: Vec<std::sync::Mutex<lru::LruCache<String, Arc<str>>>>,
    subjects: Vec<std::sync::Mutex<SubjectShard>>,
    hasher: std::collections::hash_map::RandomState,
}

struct SubjectShard {
    records: lru::LruCache<Arc<str>, Arc<SubjectRecord>>,
    /// Bumped by every write-through and every forget.
    generation: u64,
}

/// Either a cached record, or the generation a reader must quote to fill.
enum CacheRead {
    Hit(Arc<SubjectRecord>),
    Miss(u64),
}

impl RecordCache {
    fn new(entries: usize) -> Self {
        let per = std::num::NonZeroUsize::new((entries / CACHE_SHARDS).max(1))
            .unwrap_or(std::num::NonZeroUsize::MIN);
        Self {
            pointers: (0..CACHE_SHARDS)
                .map(|_| std::sync::Mutex::new(lru::LruCache::new(per)))
                .collect(),
            subjects: (0..CACHE_SHARDS)
                .map(|_| {
                    std::sync::Mutex::new(SubjectShard {
                        records: lru::LruCache::new(per),
                        generation: 0,
                    })
                })
                .collect(),
            hasher: Default::default(),
        }
    }

    fn shard(&self, key: &str) -> usize {
        usize::try_from(self.hasher.hash_one(key) % CACHE_SHARDS as u64).unwrap_or(0)
    }

    fn pointer(&self, token: &str) -> Option<Arc<str>> {
        self.pointers[self.shard(token)]
            .lock()
            .ok()?
            .get(token)
            .cloned()
    }

    fn put_pointer(&self, token: &str, subject: Arc<str>) {
        if let Ok(mut c) = self.pointers[self.shard(token)].lock() {
            c.put(token.to_owned(), subject);
        }
    }

    /// A cached record, or the generation to quote in [`RecordCache::fill`].
    fn read(&self, subject: &str) -> CacheRead {
        match self.subjects[self.shard(subject)].lock() {
            Ok(mut shard) => match shard.records.get(subject) {
                Some(r) => CacheRead::Hit(r.clone()),
                None => CacheRead::Miss(shard.generation),
            },
            // A poisoned shard is never filled: quote an impossible generation.
            Err(_) => CacheRead::Miss(u64::MAX),
        }
    }

    /// Caches a record a reader loaded, unless a write reached the shard
    /// since the reader's [`RecordCache::read`] returned `generation`.
    fn fill(&self, subject: &str, record: Arc<SubjectRecord>, generation: u64) {
        if let Ok(mut shard) = self.subjects[self.shard(subject)].lock()
            && shard.generation == generation
        {
            shard.records.put(Arc::from(subject), record);
        }
    }

    /// Caches the record a writer just committed.
    fn write_through(&self, subject: &str, record: Arc<SubjectRecord>) {
        if let Ok(mut shard) = self.subjects[self.shard(subject)].lock() {
            shard.generation = shard.generation.wrapping_add(1);
            shard.records.put(Arc::from(subject), record);
        }
    }

    /// Drops a token's pointer.
    fn forget_pointer(&self, token: &str) {
        if let Ok(mut c) = self.pointers[self.shard(token)].lock() {
            c.pop(token);
        }
    }

    /// Drops a subject's record (its state in the store is unknown).
    fn forget_subject(&self, subject: &str) {
        if let Ok(mut shard) = self.subjects[self.shard(subject)].lock() {
            shard.generation = shard.generation.wrapping_add(1);
            shard.records.pop(subject);
        }
    }
}

// Values never reach a log or a panic message through Debug.
impl std::fmt::Debug for NewValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewValue")
            .field("field", &self.field.name)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Found::Value { field, .. } => f
                .debug_struct("Value")
                .field("field", &field.name)
                .finish_non_exhaustive(),
            Found::Denied { field, .. } => f
                .debug_struct("Denied")
                .field("field", &field.name)
                .finish_non_exhaustive(),
            Found::Expired { field, .. } => f
                .debug_struct("Expired")
                .field("field", &field.name)
                .finish_non_exhaustive(),
            Found::Erased { field } => f
                .debug_struct("Erased")
                .field("field", &field.name)
                .finish(),
            Found::NotFound => f.write_str("NotFound"),
        }
    }
}

/// The engine: store, keys and schema together.
pub struct Engine {
    cache: RecordCache,
    store: Arc<dyn Store>,
    keyring: Keyring,
    schema: Arc<crate::schema::Schema>,
    clock: Arc<dyn Clock>,
    locks: Vec<tokio::sync::Mutex<()>>,
    hasher: std::collections::hash_map::RandomState,
    cvv: CvvVault,
    dek_limit: u64,
    rotation: tokio::sync::Mutex<()>,
    rewrap: rekey::RewrapProgress,
    kek_period: i64,
    kek_warning: i64,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("store", &self.store)
            .field("keyring", &self.keyring)
            .finish_non_exhaustive()
    }
}

/// The AAD context of a field value: it binds the ciphertext to its subject,
/// field, token and value version.
fn field_context(subject_id: &str, field: &str, token: &str, value_version: u32) -> Vec<u8> {
    let mut c = Vec::with_capacity(32 + subject_id.len() + field.len() + token.len());
    c.extend_from_slice(b"vault/v1/field");
    for part in [subject_id.as_bytes(), field.as_bytes(), token.as_bytes()] {
        // Lengths are bounded far below u16::MAX at the edge.
        c.extend_from_slice(&u16::try_from(part.len()).unwrap_or(u16::MAX).to_be_bytes());
        c.extend_from_slice(part);
    }
    c.extend_from_slice(&value_version.to_be_bytes());
    c
}

fn decode<M: Message + Default>(bytes: &[u8], what: &'static str) -> Result<M> {
    M::decode(bytes).map_err(|e| Error::decode(what, e))
}

/// The value of `entry` of subject `sid`, opened with `dek` (the DEK of the
/// entry's version). A value that fails its integrity check is logged (its
/// field name only) and is an integrity error.
fn open_value(sid: &str, entry: &FieldEntry, dek: &DataKey) -> Result<Zeroizing<String>> {
    let mut plain = dek
        .open(
            &field_context(sid, &entry.field, &entry.token, entry.value_version),
            &entry.ciphertext,
        )
        .map_err(|e| {
            tracing::error!(field = %entry.field, "a stored value failed its integrity check");
            crypto(e)
        })?;
    // The plaintext moves into the string (no copy); bytes that are not
    // UTF-8 are wiped before they are dropped.
    match String::from_utf8(std::mem::take(&mut *plain)) {
        Ok(text) => Ok(Zeroizing::new(text)),
        Err(e) => {
            zeroize::Zeroize::zeroize(&mut e.into_bytes());
            Err(Error::Integrity)
        }
    }
}

/// A failed decryption is [`Error::Integrity`], anything else internal.
fn crypto(e: crate::crypto::CryptoError) -> Error {
    Error::from(e)
}

impl Engine {
    /// An engine over `store` with `keyring` and `schema`, caching up to
    /// `cache_entries` subject records and as many token pointers, holding
    /// CVVs in `cvv`.
    pub fn new(
        store: Arc<dyn Store>,
        keyring: Keyring,
        schema: Arc<crate::schema::Schema>,
        clock: Arc<dyn Clock>,
        cache_entries: usize,
        cvv: CvvVault,
    ) -> Self {
        let locks = (0..LOCK_STRIPES)
            .map(|_| tokio::sync::Mutex::new(()))
            .collect();
        Self {
            cache: RecordCache::new(cache_entries),
            store,
            keyring,
            schema,
            clock,
            locks,
            hasher: Default::default(),
            cvv,
            dek_limit: DEFAULT_DEK_MAX_ENCRYPTIONS,
            rotation: tokio::sync::Mutex::new(()),
            rewrap: rekey::RewrapProgress::default(),
            kek_period: i64::from(DEFAULT_KEK_CRYPTOPERIOD_DAYS) * 86_400,
            kek_warning: i64::from(DEFAULT_KEK_WARNING_DAYS) * 86_400,
        }
    }

    /// How long a KEK may wrap new data keys after it is made (its
    /// originator-usage period), and how long before its end to warn.
    #[must_use]
    pub fn with_kek_cryptoperiod(mut self, days: u32, warning_days: u32) -> Self {
        self.kek_period = i64::from(days.max(1)) * 86_400;
        self.kek_warning = i64::from(warning_days) * 86_400;
        self
    }

    /// Replaces a subject's DEK once it has sealed `limit` values (at least
    /// 1): the next encryption moves to a new key version.
    #[must_use]
    pub fn with_dek_max_encryptions(mut self, limit: u64) -> Self {
        self.dek_limit = limit.max(1);
        self
    }

    /// The DEK that seals `record`'s next value: the active one, or, when it
    /// has sealed its limit, a new version made active (old values keep
    /// theirs). Counts the encryption.
    fn sealing_dek(
        &self,
        subject_id: &str,
        record: &mut SubjectRecord,
        current: Option<Arc<DataKey>>,
    ) -> Result<Arc<DataKey>> {
        let active = record.active_dek;
        let used = record.dek(active).map_or(0, |d| d.encryptions);
        let dek = if used >= self.dek_limit {
            self.check_wrapping()?;
            let version = active.checked_add(1).ok_or(Error::FailedPrecondition(
                "the subject has used up its key versions",
            ))?;
            let (dek, wrapped) = self.keyring.new_dek(subject_id, version).map_err(crypto)?;
            record.deks.push(WrappedDek {
                version,
                wrapped,
                encryptions: 0,
            });
            record.active_dek = version;
            dek
        } else {
            match current {
                Some(d) if d.version() == active => d,
                _ => self.dek_of(subject_id, record, active)?,
            }
        };
        if let Some(d) = record
            .deks
            .iter_mut()
            .find(|d| d.version == record.active_dek)
        {
            d.encryptions += 1;
        }
        Ok(dek)
    }

    /// The pending CVVs.
    pub fn cvvs(&self) -> &CvvVault {
        &self.cvv
    }

    /// Returns the CVVs of a reveal that failed after they were taken (its
    /// audit event could not be written): nothing was disclosed.
    pub fn put_back_cvv(&self, held: impl IntoIterator<Item = Held>) {
        let now = self.clock.now();
        for h in held {
            self.cvv.put_back(h, now);
        }
    }

    /// A card token for `digits` that no stored token uses (nor one in
    /// `taken`, this request's own).
    fn free_card_token(&self, digits: &str, taken: &[Token]) -> Result<Token> {
        for _ in 0..CARD_TOKEN_DRAWS {
            let t = Token::generate_card(digits).map_err(crypto)?;
            if !taken.contains(&t) && self.store.get(&keys::token(t.as_str()))?.is_none() {
                return Ok(t);
            }
        }
        // Only a vault holding a large share of the tokens of one length and
        // last four gets here.
        Err(Error::ResourceExhausted(
            "no free card token for this number's length and last four",
        ))
    }

    /// Commits `batch` and then `subject`'s new `record` (the commit point),
    /// and keeps the caches in step: the new record on success; on failure
    /// (the store has undone the batch) no record and no DEK of the
    /// subject, so that a key made for a record that was never stored
    /// does not outlive the attempt.
    ///
    /// With an audit event, the event is durable before anything is
    /// written ([`crate::audit::AuditLog::record_then`]), so that a record
    /// that survives a crash never lacks its event.
    async fn commit_subject(
        &self,
        subject: &str,
        record: SubjectRecord,
        mut batch: Batch,
        audit: Option<Audited<'_>>,
    ) -> Result<Arc<SubjectRecord>> {
        batch.put(keys::subject(subject), record.encode_to_vec());
        let write = async { self.store.commit(batch).await.map_err(Error::from) };
        let result = match audit {
            None => write.await,
            Some(Audited { log, event }) => log.record_then(event, write).await,
        };
        match result {
            Ok(()) => {
                let record = Arc::new(record);
                self.cache.write_through(subject, record.clone());
                Ok(record)
            }
            Err(e) => {
                self.cache.forget_subject(subject);
                self.keyring.forget_subject(subject);
                Err(e)
            }
        }
    }

    /// When a new subject `sid` is stored: now, but always after an
    /// erasure of the same id the journal records (even in the same
    /// microsecond, or with the clock set back), so that the erasure journal
    /// never takes the new subject for the erased one.
    fn creation_micros(&self, sid: &str) -> Result<i64> {
        let now = self.clock.now_micros().max(1);
        let Some(journal) = self.store.get(&keys::erased(sid))? else {
            return Ok(now);
        };
        let erased = decode::<vault_proto::v1::ErasureReceiptBody>(&journal, "erasure journal")?
            .erased_at_unix_micros;
        Ok(now.max(erased.saturating_add(1)))
    }

    /// The loaded schema.
    pub fn schema(&self) -> &Arc<crate::schema::Schema> {
        &self.schema
    }

    /// The keyring.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn lock_for(&self, subject_id: &str) -> &tokio::sync::Mutex<()> {
        let i =
            usize::try_from(self.hasher.hash_one(subject_id) % LOCK_STRIPES as u64).unwrap_or(0);
        &self.locks[i]
    }

    fn subject_record(&self, subject_id: &str) -> Result<Option<Arc<SubjectRecord>>> {
        let generation = match self.cache.read(subject_id) {
            CacheRead::Hit(r) => return Ok(Some(r)),
            CacheRead::Miss(g) => g,
        };
        let Some(bytes) = self.store.get(&keys::subject(subject_id))? else {
            return Ok(None);
        };
        let record = Arc::new(decode::<SubjectRecord>(&bytes, "subject")?);
        self.cache.fill(subject_id, record.clone(), generation);
        Ok(Some(record))
    }

    /// Where a token points: its subject (check it in the subject record),
    /// or the field of an erased subject's token.
    fn token_pointer(&self, token: &Token) -> Result<Option<Pointer>> {
        if let Some(s) = self.cache.pointer(token.as_str()) {
            return Ok(Some(Pointer::Live(s)));
        }
        let Some(bytes) = self.store.get(&keys::token(token.as_str()))? else {
            return Ok(None);
        };
        if let Some(field) = bytes.strip_prefix(&[keys::TOMBSTONE]) {
            return Ok(String::from_utf8(field.to_vec()).ok().map(Pointer::Erased));
        }
        let Ok(sid) = String::from_utf8(bytes) else {
            return Ok(None);
        };
        let sid: Arc<str> = Arc::from(sid);
        self.cache.put_pointer(token.as_str(), sid.clone());
        Ok(Some(Pointer::Live(sid)))
    }

    /// The subject a live token points to.
    fn token_subject(&self, token: &Token) -> Result<Option<Arc<str>>> {
        Ok(match self.token_pointer(token)? {
            Some(Pointer::Live(s)) => Some(s),
            _ => None,
        })
    }

    fn dek_of(
        &self,
        subject_id: &str,
        record: &SubjectRecord,
        version: u32,
    ) -> Result<Arc<DataKey>> {
        let wrapped = record.dek(version).ok_or(Error::Integrity)?;
        self.keyring
            .dek(subject_id, version, &wrapped.wrapped)
            .map_err(crypto)
    }

    fn blind(&self, field: &FieldDef, value: &str) -> [u8; 32] {
        self.keyring
            .index()
            .blind(&field.name, &field.index_form(value))
    }

    /// Stores `values` of `subject` and returns one token per value, in order.
    /// Values of look-up fields that the subject already has keep their
    /// token, for a caller that `collect.may_dedupe` allows; any other
    /// caller gets a new token for every value.
    ///
    /// Writes token and index pointers first and the subject record last: the
    /// subject record is the commit.
    pub async fn tokenize(
        &self,
        subject: &SubjectId,
        values: &[NewValue],
        collect: &Collect<'_>,
        mut audit: Option<Audited<'_>>,
    ) -> Result<Vec<Token>> {
        let Collect {
            purposes,
            policy_version,
            travel_end,
            may_set_consent,
            may_dedupe,
        } = *collect;
        let sid = subject.as_str();
        let _guard = self.lock_for(sid).lock().await;
        let now = self.clock.now();
        let mut batch = Batch::new();
        let existing = self.subject_record(sid)?;
        // A new subject has no committed entries, so no index entry of its
        // can be live: skip the dedupe reads.
        let is_new = existing.is_none();
        let mut record = match existing {
            Some(r) => SubjectRecord::clone(&r),
            None => {
                self.check_wrapping()?;
                let (_, wrapped) = self.keyring.new_dek(sid, 1).map_err(crypto)?;
                SubjectRecord {
                    deks: vec![WrappedDek {
                        version: 1,
                        wrapped,
                        encryptions: 0,
                    }],
                    active_dek: 1,
                    created_at: now,
                    created_at_micros: self.creation_micros(sid)?,
                    ..Default::default()
                }
            }
        };
        // Values past their retention are shredded before this request's
        // activity is recorded (it must not revive them), and the dedupe
        // below then finds none of them.
        self.settle_expired(sid, &mut record, &mut batch, now);
        // Consent given with the values: a new subject's is collected with
        // them; an existing subject's changes only for a caller that may set
        // consent. For any other caller it is left as held (not refused, so
        // that the answer does not tell whether the guess matched), and the
        // event says so.
        let mut given: Vec<String> = purposes.iter().map(|p| p.as_str().to_owned()).collect();
        given.sort();
        given.dedup();
        let mut held = record.purposes.clone();
        held.sort();
        let purposes_differ = !purposes.is_empty() && given != held;
        let version_differs =
            !policy_version.as_str().is_empty() && record.policy_version != policy_version.as_str();
        let consent_asked = !is_new && (purposes_differ || version_differs);
        let consent_changed = consent_asked && may_set_consent;
        if is_new || consent_changed {
            if !purposes.is_empty() {
                record.purposes = given;
            }
            if !policy_version.as_str().is_empty() {
                record.policy_version = policy_version.as_str().to_owned();
            }
        }
        if record.entries.len().saturating_add(values.len()) > MAX_SUBJECT_ENTRIES {
            return Err(Error::ResourceExhausted(
                "the subject holds the most values a subject may hold",
            ));
        }
        let mut dek = self.dek_of(sid, &record, record.active_dek)?;
        let cvvs = values.iter().filter(|nv| nv.field.memory_only()).count();
        if cvvs > 0 && !self.cvv.has_room(cvvs) {
            return Err(Error::ResourceExhausted(
                "too many CVVs are waiting for authorisation; try again later",
            ));
        }
        // Who stores the values: the audited caller.
        let (by, by_role) = audit
            .as_ref()
            .map(|a| (a.event.principal.clone(), a.event.role.clone()))
            .unwrap_or_default();
        let mut out = Vec::with_capacity(values.len());
        let mut keep_in_memory = Vec::with_capacity(cvvs);
        for nv in values {
            let field = &nv.field;
            if field.memory_only() {
                // The record keeps that the token exists, never the value.
                let token = Token::generate().map_err(crypto)?;
                batch.put(keys::token(token.as_str()), sid.as_bytes().to_vec());
                record.entries.push(FieldEntry {
                    token: token.as_str().to_owned(),
                    field: field.name.clone(),
                    value_version: 1,
                    dek_version: dek.version(),
                    ciphertext: Vec::new(),
                    created_at: now,
                    updated_at: now,
                    blind: Vec::new(),
                    stored_by: by.clone(),
                    stored_by_role: by_role.clone(),
                    ..Default::default()
                });
                keep_in_memory.push((token.clone(), nv.value.clone()));
                out.push(token);
                continue;
            }
            let blind = field.lookup.then(|| self.blind(field, &nv.value));
            if let Some(blind) = &blind
                && !is_new
                && may_dedupe(field, &record)
                && let Some(existing) = self.store.get(&keys::index(blind, sid))?
            {
                let existing = String::from_utf8(existing)
                    .ok()
                    .and_then(|t| Token::parse(&t));
                let live = existing.filter(|t| {
                    record
                        .entry(t.as_str())
                        // Not one found expired under a legal hold: it
                        // would answer EXPIRED once the hold is lifted.
                        .is_some_and(|e| {
                            e.field == field.name && e.expired_at == 0 && ct_eq(&e.blind, blind)
                        })
                });
                if let Some(token) = live {
                    out.push(token);
                    continue;
                }
            }
            let token = if field.validator == Validator::CardNumber {
                self.free_card_token(&nv.value, &out)?
            } else {
                Token::generate().map_err(crypto)?
            };
            dek = self.sealing_dek(sid, &mut record, Some(dek))?;
            let ciphertext = dek
                .seal(
                    &field_context(sid, &field.name, token.as_str(), 1),
                    nv.value.as_bytes(),
                )
                .map_err(crypto)?;
            batch.put(keys::token(token.as_str()), sid.as_bytes().to_vec());
            if let Some(blind) = &blind {
                batch.put(keys::index(blind, sid), token.as_str().as_bytes().to_vec());
            }
            record.entries.push(FieldEntry {
                token: token.as_str().to_owned(),
                field: field.name.clone(),
                value_version: 1,
                dek_version: dek.version(),
                ciphertext,
                created_at: now,
                updated_at: now,
                blind: blind.map(|b| b.to_vec()).unwrap_or_default(),
                stored_by: by.clone(),
                stored_by_role: by_role.clone(),
                ..Default::default()
            });
            out.push(token);
        }
        record.last_activity = now;
        if let Some(t) = travel_end {
            record.travel_end = t.0;
        }
        if let Some(a) = audit.as_mut() {
            a.event.items = values
                .iter()
                .zip(&out)
                .map(|(nv, t)| item(&nv.field.name, t.as_str(), "STORED", sid))
                .collect();
            if consent_asked && !consent_changed {
                a.event.detail =
                    "consent given with the values not applied: changing a stored subject's consent needs set_consent".into();
            }
            if consent_changed {
                a.event.detail = format!(
                    "consent changed by tokenize: purposes [{}] policy_version {}",
                    record.purposes.join(","),
                    record.policy_version
                );
            }
        }
        self.commit_subject(sid, record, batch, audit).await?;
        let subject: Arc<str> = Arc::from(sid);
        for (token, value) in keep_in_memory {
            self.cvv.put(token.as_str(), subject.clone(), value, now);
        }
        Ok(out)
    }

    /// Finds the value behind each token, in order, and asks `decide` what
    /// the caller may see of it (given the field and the subject's record);
    /// only values it allows are decrypted.
    pub async fn detokenize(
        &self,
        tokens: &[Token],
        decide: impl FnMut(&FieldDef, &SubjectRecord) -> Reveal,
    ) -> Result<Vec<Found>> {
        let mut out = Vec::with_capacity(tokens.len());
        if let Err(e) = self.reveal_each(tokens, decide, &mut out) {
            // Nothing is disclosed: CVVs already taken wait for another try.
            self.put_back_cvv(out.into_iter().filter_map(|f| match f {
                Found::Value { held, .. } => held,
                _ => None,
            }));
            return Err(e);
        }
        Ok(out)
    }

    /// [`Engine::detokenize`]'s work, appending to `out` token by token.
    fn reveal_each(
        &self,
        tokens: &[Token],
        mut decide: impl FnMut(&FieldDef, &SubjectRecord) -> Reveal,
        out: &mut Vec<Found>,
    ) -> Result<()> {
        // The subjects this request reached, each with the DEKs it opened:
        // tokens of one subject (the common case) share its record and DEK.
        let mut reached: Vec<Reached> = Vec::new();
        let mut index: HashMap<Arc<str>, usize> = HashMap::new();
        // The subject the previous token led to.
        let mut previous: Option<usize> = None;
        let now = self.clock.now();
        for token in tokens {
            // A token held by the record the previous token led to needs no
            // look-up of its pointer: a token is in its own subject's record
            // only, so it points there.
            let held = previous.and_then(|i| {
                let p = reached[i].record.as_ref()?.position(token.as_str())?;
                Some((i, p))
            });
            let (at, position) = match held {
                Some((i, position)) => (i, Some(position)),
                None => {
                    let sid = match self.token_pointer(token)? {
                        Some(Pointer::Live(sid)) => sid,
                        Some(Pointer::Erased(field)) => {
                            out.push(self.erased_token(&field, &mut decide));
                            continue;
                        }
                        None => {
                            out.push(Found::NotFound);
                            continue;
                        }
                    };
                    let i = match index.get(&sid) {
                        Some(&i) => i,
                        None => {
                            let record = self.subject_record(&sid)?;
                            index.insert(sid.clone(), reached.len());
                            reached.push(Reached {
                                sid,
                                record,
                                deks: Vec::new(),
                            });
                            reached.len() - 1
                        }
                    };
                    (i, None)
                }
            };
            previous = Some(at);
            let Reached { sid, record, deks } = &mut reached[at];
            // The entry found above is not searched for again.
            let entry = record.as_deref().and_then(|r| {
                let e = match position {
                    Some(p) => r.entries.get(p),
                    None => r.entry(token.as_str()),
                };
                e.map(|e| (r, e))
            });
            // A field removed from the schema is no longer served.
            let Some((record, entry, field)) =
                entry.and_then(|(r, e)| self.schema.field(&e.field).map(|f| (r, e, f.clone())))
            else {
                out.push(Found::NotFound);
                continue;
            };
            let reveal = decide(&field, record);
            if reveal == Reveal::Denied {
                out.push(Found::Denied {
                    field,
                    subject: sid.clone(),
                });
                continue;
            }
            if field.memory_only() {
                out.push(self.reveal_cvv(token, field, sid.clone(), reveal, now));
                continue;
            }
            // Past its retention (swept or not yet): gone, nothing decrypted.
            if self.is_expired_as(record, entry, &field, now) {
                out.push(Found::Expired {
                    field,
                    subject: sid.clone(),
                });
                continue;
            }
            let dek = match deks.iter().find(|(v, _)| *v == entry.dek_version) {
                Some((_, d)) => d.clone(),
                None => {
                    let d = self.dek_of(sid, record, entry.dek_version)?;
                    deks.push((entry.dek_version, d.clone()));
                    d
                }
            };
            let value = open_value(sid, entry, &dek)?;
            let brand = (field.validator == Validator::CardNumber)
                .then(|| crate::cards::Brand::of(&value).name());
            let value = match reveal {
                Reveal::Masked => field.masked(&value),
                Reveal::Partial => field.partial(&value),
                _ => value,
            };
            out.push(Found::Value {
                field,
                subject: sid.clone(),
                reveal,
                value,
                brand,
                held: None,
            });
        }
        Ok(())
    }

    /// An erased subject's token: `ERASED` to a caller who could see the
    /// field (judged for a subject of no consent), `DENIED` to anyone else.
    fn erased_token(
        &self,
        field: &str,
        decide: &mut impl FnMut(&FieldDef, &SubjectRecord) -> Reveal,
    ) -> Found {
        let Some(field) = self.schema.field(field).cloned() else {
            return Found::NotFound;
        };
        if decide(&field, &SubjectRecord::default()) == Reveal::Denied {
            Found::Denied {
                field,
                subject: Arc::from(""),
            }
        } else {
            Found::Erased { field }
        }
    }

    /// A CVV token's answer: in clear only once (taken out of memory), a
    /// mask that shows nothing while it waits, and expired once it is gone.
    fn reveal_cvv(
        &self,
        token: &Token,
        field: Arc<FieldDef>,
        subject: Arc<str>,
        reveal: Reveal,
        now: i64,
    ) -> Found {
        let held = match reveal {
            Reveal::Plain => self.cvv.take(token.as_str(), &subject, now),
            _ => None,
        };
        let value = match &held {
            Some(h) => Zeroizing::new(h.value().to_owned()),
            // Masks of a CVV are computed over nothing: no digit, no length.
            None if reveal != Reveal::Plain
                && self.cvv.is_pending(token.as_str(), &subject, now) =>
            {
                field.masked("")
            }
            None => return Found::Expired { field, subject },
        };
        Found::Value {
            field,
            subject,
            reveal,
            value,
            brand: None,
            held,
        }
    }

    /// The tokens whose value in `field` is exactly `value` (canonical form),
    /// of the subjects `allow` accepts, every one of them: each index entry
    /// of the value is read (and checked against its subject record), page
    /// by page. More than [`MAX_LOOKUP_RESULTS`] matches, or more than
    /// [`MAX_LOOKUP_SCAN`] entries to read, fail `RESOURCE_EXHAUSTED`: an
    /// answer is complete or it is not given (entries that sort first, live
    /// or stale, cannot hide a subject behind them).
    pub fn lookup(
        &self,
        field: &FieldDef,
        value: &str,
        mut allow: impl FnMut(&SubjectRecord) -> bool,
    ) -> Result<Vec<Token>> {
        let blind = self.blind(field, value);
        let prefix = keys::index_prefix(&blind);
        let now = self.clock.now();
        let mut out = Vec::new();
        let mut start = prefix.clone();
        let mut scanned = 0;
        loop {
            let page = self.store.scan_from(&prefix, &start, LOOKUP_PAGE)?;
            let last_page = page.len() < LOOKUP_PAGE;
            for (key, t) in page {
                scanned += 1;
                if scanned > MAX_LOOKUP_SCAN {
                    return Err(Error::ResourceExhausted(
                        "too many index entries hold this value for one look-up",
                    ));
                }
                if let Some(token) =
                    self.live_index_entry(field, &blind, &key, t, now, &mut allow)?
                {
                    if out.len() == MAX_LOOKUP_RESULTS {
                        return Err(Error::ResourceExhausted(
                            "more subjects hold this value than one look-up returns",
                        ));
                    }
                    out.push(token);
                }
                // The next page starts just after this key.
                start = key;
                start.push(0);
            }
            if last_page {
                return Ok(out);
            }
        }
    }

    /// The token of index entry `key` → `token` of `blind` if its subject
    /// record holds it, live, for `field`, and `allow` accepts the subject.
    fn live_index_entry(
        &self,
        field: &FieldDef,
        blind: &[u8; 32],
        key: &[u8],
        token: Vec<u8>,
        now: i64,
        allow: &mut impl FnMut(&SubjectRecord) -> bool,
    ) -> Result<Option<Token>> {
        let (Some(sid), Ok(token)) = (keys::index_subject(key), String::from_utf8(token)) else {
            return Ok(None);
        };
        let live = self.subject_record(sid)?.is_some_and(|r| {
            r.entry(&token).is_some_and(|e| {
                e.field == field.name && ct_eq(&e.blind, blind) && !self.is_expired(&r, e, now)
            }) && allow(&r)
        });
        Ok(live.then(|| Token::parse(&token)).flatten())
    }

    /// Replaces the value behind `token` with the canonical value `validate`
    /// makes for the token's field (given the subject's record; it may also
    /// refuse). Refused under a legal hold, which keeps the held value.
    /// Returns the new value version.
    pub async fn update(
        &self,
        token: &Token,
        validate: impl FnOnce(&FieldDef, &SubjectRecord) -> Result<Zeroizing<String>>,
        mut audit: Option<Audited<'_>>,
    ) -> Result<u32> {
        let Some(sid) = self.token_subject(token)? else {
            return Err(Error::NotFound("token"));
        };
        let _guard = self.lock_for(&sid).lock().await;
        let current = self.subject_record(&sid)?.ok_or(Error::NotFound("token"))?;
        let mut record = SubjectRecord::clone(&current);
        let field_name = record
            .entry(token.as_str())
            .map(|e| e.field.clone())
            .ok_or(Error::NotFound("token"))?;
        let field = self
            .schema
            .field(&field_name)
            .cloned()
            .ok_or(Error::NotFound("token"))?;
        let value = validate(&field, &record)?;
        // A legal hold preserves what is held as it is (asked after the
        // caller's own checks, so that only a caller who may correct the
        // value learns of the hold).
        if !record.legal_hold_case.is_empty() {
            return Err(Error::FailedPrecondition(
                "the subject is under a legal hold: its values are kept as they are until it is released",
            ));
        }
        let now = self.clock.now();
        if record
            .entry(token.as_str())
            .is_some_and(|e| self.is_expired(&record, e, now))
        {
            return Err(Error::FailedPrecondition(
                "the value is past its retention: store it again with Tokenize",
            ));
        }
        let mut batch = Batch::new();
        self.settle_expired(&sid, &mut record, &mut batch, now);
        let dek = self.sealing_dek(&sid, &mut record, None)?;
        let mut stale_index = None;
        let entry = record
            .entry_mut(token.as_str())
            .ok_or(Error::NotFound("token"))?;
        let version = entry
            .value_version
            .checked_add(1)
            .ok_or(Error::FailedPrecondition("too many corrections"))?;
        if field.lookup {
            let blind = self.blind(&field, &value);
            if !ct_eq(&entry.blind, &blind)
                && let Ok(old) = <[u8; 32]>::try_from(entry.blind.as_slice())
            {
                let old_key = keys::index(&old, &sid);
                // Another token of the subject may have taken the entry over.
                if self
                    .store
                    .get(&old_key)?
                    .is_some_and(|t| ct_eq(&t, token.as_str().as_bytes()))
                {
                    stale_index = Some(old_key);
                }
            }
            batch.put(
                keys::index(&blind, &sid),
                token.as_str().as_bytes().to_vec(),
            );
            entry.blind = blind.to_vec();
        }
        entry.ciphertext = dek
            .seal(
                &field_context(&sid, &field.name, token.as_str(), version),
                value.as_bytes(),
            )
            .map_err(crypto)?;
        entry.value_version = version;
        entry.dek_version = dek.version();
        entry.updated_at = now;
        if let Some(a) = audit.as_ref() {
            entry.updated_by.clone_from(&a.event.principal);
            entry.updated_by_role.clone_from(&a.event.role);
        }
        record.last_activity = now;
        if let Some(a) = audit.as_mut() {
            a.event.items = vec![item(&field.name, token.as_str(), "UPDATED", &sid)];
            a.event.subject_id = sid.to_string();
        }
        self.commit_subject(&sid, record, batch, audit).await?;
        // The old index entry goes after the commit: until then it still
        // points at the committed old value. It is only a hint (every read
        // checks it), so a failure here is logged, not returned.
        if let Some(k) = stale_index {
            let mut cleanup = Batch::new();
            cleanup.delete(k);
            if let Err(e) = self.store.commit(cleanup).await {
                tracing::warn!(error = %e, "could not remove a stale index entry");
            }
        }
        Ok(version)
    }
}

impl Engine {
    /// The engine's clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }
}

/// An engine on a fresh store in `dir` with a fixed root key, the default
/// schema and the system clock (unit tests).
#[cfg(test)]
pub(crate) async fn test_engine(dir: &std::path::Path) -> Arc<Engine> {
    test_engine_with_clock(dir, Arc::new(SystemClock)).await
}

/// [`test_engine`] with `clock`.
#[cfg(test)]
pub(crate) async fn test_engine_with_clock(
    dir: &std::path::Path,
    clock: Arc<dyn Clock>,
) -> Arc<Engine> {
    use crate::store::sled::{Durability, SledStore};
    let store: Arc<dyn Store> =
        Arc::new(SledStore::open(&dir.join("data"), 1 << 20, Durability::Flush).unwrap());
    let root = crate::crypto::keyring::Root::Key(Box::new(
        crate::crypto::keys::RootKey::from_bytes(&[7; 32]),
    ));
    let keyring = Keyring::open(root, store.as_ref(), 16, clock.now())
        .await
        .unwrap();
    let schema = Arc::new(crate::schema::Schema::default_schema(4096).unwrap());
    Arc::new(Engine::new(
        store,
        keyring,
        schema,
        clock,
        16,
        CvvVault::new(900, 16),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_values_prints_no_value() {
        let schema = crate::schema::Schema::default_schema(4096).unwrap();
        let field = schema.field("email").unwrap().clone();
        let nv = NewValue {
            field: field.clone(),
            value: Zeroizing::new("secret.marker@example.com".into()),
        };
        let found = Found::Value {
            field,
            subject: Arc::from("s"),
            reveal: Reveal::Plain,
            value: Zeroizing::new("secret.marker@example.com".into()),
            brand: None,
            held: None,
        };
        let shown = format!("{nv:?} {found:?} {:?}", Found::NotFound);
        assert!(!shown.contains("secret.marker"), "{shown}");
        assert!(shown.contains("email"));
    }

    /// A reader that loaded a record before a writer committed a newer one
    /// cannot put the older one back into the cache.
    #[test]
    fn a_slow_reader_never_caches_a_stale_record() {
        let cache = RecordCache::new(64);
        let old = Arc::new(SubjectRecord {
            last_activity: 1,
            ..Default::default()
        });
        let new = Arc::new(SubjectRecord {
            last_activity: 2,
            ..Default::default()
        });
        let CacheRead::Miss(g) = cache.read("s") else {
            panic!("empty cache")
        };
        // The reader has read `old` from the store; now a writer commits `new`.
        cache.write_through("s", new.clone());
        cache.fill("s", old.clone(), g);
        let CacheRead::Hit(r) = cache.read("s") else {
            panic!("written through")
        };
        assert_eq!(r.last_activity, 2);
        // Same when the writer's entry was dropped in between.
        cache.forget_subject("s");
        cache.fill("s", old.clone(), g);
        assert!(matches!(cache.read("s"), CacheRead::Miss(_)));
        // A reader with no write in between does fill.
        let CacheRead::Miss(g) = cache.read("s") else {
            panic!()
        };
        cache.fill("s", new, g);
        assert!(matches!(cache.read("s"), CacheRead::Hit(_)));
    }

    #[test]
    fn field_context_binds_every_part_unambiguously() {
        let a = field_context("ab", "c", "tok_x", 1);
        assert_ne!(a, field_context("a", "bc", "tok_x", 1));
        assert_ne!(a, field_context("ab", "c", "tok_y", 1));
        assert_ne!(a, field_context("ab", "c", "tok_x", 2));
        assert!(ct_eq(b"same", b"same") && !ct_eq(b"same", b"sama") && !ct_eq(b"a", b"ab"));
    }
}
