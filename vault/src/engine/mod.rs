//! The vault's core: tokenize, detokenize, look up and correct values.
//!
//! The engine takes validated input (the ids of [`crate::model`], parsed at
//! the API edge) and works on the store and keyring. Writes of one subject
//! are serialised by a striped lock (the read-modify-write of its record);
//! different subjects proceed in parallel, and every write is one durable
//! batch whose last operation makes it visible (see [`crate::store`]).
//!
//! - `tokenize.rs`, `reveal.rs` (detokenize, look-up), `update.rs`: the
//!   request paths; `lifecycle.rs`, `retention.rs`, `export.rs`,
//!   `rekey.rs`: subject rights, retention, keys; `cache.rs`: the record
//!   and pointer caches; `records.rs`: the stored subject record.

mod cache;
mod export;
mod reveal;
mod tokenize;
mod update;
use cache::{CacheRead, RecordCache};
mod lifecycle;
pub mod records;
mod rekey;
mod retention;
pub use export::{Companion, ExportedValue, SubjectData, ValueState};
pub(crate) use lifecycle::replay_erasures;
pub use rekey::{CompromiseStats, RewrapState, RewrapStats};
pub use retention::SweepStats;

use crate::cards::cvv::{CvvVault, Held};
use crate::crypto::ct_eq;
use crate::crypto::keyring::Keyring;
use crate::crypto::keys::DataKey;
use crate::error::{Error, Result};
use crate::model::Reveal;
use crate::model::{Clock, PolicyVersion, Purpose, SubjectId};
use crate::schema::{FieldDef, Validator};
use crate::store::{Batch, Store, keys};
use crate::tokens::Token;
use crate::tokens::locator::{self, Locator};
use prost::Message;
use records::{FieldEntry, SubjectRecord, WrappedDek};
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use zeroize::Zeroizing;

/// Number of record cache shards (each behind its own mutex).
const CACHE_SHARDS: usize = 16;
/// Number of lock stripes serialising writes per subject.
const LOCK_STRIPES: usize = 1024;

/// Key slots a node of a shared store reserves at once.
const SLOT_BLOCK: u64 = 256;

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

use crate::error::Audited;
use crate::model::journal;
use vault_proto::v1::AuditItem;

