//! One type per kind of key. None is `Clone`; none prints its bytes in
//! `Debug`; all are wiped on drop: AES round keys through the `aes` crate's
//! `zeroize` feature, GHASH's key and state through `polyval`'s (both turned
//! on in the workspace manifest), raw bytes through `secrecy` and `Zeroizing`.

use super::CryptoError;
use super::envelope;
use aes_gcm::{Aes256Gcm, KeyInit};
use ring::{hkdf, hmac};
use secrecy::{ExposeSecret, SecretBox};
use std::fmt;
use zeroize::Zeroizing;

/// Length of every symmetric key, in bytes.
pub const KEY_LEN: usize = 32;

/// Label of the HKDF derivation of the index key from the seed.
pub const INDEX_KEY_LABEL: &[u8] = b"vault/v1/blind-index";
/// Label of the key that MACs the audit chain.
pub const AUDIT_KEY_LABEL: &[u8] = b"vault/v1/audit-chain";
/// Label of the seed of the Ed25519 key that signs audit checkpoints.
pub const CHECKPOINT_KEY_LABEL: &[u8] = b"vault/v1/audit-checkpoint";
/// Label of the key that hashes bearer-token secrets.
pub const CREDENTIAL_KEY_LABEL: &[u8] = b"vault/v1/credential-hash";
/// Label of the key that authenticates backups and journal exports.
pub const BACKUP_KEY_LABEL: &[u8] = b"vault/v1/backup-mac";
/// HKDF label of token key `v` is this followed by `v` (one byte).
pub const TOKEN_KEY_LABEL: &[u8] = b"vault/v1/token-locator/";

/// An AES-256-GCM key ready to use (its key schedule expanded once).
pub(crate) struct AeadKey(Aes256Gcm);

impl AeadKey {
    pub(crate) fn new(bytes: &[u8; KEY_LEN]) -> Self {
        Self(Aes256Gcm::new(bytes.into()))
    }

    pub(crate) fn cipher(&self) -> &Aes256Gcm {
        &self.0
    }
}

/// The root of the key hierarchy. It only wraps and unwraps other keys.
pub struct RootKey(AeadKey);

impl RootKey {
    /// A root key from raw bytes (which the caller wipes).
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> Self {
        Self(AeadKey::new(bytes))
    }

    /// Seals `secret` (a KEK or the seed) under the root key, version 0.
    pub(crate) fn wrap(&self, context: &[u8], secret: &[u8]) -> Result<Vec<u8>, CryptoError> {
        envelope::seal(&self.0, 0, context, secret)
    }

    /// Opens what [`RootKey::wrap`] sealed.
    pub(crate) fn unwrap(
        &self,
        context: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        envelope::open(&self.0, context, sealed)
    }
}

impl fmt::Debug for RootKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RootKey(..)")
    }
}

/// A versioned key-encrypting key: wraps subjects' data keys.
pub struct KeyEncryptionKey {
    version: u32,
    key: AeadKey,
}

impl KeyEncryptionKey {
    /// A KEK of `version` from raw bytes (which the caller wipes).
    pub fn from_bytes(version: u32, bytes: &[u8; KEY_LEN]) -> Self {
        Self {
            version,
            key: AeadKey::new(bytes),
        }
    }

    /// The KEK's version, written into every DEK it wraps.
    pub fn version(&self) -> u32 {
        self.version
    }

    pub(crate) fn wrap(&self, context: &[u8], dek: &[u8]) -> Result<Vec<u8>, CryptoError> {
        envelope::seal(&self.key, self.version, context, dek)
    }

    pub(crate) fn unwrap(
        &self,
        context: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        envelope::open(&self.key, context, sealed)
    }
}

impl fmt::Debug for KeyEncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyEncryptionKey")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// One subject's data key: encrypts that subject's field values.
pub struct DataKey {
    version: u32,
    key: AeadKey,
}

