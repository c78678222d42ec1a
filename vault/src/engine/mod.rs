//! The vault's core: tokenize, detokenize, look up and correct values.
//!
//! The engine takes validated input (see [`types`]) and works on the store
//! and keyring. Writes of one subject are serialised by a striped lock (the
//! read-modify-write of its record); different subjects proceed in parallel,
//! and every write is one atomic, durable batch.

pub mod records;
pub mod types;

use crate::crypto::keyring::Keyring;
use crate::crypto::keys::DataKey;
use crate::error::{Error, Result};
use crate::schema::FieldDef;
use crate::store::{Batch, Store, keys};
use crate::tokens::Token;
use prost::Message;
use records::{SubjectRecord, TokenRecord, WrappedDek};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use types::{PolicyVersion, Purpose, SubjectId};
use zeroize::Zeroizing;

/// Number of lock stripes serialising writes per subject.
const LOCK_STRIPES: usize = 1024;
/// Most tokens a look-up returns.
pub const MAX_LOOKUP_RESULTS: usize = 256;

/// Where the engine gets the time; tests move it.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Seconds since the Unix epoch.
    fn now(&self) -> i64;
}

/// The operating system's clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }
}

/// One field of a tokenize request, validated and canonical.
#[derive(Debug)]
pub struct NewValue {
    /// The field's definition.
    pub field: Arc<FieldDef>,
    /// The canonical value.
    pub value: Zeroizing<String>,
}

/// What detokenizing one token found.
#[derive(Debug)]
pub enum Found {
    /// The token exists: its field and value.
    Value {
        /// The field's definition.
        field: Arc<FieldDef>,
        /// The canonical value.
        value: Zeroizing<String>,
    },
    /// No such token.
    NotFound,
}

