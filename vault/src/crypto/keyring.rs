//! The keyring: the unwrapped KEKs, the index key and a bounded cache of
//! unwrapped subject data keys.
//!
//! KEKs and the derivation seed are created on first start, wrapped by the
//! root key and stored; later starts unwrap them, which is also how a wrong
//! root key is detected. The keyring does no I/O: it takes the wrapped
//! material ([`Material`]) and hands back what is to be stored; reading and
//! writing it is `crate::keystore`'s job. Subjects' DEKs are unwrapped on first use and kept in
//! an LRU cache of subjects; an evicted DEK is wiped when its last user drops
//! it. A cached DEK is found only with the wrapped form it came from, so a
//! subject id used again after an erasure (a new subject, with new keys) can
//! never be served a key of the old one, and erasure drops the subject's
//! entry at once ([`Keyring::forget_subject`]).

use super::keys::{
    AuditKey, BackupKey, CheckpointKey, CredentialKey, DataKey, DerivationSeed, IndexKey, KEY_LEN,
    KeyEncryptionKey, RootKey, TokenKey,
};
use super::{CryptoError, envelope, random_array};
use lru::LruCache;
use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use zeroize::Zeroizing;

const SEED_CONTEXT: &[u8] = b"vault/v1/seed";

fn kek_context(version: u32) -> Vec<u8> {
    let mut c = b"vault/v1/kek/".to_vec();
    c.extend_from_slice(&version.to_be_bytes());
    c
}

fn dek_context(subject_id: &str, dek_version: u32) -> Vec<u8> {
    let mut c = b"vault/v1/dek/".to_vec();
    c.extend_from_slice(&dek_version.to_be_bytes());
    c.extend_from_slice(subject_id.as_bytes());
    c
}

/// Why the keyring could not open.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyringError {
    /// The root key does not open this store's keys.
    #[error("the root key does not open this data directory's keys (wrong key file?)")]
    WrongRootKey,
    /// The store holds keys in an unexpected shape.
    #[error("the data directory's key records are damaged: {0}")]
    Damaged(&'static str),
    /// Storage failed (the store's own error).
    #[error(transparent)]
    Store(Box<dyn std::error::Error + Send + Sync>),
    /// Randomness failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// Version of the first token key, that encrypts new value tokens'
/// locators until a restore moves to the next.
pub const TOKEN_KEY_VERSION: u8 = 1;

/// All keys the vault holds in memory while unsealed.
pub struct Keyring {
    root: Root,
    keks: RwLock<BTreeMap<u32, Kek>>,
    active_kek: AtomicU32,
    index: IndexKey,
    /// The token keys, versions 1 to the one that encrypts new tokens (the
    /// last).
    tokens: Vec<TokenKey>,
    credential: Arc<CredentialKey>,
    audit: Arc<AuditKey>,
    checkpoint: Arc<CheckpointKey>,
    backup: BackupKey,
    deks: Mutex<LruCache<String, SubjectDeks>>,
}

/// The cached DEKs of one subject: version, the wrapped form the key was
/// unwrapped from (or made as), and the key.
#[derive(Default)]
struct SubjectDeks(Vec<(u32, Vec<u8>, Arc<DataKey>)>);

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("active_kek", &self.active_kek_version())
            .finish_non_exhaustive()
    }
}

/// The root key: in memory (a development key file, or rebuilt from
/// Shamir shares) or in an HSM that never lets it out.
pub enum Root {
    /// Held in memory (wiped on drop).
    Key(Box<RootKey>),
    /// Held in a PKCS#11 token.
    Hsm(super::hsm::HsmRoot),
}

impl std::fmt::Debug for Root {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Root::Key(_) => "Root::Key(..)",
            Root::Hsm(_) => "Root::Hsm(..)",
        })
    }
}

impl Root {
    fn wrap(&self, context: &[u8], secret: &[u8]) -> Result<Vec<u8>, CryptoError> {
        match self {
            Root::Key(k) => k.wrap(context, secret),
            Root::Hsm(h) => h.wrap(context, secret),
        }
    }

    fn unwrap(&self, context: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        match self {
            Root::Key(k) => k.unwrap(context, sealed),
            Root::Hsm(h) => h.unwrap(context, sealed),
        }
    }
}

/// A KEK in memory, with its creation time (Unix seconds).
struct Kek {
    key: Arc<KeyEncryptionKey>,
    created_at: i64,
}