impl DataKey {
    /// A DEK of `version` from raw bytes (which the caller wipes).
    pub fn from_bytes(version: u32, bytes: &[u8; KEY_LEN]) -> Self {
        Self {
            version,
            key: AeadKey::new(bytes),
        }
    }

    /// The DEK's version within its subject.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Encrypts a field value bound to `context` (subject, field, token, value version).
    pub fn seal(&self, context: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        envelope::seal(&self.key, self.version, context, plaintext)
    }

    /// Decrypts a field value; any mismatch is [`CryptoError::DecryptionFailed`].
    pub fn open(&self, context: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        envelope::open(&self.key, context, sealed)
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// The seed from which non-wrapping keys (the index key, later the audit
/// keys) are derived with HKDF-SHA256.
pub struct DerivationSeed(SecretBox<[u8; KEY_LEN]>);

impl DerivationSeed {
    /// A seed from raw bytes (which the caller wipes).
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> Self {
        Self(SecretBox::new(Box::new(*bytes)))
    }

    /// Derives 32 bytes for `label` and lends them to `f`; they are wiped after.
    pub fn with_derived<R>(&self, label: &[u8], f: impl FnOnce(&[u8; KEY_LEN]) -> R) -> R {
        let prk =
            hkdf::Salt::new(hkdf::HKDF_SHA256, b"vault/v1/derive").extract(self.0.expose_secret());
        let mut out = Zeroizing::new([0u8; KEY_LEN]);
        let info = [label];
        // Expanding 32 bytes from SHA-256 cannot fail (the limit is 255 × 32).
        if let Ok(okm) = prk.expand(&info, hkdf::HKDF_SHA256) {
            let _ = okm.fill(out.as_mut());
        }
        f(&out)
    }
}

impl fmt::Debug for DerivationSeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DerivationSeed(..)")
    }
}

/// A token key: AES-256 used as a 128-bit pseudorandom permutation of one
/// block, the locator a value token carries (see `crate::tokens::locator`).
/// Versioned, so that new tokens can move to a new key while the old ones
/// still open.
pub struct TokenKey {
    version: u8,
    cipher: aes::Aes256,
}

impl TokenKey {
    /// Token key `version` derived from `seed`, and from `salt` for a
    /// version a restore started (so that two restores of one backup do
    /// not mint under one key).
    pub fn derive(seed: &DerivationSeed, version: u8, salt: Option<&[u8; 16]>) -> Self {
        let mut label = TOKEN_KEY_LABEL.to_vec();
        label.push(version);
        if let Some(salt) = salt {
            label.extend_from_slice(salt);
        }
        seed.with_derived(&label, |k| Self {
            version,
            cipher: <aes::Aes256 as aes::cipher::KeyInit>::new(k.into()),
        })
    }

    /// The key's version.
    pub fn version(&self) -> u8 {
        self.version
    }

    /// The permutation of `block`.
    pub fn encrypt_block(&self, block: [u8; 16]) -> [u8; 16] {
        use aes::cipher::BlockEncrypt;
        let mut b = block.into();
        self.cipher.encrypt_block(&mut b);
        b.into()
    }

    /// The inverse permutation of `block`.
    pub fn decrypt_block(&self, block: [u8; 16]) -> [u8; 16] {
        use aes::cipher::BlockDecrypt;
        let mut b = block.into();
        self.cipher.decrypt_block(&mut b);
        b.into()
    }
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenKey(v{}, ..)", self.version)
    }
}

/// Keys HMAC-SHA256 blind indexes of look-up fields.
///
/// ring keeps the HMAC's precomputed inner and outer states, which it does
/// not wipe on drop; the index key lives for the whole process, so this only
/// matters at exit.
pub struct IndexKey(hmac::Key);

impl IndexKey {
    /// The index key derived from `seed`.
    pub fn derive(seed: &DerivationSeed) -> Self {
        seed.with_derived(INDEX_KEY_LABEL, |k| {
            Self(hmac::Key::new(hmac::HMAC_SHA256, k))
        })
    }