/// The engine: store, keys and schema together.
pub struct Engine {
    store: Arc<dyn Store>,
    keyring: Keyring,
    schema: Arc<crate::schema::Schema>,
    clock: Arc<dyn Clock>,
    locks: Vec<tokio::sync::Mutex<()>>,
    hasher: std::collections::hash_map::RandomState,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("store", &self.store).field("keyring", &self.keyring).finish_non_exhaustive()
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

fn decode<M: Message + Default>(bytes: &[u8], what: &str) -> Result<M> {
    M::decode(bytes).map_err(|e| Error::Internal(format!("undecodable {what} record: {e}")))
}

fn crypto(e: crate::crypto::CryptoError) -> Error {
    match e {
        crate::crypto::CryptoError::DecryptionFailed => Error::Integrity,
        other => Error::Internal(other.to_string()),
    }
}

impl Engine {
    /// An engine over `store` with `keyring` and `schema`.
    pub fn new(store: Arc<dyn Store>, keyring: Keyring, schema: Arc<crate::schema::Schema>, clock: Arc<dyn Clock>) -> Self {
        let locks = (0..LOCK_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect();
        Self { store, keyring, schema, clock, locks, hasher: Default::default() }
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
        let mut h = self.hasher.build_hasher();
        subject_id.hash(&mut h);
        let i = usize::try_from(h.finish() % LOCK_STRIPES as u64).unwrap_or(0);
        &self.locks[i]
    }

    fn subject_record(&self, subject_id: &str) -> Result<Option<SubjectRecord>> {
        self.store.get(&keys::subject(subject_id))?.map(|b| decode(&b, "subject")).transpose()
    }

    fn token_record(&self, token: &Token) -> Result<Option<TokenRecord>> {
        self.store.get(&keys::token(token.as_str()))?.map(|b| decode(&b, "token")).transpose()
    }

    fn dek_of(&self, subject_id: &str, record: &SubjectRecord, version: u32) -> Result<Arc<DataKey>> {
        let wrapped = record.dek(version).ok_or(Error::Integrity)?;
        self.keyring.dek(subject_id, version, &wrapped.wrapped).map_err(crypto)
    }

    fn blind(&self, field: &FieldDef, value: &str) -> [u8; 32] {
        self.keyring.index().blind(&field.name, &field.index_form(value))
    }

    /// Stores `values` of `subject` and returns one token per value, in order.
    /// Values of look-up fields that the subject already has keep their token.
    pub async fn tokenize(
        &self,
        subject: &SubjectId,
        values: &[NewValue],
        purposes: &[Purpose],
        policy_version: &PolicyVersion,
    ) -> Result<Vec<Token>> {
        let sid = subject.as_str();
        let _guard = self.lock_for(sid).lock().await;
        let now = self.clock.now();
        let mut batch = Batch::new();
        let mut record = match self.subject_record(sid)? {
            Some(r) => r,
            None => {
                let (_, wrapped) = self.keyring.new_dek(sid, 1).map_err(crypto)?;
                SubjectRecord {
                    deks: vec![WrappedDek { version: 1, wrapped }],
                    active_dek: 1,
                    created_at: now,
                    ..Default::default()
                }
            }
        };
        let dek = self.dek_of(sid, &record, record.active_dek)?;
        let mut out = Vec::with_capacity(values.len());
        for nv in values {
            let field = &nv.field;
            let blind = field.lookup.then(|| self.blind(field, &nv.value));
            if let Some(blind) = &blind {
                if let Some(existing) = self.store.get(&keys::index(blind, sid))? {
                    let existing = String::from_utf8(existing).ok().and_then(|t| Token::parse(&t));
                    if let Some(token) = existing {
                        out.push(token);
                        continue;
                    }
                }
            }
            let token = Token::generate().map_err(crypto)?;
            let ciphertext =
                dek.seal(&field_context(sid, &field.name, token.as_str(), 1), nv.value.as_bytes()).map_err(crypto)?;
            let rec = TokenRecord {
                subject_id: sid.to_owned(),
                field: field.name.clone(),
                value_version: 1,
                dek_version: dek.version(),
                ciphertext,
                created_at: now,
                updated_at: now,
                blind: blind.map(|b| b.to_vec()).unwrap_or_default(),
            };
            batch.put(keys::token(token.as_str()), rec.encode_to_vec());
            if let Some(blind) = &blind {
                batch.put(keys::index(blind, sid), token.as_str().as_bytes().to_vec());
            }
            record.tokens.push(token.as_str().to_owned());
            out.push(token);
        }
        if !purposes.is_empty() {
            record.purposes = purposes.iter().map(|p| p.as_str().to_owned()).collect();
        }
        if !policy_version.as_str().is_empty() {
            record.policy_version = policy_version.as_str().to_owned();
        }
        record.last_activity = now;
        batch.put(keys::subject(sid), record.encode_to_vec());
        self.store.commit(batch).await?;
        Ok(out)
    }

    /// Finds and decrypts the value behind each token, in order.
    pub async fn detokenize(&self, tokens: &[Token]) -> Result<Vec<Found>> {
        let mut subjects: HashMap<String, SubjectRecord> = HashMap::new();
        let mut out = Vec::with_capacity(tokens.len());
        for token in tokens {
            let Some(rec) = self.token_record(token)? else {
                out.push(Found::NotFound);
                continue;
            };
            let Some(field) = self.schema.field(&rec.field).cloned() else {
                // A field removed from the schema is no longer served.
                out.push(Found::NotFound);
                continue;
            };
            if !subjects.contains_key(&rec.subject_id) {
                let Some(sr) = self.subject_record(&rec.subject_id)? else {
                    out.push(Found::NotFound);
                    continue;
                };
                subjects.insert(rec.subject_id.clone(), sr);
            }
            let sr = subjects.get(&rec.subject_id).ok_or(Error::Integrity)?;
            let dek = self.dek_of(&rec.subject_id, sr, rec.dek_version)?;
            let plain = dek
                .open(&field_context(&rec.subject_id, &rec.field, token.as_str(), rec.value_version), &rec.ciphertext)
                .map_err(|e| {
                    tracing::error!(field = %rec.field, "a stored value failed its integrity check");
                    crypto(e)
                })?;
            let value = String::from_utf8(plain.to_vec()).map_err(|_| Error::Integrity)?;
            out.push(Found::Value { field, value: Zeroizing::new(value) });
        }
        Ok(out)
    }

    /// The tokens whose value in `field` is exactly `value` (canonical form).
    pub fn lookup(&self, field: &FieldDef, value: &str) -> Result<Vec<Token>> {
        let blind = self.blind(field, value);
        let entries = self.store.scan_prefix(&keys::index_prefix(&blind), MAX_LOOKUP_RESULTS)?;
        Ok(entries.into_iter().filter_map(|(_, t)| String::from_utf8(t).ok().and_then(|t| Token::parse(&t))).collect())
    }

    /// Replaces the value behind `token` with `value` (canonical for the
    /// token's field, which `validate` checks). Returns the new value version.
    pub async fn update(
        &self,
        token: &Token,
        validate: impl FnOnce(&FieldDef) -> Result<Zeroizing<String>>,
    ) -> Result<u32> {
        let Some(first) = self.token_record(token)? else { return Err(Error::NotFound("token")) };
        let sid = first.subject_id.clone();
        let _guard = self.lock_for(&sid).lock().await;
        // Re-read under the lock: a concurrent update may have won.
        let mut rec = self.token_record(token)?.ok_or(Error::NotFound("token"))?;
        let field = self.schema.field(&rec.field).cloned().ok_or(Error::NotFound("token"))?;
        let value = validate(&field)?;
        let mut subject = self.subject_record(&sid)?.ok_or(Error::NotFound("token"))?;
        let dek = self.dek_of(&sid, &subject, subject.active_dek)?;
        let now = self.clock.now();
        let version = rec.value_version.checked_add(1).ok_or(Error::FailedPrecondition("too many corrections"))?;
        let mut batch = Batch::new();
        if field.lookup {
            if let Ok(old) = <[u8; 32]>::try_from(rec.blind.as_slice()) {
                let old_key = keys::index(&old, &sid);
                if self.store.get(&old_key)?.as_deref() == Some(token.as_str().as_bytes()) {
                    batch.delete(old_key);
                }
            }
            let blind = self.blind(&field, &value);
            batch.put(keys::index(&blind, &sid), token.as_str().as_bytes().to_vec());
            rec.blind = blind.to_vec();
        }
        rec.ciphertext =
            dek.seal(&field_context(&sid, &field.name, token.as_str(), version), value.as_bytes()).map_err(crypto)?;
        rec.value_version = version;
        rec.dek_version = dek.version();
        rec.updated_at = now;
        batch.put(keys::token(token.as_str()), rec.encode_to_vec());
        subject.last_activity = now;
        batch.put(keys::subject(&sid), subject.encode_to_vec());
        self.store.commit(batch).await?;
        Ok(version)
    }
}