/// The derivation seed that `root` wrapped as `wrapped`.
fn unwrap_seed(root: &Root, wrapped: &[u8]) -> Result<DerivationSeed, KeyringError> {
    let raw = root
        .unwrap(SEED_CONTEXT, wrapped)
        .map_err(|_| KeyringError::WrongRootKey)?;
    let bytes: &[u8; KEY_LEN] = raw
        .as_slice()
        .try_into()
        .map_err(|_| KeyringError::Damaged("seed length"))?;
    Ok(DerivationSeed::from_bytes(bytes))
}

/// Stored KEK `k` unwrapped by `root` (made `now` if it does not say).
fn unwrap_kek(root: &Root, k: &WrappedKek, now: i64) -> Result<Kek, KeyringError> {
    let raw = root
        .unwrap(&kek_context(k.version), &k.wrapped)
        .map_err(|_| KeyringError::WrongRootKey)?;
    let bytes: &[u8; KEY_LEN] = raw
        .as_slice()
        .try_into()
        .map_err(|_| KeyringError::Damaged("KEK length"))?;
    Ok(Kek {
        key: Arc::new(KeyEncryptionKey::from_bytes(k.version, bytes)),
        created_at: k.created_at.unwrap_or(now),
    })
}

/// The backup key of the vault whose seed `root` wrapped as `wrapped_seed`
/// (a restore, before the store holds anything): [`KeyringError::WrongRootKey`]
/// if `root` does not open it (another vault's key, or a changed seed).
pub fn backup_key(root: &Root, wrapped_seed: &[u8]) -> Result<BackupKey, KeyringError> {
    Ok(BackupKey::derive(&unwrap_seed(root, wrapped_seed)?))
}

/// A KEK as stored: its version, its form wrapped by the root key, and
/// when it was made (`None`: before creation times were recorded).
#[derive(Debug, Clone)]
pub struct WrappedKek {
    /// The KEK's version.
    pub version: u32,
    /// The KEK wrapped by the root key.
    pub wrapped: Vec<u8>,
    /// When it was made (Unix seconds).
    pub created_at: Option<i64>,
}

/// The wrapped key material a keyring opens from.
#[derive(Debug, Clone)]
pub struct Material {
    /// The version of the KEK that wraps new DEKs.
    pub active: u32,
    /// Every KEK not retired.
    pub keks: Vec<WrappedKek>,
    /// The derivation seed wrapped by the root key.
    pub seed: Vec<u8>,
    /// The token key version that encrypts new value tokens (1 to 15; one
    /// more after every restore, so that a token minted after a restore is
    /// never one a client got before it).
    pub token_version: u8,
    /// The random salts of the highest token key versions, oldest first
    /// (one per restore since restores salted them; the versions below
    /// have none).
    pub token_salts: Vec<[u8; 16]>,
}

/// A new KEK, wrapped by the root key, to be stored before
/// [`Keyring::activate`] makes it the active one.
pub struct NewKek {
    /// Its version.
    pub version: u32,
    /// Its form wrapped by the root key (what is stored).
    pub wrapped: Vec<u8>,
    key: Arc<KeyEncryptionKey>,
}

impl std::fmt::Debug for NewKek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewKek")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl Material {
    /// The material of a new vault under `root`: KEK v1 made `now` and a
    /// fresh derivation seed.
    pub fn fresh(root: &Root, now: i64) -> Result<Self, KeyringError> {
        let kek = Zeroizing::new(random_array::<KEY_LEN>()?);
        let seed = Zeroizing::new(random_array::<KEY_LEN>()?);
        Ok(Self {
            active: 1,
            keks: vec![WrappedKek {
                version: 1,
                wrapped: root.wrap(&kek_context(1), kek.as_ref())?,
                created_at: Some(now),
            }],
            seed: root.wrap(SEED_CONTEXT, seed.as_ref())?,
            token_version: TOKEN_KEY_VERSION,
            token_salts: Vec::new(),
        })
    }
}

