//! Keys, envelope encryption, field ciphers and blind indexes.
//!
//! ```text
//! root key (dev key file now; Shamir shares or an HSM later)
//!   ├─ key-encrypting keys, versioned, stored wrapped by the root key
//!   │    └─ one data key (DEK) per subject, stored wrapped by a KEK version
//!   │         └─ field ciphertexts, AES-256-GCM
//!   └─ derivation seed, stored wrapped by the root key
//!        └─ index key (HKDF) → HMAC-SHA256 blind indexes for look-ups
//! ```
//!
//! Every ciphertext is an [`envelope`]: a format byte, the version of the key
//! that sealed it, a random 96-bit nonce, then the AES-256-GCM output. The
//! header and a context (what the ciphertext belongs to) are the AAD, so a
//! ciphertext moved elsewhere fails to open.
//!
//! Why a derivation seed rather than deriving the index key from the root key
//! directly: the root key will be able to live in an HSM that never exports
//! it, and the blind index must survive that move unchanged.

pub mod envelope;
pub mod hsm;
pub mod keyring;
pub mod keys;
pub mod rootkey;
pub mod shamir;

use ring::rand::{SecureRandom, SystemRandom};

/// Why a cryptographic operation failed. Deliberately coarse: a wrong key, a
/// tampered ciphertext and a moved ciphertext are the same failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// Decryption or authentication failed.
    #[error("decryption failed")]
    DecryptionFailed,
    /// The operating system's random generator failed.
    #[error("random generator unavailable")]
    Random,
    /// A key could not be made from its derived bytes.
    #[error("key derivation failed: {0}")]
    Internal(&'static str),
}

/// Constant-time equality of tokens, MACs and hashes (lengths are public).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Lower-case hex of `bytes` (file names, share text, fingerprints).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Fills `N` bytes from the operating system's generator.
pub fn random_array<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut out = [0u8; N];
    SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| CryptoError::Random)?;
    Ok(out)
}
