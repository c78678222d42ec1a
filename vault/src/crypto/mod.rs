//! Keys, envelope encryption, field ciphers and blind indexes.
//!
//! ```text
//! root key (a dev key file, Shamir shares, or an HSM's key)
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
    /// Encryption failed: nothing was sealed (AES-GCM refuses only inputs
    /// beyond its limits; an HSM may refuse for its own reasons).
    #[error("encryption failed")]
    EncryptionFailed,
    /// The operating system's random generator failed.
    #[error("random generator unavailable")]
    Random,
    /// A misuse or a broken invariant inside the vault (a key that cannot be
    /// made from its derived bytes, a poisoned lock, parameters out of
    /// range), described without values.
    #[error("internal crypto error: {0}")]
    Internal(&'static str),
}

/// Constant-time equality of tokens, MACs and hashes (lengths are public).
///
/// Eight bytes at a time: the differences are OR-ed together, each word
/// through an optimisation barrier, so the work never depends on where the
/// inputs differ (`subtle`'s slice comparison puts a barrier on every byte,
/// which made looking a token up in its record a visible share of a read).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    if a.len() != b.len() {
        return false;
    }
    let (aw, ar) = a.as_chunks::<8>();
    let (bw, br) = b.as_chunks::<8>();
    let mut diff = 0u64;
    for (x, y) in aw.iter().zip(bw) {
        diff |= std::hint::black_box(u64::from_ne_bytes(*x) ^ u64::from_ne_bytes(*y));
    }
    for (x, y) in ar.iter().zip(br) {
        diff |= std::hint::black_box(u64::from(x ^ y));
    }
    bool::from(diff.ct_eq(&0))
}

/// Fills `N` bytes from the operating system's generator.
pub fn random_array<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut out = [0u8; N];
    SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| CryptoError::Random)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::ct_eq;

    #[test]
    fn ct_eq_finds_a_difference_at_any_position_and_any_length() {
        for len in [0usize, 1, 7, 8, 9, 16, 31, 32, 45] {
            let a: Vec<u8> = (0..len).map(|i| i as u8 ^ 0x5a).collect();
            assert!(ct_eq(&a, &a.clone()), "len {len}");
            for at in 0..len {
                for bit in [0x01u8, 0x80] {
                    let mut b = a.clone();
                    b[at] ^= bit;
                    assert!(!ct_eq(&a, &b), "len {len}, byte {at}");
                }
            }
            let mut longer = a.clone();
            longer.push(0);
            assert!(!ct_eq(&a, &longer), "len {len}");
        }
    }
}