impl Keyring {
    /// Opens the keyring from `material` under `root`. A KEK without a
    /// recorded creation time is taken as created `now`.
    pub fn open(
        root: Root,
        material: &Material,
        dek_cache: usize,
        now: i64,
    ) -> Result<Self, KeyringError> {
        let mut keks = BTreeMap::new();
        for k in &material.keks {
            keks.insert(k.version, unwrap_kek(&root, k, now)?);
        }
        if !keks.contains_key(&material.active) {
            return Err(KeyringError::Damaged("active KEK missing"));
        }
        let seed = unwrap_seed(&root, &material.seed)?;
        let index = IndexKey::derive(&seed);
        let top = material.token_version.max(TOKEN_KEY_VERSION);
        let salted_from = usize::from(top) + 1 - material.token_salts.len().min(usize::from(top));
        let tokens = (TOKEN_KEY_VERSION..=top)
            .map(|v| {
                let salt = usize::from(v)
                    .checked_sub(salted_from)
                    .and_then(|i| material.token_salts.get(i));
                TokenKey::derive(&seed, v, salt)
            })
            .collect();
        let credential = Arc::new(CredentialKey::derive(&seed));
        let audit = Arc::new(AuditKey::derive(&seed));
        let checkpoint = Arc::new(CheckpointKey::derive(&seed)?);
        let backup = BackupKey::derive(&seed);
        drop(seed);
        let cap = NonZeroUsize::new(dek_cache.max(1)).unwrap_or(NonZeroUsize::MIN);
        Ok(Self {
            root,
            keks: RwLock::new(keks),
            active_kek: AtomicU32::new(material.active),
            index,
            tokens,
            credential,
            audit,
            checkpoint,
            backup,
            deks: Mutex::new(LruCache::new(cap)),
        })
    }

    /// Whether the root key lives in an HSM.
    pub fn root_in_hsm(&self) -> bool {
        matches!(self.root, Root::Hsm(_))
    }

    /// The KEK version that wraps new DEKs.
    pub fn active_kek_version(&self) -> u32 {
        self.active_kek.load(Ordering::Acquire)
    }

    /// Every KEK version the keyring holds, in order.
    pub fn kek_versions(&self) -> Vec<u32> {
        self.keks
            .read()
            .map(|k| k.keys().copied().collect())
            .unwrap_or_default()
    }

    fn kek(&self, version: u32) -> Result<Arc<KeyEncryptionKey>, CryptoError> {
        self.keks
            .read()
            .map_err(|_| CryptoError::Internal("KEK lock poisoned"))?
            .get(&version)
            .map(|k| k.key.clone())
            .ok_or(CryptoError::DecryptionFailed)
    }

    /// When KEK `version` was made (Unix seconds).
    pub fn kek_created_at(&self, version: u32) -> Option<i64> {
        self.keks.read().ok()?.get(&version).map(|k| k.created_at)
    }

    /// Drops KEK `version` (never the active one) from memory, once the
    /// caller has deleted its wrapped form from the store and checked that
    /// nothing is wrapped under it any more.
    pub fn retire(&self, version: u32) -> Result<(), KeyringError> {
        if version == self.active_kek_version() {
            return Err(KeyringError::Damaged("the active KEK cannot be retired"));
        }
        self.keks
            .write()
            .map_err(|_| KeyringError::Damaged("keyring lock"))?
            .remove(&version);
        Ok(())
    }

    /// Takes the KEKs of `material` (the store's, as another node left
    /// them): versions made elsewhere are unwrapped and held, versions no
    /// longer stored are dropped (retired elsewhere), and the active one
    /// becomes `material`'s.
    pub fn refresh_keks(&self, material: &Material, now: i64) -> Result<(), KeyringError> {
        let held = self.kek_versions();
        let mut fresh = Vec::new();
        for k in material.keks.iter().filter(|k| !held.contains(&k.version)) {
            fresh.push((k.version, unwrap_kek(&self.root, k, now)?));
        }
        let mut keks = self
            .keks
            .write()
            .map_err(|_| KeyringError::Damaged("keyring lock"))?;
        keks.extend(fresh);
        if !keks.contains_key(&material.active) {
            return Err(KeyringError::Damaged("active KEK missing"));
        }
        keks.retain(|v, _| material.keks.iter().any(|k| k.version == *v));
        self.active_kek.store(material.active, Ordering::Release);
        Ok(())
    }

    /// Drops every cached DEK (another node may have re-keyed anyone).
    pub fn forget_all_deks(&self) {
        if let Ok(mut d) = self.deks.lock() {
            d.clear();
        }
    }