    /// The blind index of `value` in `field`: HMAC(index key, field ‖ 0 ‖ value).
    pub fn blind(&self, field: &str, value: &str) -> [u8; 32] {
        mac_pair(&self.0, field.as_bytes(), value.as_bytes())
    }
}

/// HMAC-SHA256(key, name ‖ 0 ‖ value): `name` (a field name, a credential
/// id) never holds a zero byte, so the zero keeps the two parts apart.
fn mac_pair(key: &hmac::Key, name: &[u8], value: &[u8]) -> [u8; 32] {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(name);
    ctx.update(&[0]);
    ctx.update(value);
    tag32(&ctx.sign())
}

/// An HMAC-SHA256 tag as an array.
fn tag32(tag: &hmac::Tag) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

impl fmt::Debug for IndexKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IndexKey(..)")
    }
}

/// Keys the HMAC-SHA256 hashes of bearer-token secrets: the store holds only
/// these hashes, so a copy of the data directory yields no usable token.
pub struct CredentialKey(hmac::Key);

impl CredentialKey {
    /// The credential key derived from `seed`.
    pub fn derive(seed: &DerivationSeed) -> Self {
        seed.with_derived(CREDENTIAL_KEY_LABEL, |k| {
            Self(hmac::Key::new(hmac::HMAC_SHA256, k))
        })
    }

    /// The keyed hash of the secret of credential `id`:
    /// HMAC(credential key, id ‖ 0 ‖ secret).
    pub fn hash(&self, id: &str, secret: &[u8]) -> [u8; 32] {
        mac_pair(&self.0, id.as_bytes(), secret)
    }
}

impl fmt::Debug for CredentialKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CredentialKey(..)")
    }
}

/// MACs the audit chain: only the vault can extend it undetected.
pub struct AuditKey(hmac::Key);

impl AuditKey {
    /// The audit key derived from `seed`.
    pub fn derive(seed: &DerivationSeed) -> Self {
        seed.with_derived(AUDIT_KEY_LABEL, |k| {
            Self(hmac::Key::new(hmac::HMAC_SHA256, k))
        })
    }

    /// HMAC-SHA256 of a chain hash.
    pub fn mac(&self, hash: &[u8; 32]) -> [u8; 32] {
        tag32(&hmac::sign(&self.0, hash))
    }

    /// Whether `mac` is the MAC of `hash` (constant time).
    pub fn verify(&self, hash: &[u8; 32], mac: &[u8]) -> bool {
        hmac::verify(&self.0, hash, mac).is_ok()
    }
}

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuditKey(..)")
    }
}

/// Authenticates backups (HMAC-SHA256 over the whole file): only a vault
/// that holds the root key can make a backup its restore accepts, so a
/// backup changed by anyone else (and its tag fixed up) is refused.
pub struct BackupKey(hmac::Key);

impl BackupKey {
    /// The backup key derived from `seed`.
    pub fn derive(seed: &DerivationSeed) -> Self {
        seed.with_derived(BACKUP_KEY_LABEL, |k| {
            Self(hmac::Key::new(hmac::HMAC_SHA256, k))
        })
    }

    /// A MAC over bytes still to come.
    pub fn start(&self) -> BackupMac {
        BackupMac(hmac::Context::with_key(&self.0))
    }
}

impl fmt::Debug for BackupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BackupKey(..)")
    }
}

/// A backup's MAC being computed, one piece at a time.
pub struct BackupMac(hmac::Context);

impl BackupMac {
    /// Adds `bytes` to what the MAC covers.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The tag of everything added.
    pub fn finish(self) -> [u8; 32] {
        tag32(&self.0.sign())
    }

    /// Whether `tag` is the tag of everything added (constant time).
    pub fn verify(self, tag: &[u8]) -> bool {
        super::ct_eq(&self.finish(), tag)
    }
}