fn item(field: &str, token: &str, disclosure: &str, subject: &str) -> AuditItem {
    AuditItem {
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
    pub travel_end: Option<crate::model::TravelEnd>,
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

/// Whom a key slot belongs to.
enum SlotOwner {
    /// A subject (its id).
    Subject(String),
    /// An erased subject.
    Erased,
    /// Nobody: never committed (a first Tokenize cut short) or not handed out.
    Nobody,
}

/// A subject one Detokenize reached: its record (`None` if gone) and the
/// DEKs opened for it, by version.
struct Reached {
    sid: Arc<str>,
    record: Option<Arc<SubjectRecord>>,
    deks: Vec<(u32, Arc<DataKey>)>,
}

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
    /// The key slots this run hands out (`None`: not read from the store
    /// yet).
    next_slot: std::sync::Mutex<Option<SlotCounter>>,
    /// Field numbers, as the store records them (`None`: not read yet).
    fields: std::sync::RwLock<Option<FieldNumbers>>,
    /// Held while a field is given a number.
    numbering: tokio::sync::Mutex<()>,
}

/// The key slots one run hands out.
struct SlotCounter {
    /// The next one.
    next: u64,
    /// The end of the block this run may hand out (`u64::MAX` where it
    /// owns the store; on a shared store, the end of its reserved block).
    end: u64,
    /// The first (the slots below it were handed out before this run).
    first: u64,
}

/// The numbers value tokens carry for their fields.
#[derive(Default)]
struct FieldNumbers {
    by_name: HashMap<String, u8>,
    names: HashMap<u8, String>,
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

/// Counts one more value sealed under `record`'s active DEK.
fn count_encryption(record: &mut SubjectRecord) {
    if let Some(d) = record
        .deks
        .iter_mut()
        .find(|d| d.version == record.active_dek)
    {
        d.encryptions += 1;
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
            next_slot: std::sync::Mutex::new(None),
            fields: std::sync::RwLock::new(None),
            numbering: tokio::sync::Mutex::new(()),
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
    /// has sealed its limit, a new one the subject is re-keyed under
    /// ([`Engine::rekey_in`]). Counts the encryption. (A re-key seals every
    /// value of the subject, at most [`MAX_SUBJECT_ENTRIES`]: a limit below
    /// that, a test's, is exceeded by the re-key itself.)
    fn sealing_dek(
        &self,
        subject_id: &str,
        record: &mut SubjectRecord,
        current: Option<Arc<DataKey>>,
        batch: &mut Batch,
    ) -> Result<Arc<DataKey>> {
        let active = record.active_dek;
        let used = record.dek(active).map_or(0, |d| d.encryptions);
        let dek = if used >= self.dek_limit {
            self.rekey_in(subject_id, record, batch)?
        } else {
            match current {
                Some(d) if d.version() == active => d,
                _ => self.dek_of(subject_id, record, active)?,
            }
        };
        count_encryption(record);
        Ok(dek)
    }

    /// Re-keys `record` in `batch`: a new data key of the next version,
    /// every value sealed again under it, the new key written into the
    /// subject's key slot and the old ones shredded once the record is
    /// committed. Returns the new key.
    ///
    /// A record whose key this batch already writes has a fresh key that
    /// nothing durable uses: it is kept (a second new key would go into the
    /// half of the slot that the committed record still needs).
    fn rekey_in(
        &self,
        sid: &str,
        record: &mut SubjectRecord,
        batch: &mut Batch,
    ) -> Result<Arc<DataKey>> {
        let fresh = batch
            .ops()
            .iter()
            .any(|op| matches!(op, crate::store::Op::PutKey { slot, .. } if *slot == record.slot));
        if fresh {
            return self.dek_of(sid, record, record.active_dek);
        }
        self.check_wrapping()?;
        let olds = record
            .deks
            .iter()
            .map(|d| Ok((d.version, self.dek_of(sid, record, d.version)?)))
            .collect::<Result<Vec<_>>>()?;
        let version = olds
            .iter()
            .map(|(v, _)| *v)
            .max()
            .unwrap_or(0)
            .checked_add(1)
            .ok_or(Error::FailedPrecondition(
                "the subject has used up its key versions",
            ))?;
        let (dek, wrapped) = self.keyring.new_dek(sid, version).map_err(crypto)?;
        let mut sealed = 0;
        for e in &mut record.entries {
            if !e.ciphertext.is_empty() {
                let old = olds
                    .iter()
                    .find(|(v, _)| *v == e.dek_version)
                    .map(|(_, d)| d)
                    .ok_or(Error::Integrity)?;
                let plain = open_value(sid, e, old)?;
                let context = field_context(sid, &e.field, &e.token, e.value_version);
                e.ciphertext = dek.seal(&context, plain.as_bytes()).map_err(crypto)?;
                sealed += 1;
            }
            e.dek_version = version;
        }
        for (v, _) in &olds {
            batch.shred_key(record.slot, Some(*v));
        }
        batch.put_key(record.slot, version, wrapped.clone());
        record.deks = vec![WrappedDek {
            version,
            wrapped,
            encryptions: sealed,
        }];
        record.active_dek = version;
        Ok(dek)
    }

    /// A key slot no subject has had.
    fn allocate_slot(&self) -> Result<u64> {
        loop {
            let got = self.with_slot_counter(|c| {
                if c.next >= c.end {
                    return Ok(None);
                }
                let slot = c.next;
                if slot > locator::MAX_SLOT {
                    return Err(Error::ResourceExhausted(
                        "the vault has handed out every key slot",
                    ));
                }
                c.next = slot + 1;
                Ok(Some(slot))
            })??;
            if let Some(slot) = got {
                return Ok(slot);
            }
            // A store several nodes share hands out blocks of slots; the
            // next block is reserved without the counter's lock held, and
            // a block another thread installed meanwhile is kept.
            let floor = self.first_free_slot()?;
            let Some(block) = self.store.reserve_slots(floor, SLOT_BLOCK)? else {
                return Err(Error::state("the store stopped reserving key slots"));
            };
            self.with_slot_counter(|c| {
                if c.next >= c.end {
                    c.next = block.start;
                    c.end = block.end;
                }
            })?;
        }
    }

    /// The first key slot this run hands out (or would): every slot below
    /// it was handed out before, and this run writes one only through its
    /// subject.
    fn slot_horizon(&self) -> Result<u64> {
        self.with_slot_counter(|c| c.first)
    }

    /// Runs `f` on the key-slot counter, read from the store at first use.
    fn with_slot_counter<T>(&self, f: impl FnOnce(&mut SlotCounter) -> T) -> Result<T> {
        let mut counter = self
            .next_slot
            .lock()
            .map_err(|_| Error::state("the key-slot counter is poisoned"))?;
        let c = match &mut *counter {
            Some(c) => c,
            None => {
                let first = self.first_free_slot()?;
                // On a shared store, no slot until a block is reserved
                // (`allocate_slot`); slots below `first` were handed out
                // before this run, as on a store of one process.
                let end = if self.store.shared() { first } else { u64::MAX };
                counter.insert(SlotCounter {
                    next: first,
                    first,
                    end,
                })
            }
        };
        Ok(f(c))
    }

    /// The slot after the highest one the store records a subject for.
    fn first_free_slot(&self) -> Result<u64> {
        Ok(self
            .store
            .last_with_prefix(keys::SLOT_PREFIX)?
            .and_then(|(k, _)| keys::slot_number(&k))
            .map_or(1, |n| n.saturating_add(1)))
    }

    /// Reads the field numbers from the store, once (`again`: again, for
    /// the numbers another node gave).
    fn field_numbers(&self, again: bool) -> Result<()> {
        if !again && self.fields.read().is_ok_and(|f| f.is_some()) {
            return Ok(());
        }
        let mut numbers = FieldNumbers::default();
        for (k, v) in self.store.scan_prefix(keys::FIELD_PREFIX, 256)? {
            if let (Some(&[n]), Ok(name)) =
                (k.strip_prefix(keys::FIELD_PREFIX), String::from_utf8(v))
            {
                numbers.by_name.insert(name.clone(), n);
                numbers.names.insert(n, name);
            }
        }
        let mut fields = self
            .fields
            .write()
            .map_err(|_| Error::state("the field numbers are poisoned"))?;
        if again || fields.is_none() {
            *fields = Some(numbers);
        }
        Ok(())
    }

    /// The number of field `name`, given it (durably) if it has none.
    async fn field_number(&self, name: &str) -> Result<u8> {
        let known = |this: &Self| -> Result<Option<u8>> {
            this.field_numbers(false)?;
            Ok(this
                .fields
                .read()
                .ok()
                .and_then(|f| f.as_ref()?.by_name.get(name).copied()))
        };
        if let Some(n) = known(self)? {
            return Ok(n);
        }
        let _one = self.numbering.lock().await;
        if let Some(n) = known(self)? {
            return Ok(n);
        }
        // On a shared store another node may give a number at the same
        // time: the number is inserted only where it is free, and on a
        // conflict the numbers are read again (a few times at most).
        let mut tries = 0;
        let n = loop {
            if let Some(n) = known(self)? {
                return Ok(n);
            }
            let taken: Vec<u8> = self
                .fields
                .read()
                .ok()
                .and_then(|f| Some(f.as_ref()?.names.keys().copied().collect()))
                .unwrap_or_default();
            let n = (0..=u8::MAX)
                .find(|n| !taken.contains(n))
                .ok_or(Error::ResourceExhausted("every field number is taken"))?;
            let mut batch = Batch::new();
            if self.store.shared() {
                batch.insert(keys::field(n), name.as_bytes().to_vec());
            } else {
                batch.put(keys::field(n), name.as_bytes().to_vec());
            }
            match self.store.commit(batch).await {
                Ok(()) => break n,
                Err(crate::store::StoreError::Conflict) if tries < 8 => {
                    tries += 1;
                    self.field_numbers(true)?;
                }
                Err(e) => return Err(e.into()),
            }
        };
        if let Ok(mut f) = self.fields.write()
            && let Some(f) = f.as_mut()
        {
            f.by_name.insert(name.to_owned(), n);
            f.names.insert(n, name.to_owned());
        }
        Ok(n)
    }

    /// The name of field number `n` (read again from the store when this
    /// node does not know it: another node may have given it).
    fn field_name(&self, n: u8) -> Result<Option<String>> {
        let lookup = |this: &Self| {
            this.fields
                .read()
                .ok()
                .and_then(|f| f.as_ref()?.names.get(&n).cloned())
        };
        self.field_numbers(false)?;
        if let Some(name) = lookup(self) {
            return Ok(Some(name));
        }
        if self.store.shared() {
            self.field_numbers(true)?;
            return Ok(lookup(self));
        }
        Ok(None)
    }

    /// A new value token of `record` for field number `field` (every field
    /// but a card number's has one).
    fn mint(&self, record: &mut SubjectRecord, field: Option<u8>) -> Result<Token> {
        let field = field.ok_or_else(|| Error::state("a value token needs a field number"))?;
        let counter = record.next_counter;
        record.next_counter = counter.checked_add(1).ok_or(Error::ResourceExhausted(
            "the subject has used up its tokens",
        ))?;
        let nonce = u16::from_be_bytes(crate::crypto::random_array::<2>().map_err(crypto)?);
        let at = Locator {
            slot: record.slot,
            field,
            counter,
            nonce,
        };
        let key = self
            .keyring
            .token_key()
            .ok_or_else(|| Error::state("no token key"))?;
        Token::from_locator(key, at)
            .ok_or_else(|| Error::state("a locator does not fit the token format"))
    }

    /// The locator a value token carries, if it is one of this vault's.
    fn locate(&self, token: &Token) -> Option<Locator> {
        if token.is_card() {
            return None;
        }
        let key = self
            .keyring
            .token_key_of(locator::version_of(token.as_str())?)?;
        locator::decode(key, token.as_str())
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
    /// written ([`journal::commit`]), so that a record
    /// that survives a crash never lacks its event.
    ///
    /// `prior` is the record the change started from (`None`: a new
    /// subject). On a store that several nodes share, the commit holds
    /// only if the stored record is still `prior` (or still absent):
    /// otherwise another node changed the subject meanwhile, nothing is
    /// written, and the answer is [`Error::Aborted`] (this node's cached
    /// record is dropped, so the request sent again reads the new one).
    async fn commit_subject(
        &self,
        subject: &str,
        prior: Option<&SubjectRecord>,
        mut record: SubjectRecord,
        batch: Batch,
        audit: Option<Audited<'_>>,
    ) -> Result<Arc<SubjectRecord>> {
        let mut batch = self.guarded(subject, prior, batch);
        if self.store.shared() && prior.is_none() {
            batch.insert(keys::subject(subject), record.stored_form());
        } else {
            batch.put(keys::subject(subject), record.stored_form());
        }
        let generation = self.cache.generation(subject);
        let write = async { self.store.commit(batch).await.map_err(Error::from) };
        let result = journal::commit(audit, write).await;
        match result {
            Ok(()) => {
                let record = Arc::new(record);
                if self.store.shared() {
                    self.cache
                        .write_through_since(subject, record.clone(), generation);
                } else {
                    self.cache.write_through(subject, record.clone());
                }
                Ok(record)
            }
            Err(e) => {
                self.cache.forget_subject(subject);
                self.keyring.forget_subject(subject);
                Err(e)
            }
        }
    }

    /// `batch`, on a store that several nodes share, after a check that
    /// `subject`'s stored record is still `prior` ([`Batch::expect`], first,
    /// so that the record's row is the first one the commit locks); as it
    /// is elsewhere (the subject's lock in this process is enough).
    fn guarded(&self, subject: &str, prior: Option<&SubjectRecord>, batch: Batch) -> Batch {
        match prior {
            Some(prior) if self.store.shared() => {
                let mut guarded = Batch::new();
                guarded.expect(keys::subject(subject), prior.clone().stored_form());
                guarded.extend(batch);
                guarded
            }
            _ => batch,
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

    /// Drops what this node cached of `changes`, which another node made
    /// to the shared store: subject records and their data keys, token
    /// pointers, field numbers, and the KEKs (read again).
    pub fn forget_changed(&self, changes: &crate::store::Changes) {
        use crate::store::Changes;
        let mut keks = false;
        let mut fields = false;
        match changes {
            Changes::Everything => {
                self.cache.clear();
                self.keyring.forget_all_deks();
                keks = true;
                fields = true;
            }
            Changes::Keys(changed) => {
                for key in changed {
                    if let Some(sid) = key
                        .strip_prefix(keys::SUBJECT_PREFIX)
                        .and_then(|s| std::str::from_utf8(s).ok())
                    {
                        self.cache.forget_subject_and_tokens(sid);
                        self.keyring.forget_subject(sid);
                    } else if let Some(token) = key
                        .strip_prefix(keys::TOKEN_PREFIX)
                        .and_then(|s| std::str::from_utf8(s).ok())
                    {
                        self.cache.forget_pointer(token);
                    } else if key.starts_with(keys::FIELD_PREFIX) {
                        fields = true;
                    } else if key.starts_with(b"key/kek") || key == keys::ACTIVE_KEK {
                        keks = true;
                    }
                }
            }
        }
        if fields && let Err(e) = self.field_numbers(true) {
            tracing::error!(error = %e, "could not read field numbers another node gave");
        }
        if keks {
            self.refresh_keks();
        }
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
        let Some(record) = self.read_record(subject_id)? else {
            return Ok(None);
        };
        let record = Arc::new(record);
        self.cache.fill(subject_id, record.clone(), generation);
        Ok(Some(record))
    }

    /// The stored record of `subject_id` with its wrapped data keys (from
    /// its key slot). A record whose slot no longer holds its keys was
    /// re-keyed between the two reads (a writer does not wait for readers):
    /// it is read again.
    fn read_record(&self, subject_id: &str) -> Result<Option<SubjectRecord>> {
        let mut tries = 0;
        loop {
            let Some(bytes) = self.store.get(&keys::subject(subject_id))? else {
                return Ok(None);
            };
            let mut record = decode::<SubjectRecord>(&bytes, "subject")?;
            if record.slot == 0 {
                // Every record of this layout has a key slot (the layout
                // before them is refused at start, and moves by restore).
                return Err(Error::Integrity);
            }
            if record.fill_keys(&self.store.keys(record.slot)?) || tries == 3 {
                // (still without its keys after a few reads: its values
                // fail their integrity check, loudly)
                return Ok(Some(record));
            }
            tries += 1;
        }
    }

    /// Where a token points: its subject (check it in the subject record),
    /// or the field of an erased subject's token. A value token carries its
    /// subject's key slot; a card token (or one issued before key slots)
    /// has a pointer.
    fn token_pointer(&self, token: &Token) -> Result<Option<Pointer>> {
        if let Some(s) = self.cache.pointer(token.as_str()) {
            return Ok(Some(Pointer::Live(s)));
        }
        // A token issued before key slots is random, and reads as a locator
        // by chance (one in 2^32): where the locator leads to no record
        // holding the token, its pointer (if it has one) is the answer.
        let located = match self.locate(token) {
            None => None,
            Some(at) => match self.slot_owner(at.slot)? {
                SlotOwner::Subject(sid) => {
                    let holds = self
                        .subject_record(&sid)?
                        .is_some_and(|r| r.entry(token.as_str()).is_some());
                    if holds {
                        let sid: Arc<str> = Arc::from(sid);
                        self.cache.put_pointer(token.as_str(), sid.clone());
                        return Ok(Some(Pointer::Live(sid)));
                    }
                    None
                }
                SlotOwner::Erased => self.field_name(at.field)?.map(Pointer::Erased),
                SlotOwner::Nobody => None,
            },
        };
        let Some(bytes) = self.store.get(&keys::token(token.as_str()))? else {
            return Ok(located);
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

    /// Whom key slot `slot` belongs to, as its `slot/` pointer says.
    fn slot_owner(&self, slot: u64) -> Result<SlotOwner> {
        Ok(match self.store.get(&keys::slot(slot))? {
            None => SlotOwner::Nobody,
            Some(b) if b.first() == Some(&keys::TOMBSTONE) => SlotOwner::Erased,
            Some(b) => SlotOwner::Subject(String::from_utf8_lossy(&b).into_owned()),
        })
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
        // On a shared store, a key wrapped under a KEK another node made a
        // moment ago (before this node heard of it) takes the KEKs first.
        if self.store.shared()
            && let Some(kek) = crate::crypto::envelope::key_version(&wrapped.wrapped)
            && !self.keyring.kek_versions().contains(&kek)
        {
            self.refresh_keks();
        }
        self.keyring
            .dek(subject_id, version, &wrapped.wrapped)
            .map_err(crypto)
    }

    /// Reads the KEKs again from the store (another node rotated or retired
    /// one).
    fn refresh_keks(&self) {
        let refreshed = crate::keystore::read(self.store.as_ref())
            .and_then(|m| self.keyring.refresh_keks(&m, self.clock.now()));
        if let Err(e) = refreshed {
            tracing::error!(error = %e, "could not take the KEKs another node changed");
        }
    }

    fn blind(&self, field: &FieldDef, value: &str) -> [u8; 32] {
        self.keyring
            .index()
            .blind(&field.name, &field.index_form(value))
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
    test_engine_with_clock(dir, Arc::new(crate::model::SystemClock)).await
}

/// Stores `email` as subject `sid`'s e-mail address, as a caller that may
/// set consent and be handed back existing tokens (unit tests).
#[cfg(test)]
pub(crate) async fn test_store_email(engine: &Engine, sid: &str, email: &str) {
    let value = NewValue {
        field: engine.schema().field("email").unwrap().clone(),
        value: Zeroizing::new(email.into()),
    };
    let none = PolicyVersion::default();
    let collect = Collect {
        purposes: &[],
        policy_version: &none,
        travel_end: None,
        may_set_consent: true,
        may_dedupe: &|_, _| true,
    };
    engine
        .tokenize(&SubjectId::parse(sid).unwrap(), &[value], &collect, None)
        .await
        .unwrap();
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
    let keyring = crate::keystore::open(root, store.as_ref(), 16, clock.now())
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