    /// Makes a KEK for the next rotation, wrapped by the root key: version
    /// highest + 1, above every version held and `retired_max`, the highest
    /// version ever retired. Nothing changes until [`Keyring::activate`].
    pub fn new_kek(&self, retired_max: u32) -> Result<NewKek, KeyringError> {
        let version = self
            .kek_versions()
            .last()
            .copied()
            .unwrap_or(0)
            .max(retired_max)
            .checked_add(1)
            .ok_or(KeyringError::Damaged("KEK versions exhausted"))?;
        let raw = Zeroizing::new(random_array::<KEY_LEN>()?);
        Ok(NewKek {
            version,
            wrapped: self.root.wrap(&kek_context(version), raw.as_ref())?,
            key: Arc::new(KeyEncryptionKey::from_bytes(version, &raw)),
        })
    }

    /// Makes `kek` (stored by the caller) the KEK that wraps new DEKs, as
    /// made `now`. Returns its version.
    pub fn activate(&self, kek: NewKek, now: i64) -> Result<u32, KeyringError> {
        let version = kek.version;
        self.keks
            .write()
            .map_err(|_| KeyringError::Damaged("keyring lock"))?
            .insert(
                version,
                Kek {
                    key: kek.key,
                    created_at: now,
                },
            );
        self.active_kek.store(version, Ordering::Release);
        Ok(version)
    }

    /// `wrapped` (DEK `dek_version` of `subject_id`) wrapped again by the
    /// active KEK, or `None` if the active KEK already wraps it.
    pub fn rewrap(
        &self,
        subject_id: &str,
        dek_version: u32,
        wrapped: &[u8],
    ) -> Result<Option<Vec<u8>>, CryptoError> {
        let active = self.active_kek_version();
        let from = envelope::key_version(wrapped).ok_or(CryptoError::DecryptionFailed)?;
        if from == active {
            return Ok(None);
        }
        let context = dek_context(subject_id, dek_version);
        let raw = self.kek(from)?.unwrap(&context, wrapped)?;
        Ok(Some(self.kek(active)?.wrap(&context, &raw)?))
    }

    /// The blind-index key.
    pub fn index(&self) -> &IndexKey {
        &self.index
    }

    /// The token key that encrypts the locators of new value tokens.
    pub fn token_key(&self) -> Option<&TokenKey> {
        self.tokens.last()
    }

    /// The token key of `version`, if the vault has it.
    pub fn token_key_of(&self, version: u8) -> Option<&TokenKey> {
        self.tokens.iter().find(|k| k.version() == version)
    }

    /// The key that hashes bearer-token secrets.
    pub fn credential(&self) -> &Arc<CredentialKey> {
        &self.credential
    }

    /// The key that MACs the audit chain.
    pub fn audit(&self) -> &Arc<AuditKey> {
        &self.audit
    }

    /// The key that signs audit checkpoints.
    pub fn checkpoint(&self) -> &Arc<CheckpointKey> {
        &self.checkpoint
    }

    /// The key that authenticates backups.
    pub fn backup(&self) -> &BackupKey {
        &self.backup
    }

    /// Makes a new DEK of `dek_version` for `subject_id`; returns it and its
    /// wrapped form to store.
    pub fn new_dek(
        &self,
        subject_id: &str,
        dek_version: u32,
    ) -> Result<(Arc<DataKey>, Vec<u8>), CryptoError> {
        let kek = self.kek(self.active_kek_version())?;
        let raw = Zeroizing::new(random_array::<KEY_LEN>()?);
        let wrapped = kek.wrap(&dek_context(subject_id, dek_version), raw.as_ref())?;
        let dek = Arc::new(DataKey::from_bytes(dek_version, &raw));
        self.cache_insert(subject_id, &wrapped, dek.clone());
        Ok((dek, wrapped))
    }