impl fmt::Debug for BackupMac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BackupMac(..)")
    }
}

/// Signs audit checkpoints (Ed25519); its public half verifies exports offline.
pub struct CheckpointKey(ring::signature::Ed25519KeyPair);

impl CheckpointKey {
    /// The checkpoint key derived from `seed`.
    pub fn derive(seed: &DerivationSeed) -> Result<Self, CryptoError> {
        seed.with_derived(CHECKPOINT_KEY_LABEL, |k| {
            ring::signature::Ed25519KeyPair::from_seed_unchecked(k)
                .map(Self)
                .map_err(|_| CryptoError::Internal("ed25519 key"))
        })
    }

    /// The public key (32 bytes).
    pub fn public(&self) -> Vec<u8> {
        use ring::signature::KeyPair;
        self.0.public_key().as_ref().to_vec()
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.0.sign(message).as_ref().to_vec()
    }
}

impl fmt::Debug for CheckpointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CheckpointKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_prints_no_key_material() {
        let bytes = [0xAB; KEY_LEN];
        let all = format!(
            "{:?} {:?} {:?} {:?}",
            RootKey::from_bytes(&bytes),
            KeyEncryptionKey::from_bytes(3, &bytes),
            DataKey::from_bytes(1, &bytes),
            DerivationSeed::from_bytes(&bytes),
        );
        assert!(
            !all.to_lowercase().contains("ab, ") && !all.contains("171"),
            "{all}"
        );
        assert!(all.contains("version: 3"));
    }

    /// The blind index and the credential hash are on disk: their
    /// construction must not change between versions.
    #[test]
    fn mac_pair_is_the_hmac_of_name_zero_value() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &[9; KEY_LEN]);
        let whole = hmac::sign(&key, b"email\0x@y.com");
        assert_eq!(&mac_pair(&key, b"email", b"x@y.com")[..], whole.as_ref());
        assert_eq!(&tag32(&whole)[..], whole.as_ref());
    }

    #[test]
    fn backup_mac_is_keyed_and_checks_every_byte() {
        let a = BackupKey::derive(&DerivationSeed::from_bytes(&[1; KEY_LEN]));
        let b = BackupKey::derive(&DerivationSeed::from_bytes(&[2; KEY_LEN]));
        let tag = |k: &BackupKey, parts: &[&[u8]]| {
            let mut m = k.start();
            for p in parts {
                m.update(p);
            }
            m.finish()
        };
        let t = tag(&a, &[b"VAULT-", b"BACKUP"]);
        assert_eq!(t, tag(&a, &[b"VAULT-BACKUP"]), "pieces do not matter");
        assert_ne!(t, tag(&b, &[b"VAULT-BACKUP"]), "another vault's key");
        assert_ne!(t, tag(&a, &[b"VAULT-BACKUQ"]));
        let mut m = a.start();
        m.update(b"VAULT-BACKUP");
        assert!(m.verify(&t));
        let mut m = a.start();
        m.update(b"VAULT-BACKUP");
        assert!(!m.verify(&t[..31]));
        assert_eq!(format!("{a:?}"), "BackupKey(..)");
    }

    #[test]
    fn blind_index_is_keyed_and_field_separated() {
        let a = IndexKey::derive(&DerivationSeed::from_bytes(&[1; KEY_LEN]));
        let b = IndexKey::derive(&DerivationSeed::from_bytes(&[2; KEY_LEN]));
        assert_eq!(a.blind("email", "x@y.com"), a.blind("email", "x@y.com"));
        assert_ne!(a.blind("email", "x@y.com"), b.blind("email", "x@y.com"));
        assert_ne!(a.blind("email", "x@y.com"), a.blind("phone", "x@y.com"));
        assert_ne!(a.blind("ab", "c"), a.blind("a", "bc"));
    }
}