    /// The DEK of `dek_version` of `subject_id`, from the cache or by
    /// unwrapping `wrapped`.
    pub fn dek(
        &self,
        subject_id: &str,
        dek_version: u32,
        wrapped: &[u8],
    ) -> Result<Arc<DataKey>, CryptoError> {
        if let Ok(mut cache) = self.deks.lock()
            && let Some(SubjectDeks(cached)) = cache.get(subject_id)
            && let Some((_, _, d)) = cached
                .iter()
                .find(|(v, w, _)| *v == dek_version && super::ct_eq(w, wrapped))
        {
            return Ok(d.clone());
        }
        let kek_version = envelope::key_version(wrapped).ok_or(CryptoError::DecryptionFailed)?;
        let kek = self.kek(kek_version)?;
        let raw = kek.unwrap(&dek_context(subject_id, dek_version), wrapped)?;
        let bytes: &[u8; KEY_LEN] = raw
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::DecryptionFailed)?;
        let dek = Arc::new(DataKey::from_bytes(dek_version, bytes));
        self.cache_insert(subject_id, wrapped, dek.clone());
        Ok(dek)
    }

    /// Drops every cached DEK of `subject_id` (after erasure, re-keying or
    /// a failed write): each is wiped once its last user drops it.
    pub fn forget_subject(&self, subject_id: &str) {
        if let Ok(mut cache) = self.deks.lock() {
            cache.pop(subject_id);
        }
    }

    /// How many DEKs of `subject_id` the cache holds.
    pub fn cached_deks(&self, subject_id: &str) -> usize {
        self.deks
            .lock()
            .ok()
            .and_then(|mut c| c.get(subject_id).map(|SubjectDeks(d)| d.len()))
            .unwrap_or(0)
    }

    /// Caches `dek`, unwrapped from (or made as) `wrapped`, replacing any
    /// key cached for its version.
    fn cache_insert(&self, subject_id: &str, wrapped: &[u8], dek: Arc<DataKey>) {
        if let Ok(mut cache) = self.deks.lock() {
            let version = dek.version();
            let SubjectDeks(cached) =
                cache.get_or_insert_mut(subject_id.to_owned(), SubjectDeks::default);
            cached.retain(|(v, _, _)| *v != version);
            cached.push((version, wrapped.to_vec(), dek));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cached DEK answers only for the wrapped form it came from: a
    /// subject id used again (new keys, same id and version) never gets the
    /// old key, and forgetting a subject drops all of its keys at once.
    #[test]
    fn a_cached_dek_is_found_only_with_its_wrapped_form() {
        let root = Root::Key(Box::new(RootKey::from_bytes(&[9; 32])));
        let material = Material::fresh(&root, 0).unwrap();
        let ring = Keyring::open(root, &material, 16, 0).unwrap();
        let (old, old_wrapped) = ring.new_dek("s", 1).unwrap();
        let sealed = old.seal(b"ctx", b"old value").unwrap();
        assert!(Arc::ptr_eq(&ring.dek("s", 1, &old_wrapped).unwrap(), &old));
        assert_eq!(ring.cached_deks("s"), 1);

        // The subject is erased and its id used again: a new DEK v1.
        ring.forget_subject("s");
        assert_eq!(ring.cached_deks("s"), 0);
        let (new, new_wrapped) = ring.new_dek("s", 1).unwrap();
        assert_ne!(old_wrapped, new_wrapped);
        let got = ring.dek("s", 1, &new_wrapped).unwrap();
        assert!(Arc::ptr_eq(&got, &new));
        assert!(got.open(b"ctx", &sealed).is_err(), "not the old key");
        // The old wrapped form (from an old backup, say) unwraps to the old
        // key, never to the cached new one, and replaces it.
        let again = ring.dek("s", 1, &old_wrapped).unwrap();
        assert!(!Arc::ptr_eq(&again, &new));
        assert_eq!(&*again.open(b"ctx", &sealed).unwrap(), b"old value");
        assert_eq!(ring.cached_deks("s"), 1);
        ring.forget_subject("s");
        assert_eq!(ring.cached_deks("s"), 0);
    }

    /// Two restores of one backup each start a token key version with a
    /// salt of their own: the same locator makes different tokens in the
    /// two vaults, while the versions before (unsalted) stay the same key.
    #[test]
    fn token_key_versions_a_restore_started_differ_by_their_salt() {
        let root_of = || Root::Key(Box::new(RootKey::from_bytes(&[9; 32])));
        let mut material = Material::fresh(&root_of(), 0).unwrap();
        material.token_version = 3;
        let ring = |salts: Vec<[u8; 16]>| {
            let mut m = material.clone();
            m.token_salts = salts;
            Keyring::open(root_of(), &m, 16, 0).unwrap()
        };
        // Version 2 unsalted (restored before salts), version 3 salted.
        let (a, b, plain) = (ring(vec![[1; 16]]), ring(vec![[2; 16]]), ring(Vec::new()));
        let block = [7; 16];
        let of = |r: &Keyring, v: u8| r.token_key_of(v).unwrap().encrypt_block(block);
        assert_eq!(of(&a, 1), of(&b, 1));
        assert_eq!(of(&a, 2), of(&b, 2));
        assert_eq!(of(&a, 2), of(&plain, 2));
        assert_ne!(of(&a, 3), of(&b, 3), "two restores, two keys");
        assert_ne!(of(&a, 3), of(&plain, 3));
        assert_eq!(a.token_key().unwrap().version(), 3);
    }
}
