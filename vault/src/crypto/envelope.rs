//! The one ciphertext format: `format ‖ key version ‖ nonce ‖ AES-256-GCM(ct ‖ tag)`.
//!
//! The 5-byte header and the caller's context are authenticated as AAD, so
//! changing the version, or opening under another context, fails.

use super::keys::AeadKey;
use super::{CryptoError, random_array};
use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Nonce, aead::generic_array::GenericArray};
use zeroize::Zeroizing;

/// Format byte of version-1 envelopes (AES-256-GCM, 96-bit random nonce).
pub const FORMAT_V1: u8 = 1;
/// Length of the header: format byte and big-endian key version.
pub const HEADER_LEN: usize = 5;
/// Length of the nonce.
pub const NONCE_LEN: usize = 12;
/// Length of the GCM tag.
pub const TAG_LEN: usize = 16;
/// Bytes an envelope adds to its plaintext.
pub const OVERHEAD: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;

/// The header of an envelope sealed by key `key_version`.
pub(crate) fn header(key_version: u32) -> [u8; HEADER_LEN] {
    let v = key_version.to_be_bytes();
    [FORMAT_V1, v[0], v[1], v[2], v[3]]
}

/// An envelope's `(header, nonce, ciphertext ‖ tag)`, if it is one.
pub(crate) fn split(sealed: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    if sealed.len() < OVERHEAD || sealed[0] != FORMAT_V1 {
        return None;
    }
    let (header, rest) = sealed.split_at(HEADER_LEN);
    let (nonce, ct) = rest.split_at(NONCE_LEN);
    Some((header, nonce, ct))
}

/// The AAD of an envelope: its header, then the caller's context.
pub(crate) fn aad(header: &[u8], context: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + context.len());
    aad.extend_from_slice(header);
    aad.extend_from_slice(context);
    aad
}

/// Seals `plaintext` under `key` (of `key_version`), bound to `context`.
pub(crate) fn seal(
    key: &AeadKey,
    key_version: u32,
    context: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let nonce: [u8; NONCE_LEN] = random_array()?;
    let mut out = Vec::with_capacity(plaintext.len() + OVERHEAD);
    out.extend_from_slice(&header(key_version));
    out.extend_from_slice(&nonce);
    let ct = key
        .cipher()
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: &aad(&out[..HEADER_LEN], context),
            },
        )
        .map_err(|_| CryptoError::EncryptionFailed)?;
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Calls `f` with the AAD of an envelope, built on the stack when it is
/// short (every value's is), so that opening a value allocates only its
/// plaintext.
fn with_aad<R>(header: &[u8], context: &[u8], f: impl FnOnce(&[u8]) -> R) -> R {
    const STACK: usize = 256;
    let n = header.len() + context.len();
    if n > STACK {
        return f(&aad(header, context));
    }
    let mut buf = [0u8; STACK];
    buf[..header.len()].copy_from_slice(header);
    buf[header.len()..n].copy_from_slice(context);
    f(&buf[..n])
}

/// Opens an envelope sealed by [`seal`] with the same key and context.
pub(crate) fn open(
    key: &AeadKey,
    context: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let (header, nonce, ct) = split(sealed).ok_or(CryptoError::DecryptionFailed)?;
    with_aad(header, context, |aad| {
        key.cipher()
            .decrypt(GenericArray::from_slice(nonce), Payload { msg: ct, aad })
    })
    .map(Zeroizing::new)
    .map_err(|_| CryptoError::DecryptionFailed)
}

/// The key version written in an envelope's header.
pub fn key_version(sealed: &[u8]) -> Option<u32> {
    let (header, _, _) = split(sealed)?;
    Some(u32::from_be_bytes([
        header[1], header[2], header[3], header[4],
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keys::KEY_LEN;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(pt in proptest::collection::vec(any::<u8>(), 0..512), ctx in proptest::collection::vec(any::<u8>(), 0..64), v in any::<u32>()) {
            let k = AeadKey::new(&[7; KEY_LEN]);
            let sealed = seal(&k, v, &ctx, &pt).unwrap();
            prop_assert_eq!(sealed.len(), pt.len() + OVERHEAD);
            prop_assert_eq!(key_version(&sealed), Some(v));
            prop_assert_eq!(&open(&k, &ctx, &sealed).unwrap()[..], &pt[..]);
        }

        #[test]
        fn any_bit_flip_fails(pt in proptest::collection::vec(any::<u8>(), 1..64), bit in any::<usize>()) {
            let k = AeadKey::new(&[7; KEY_LEN]);
            let mut sealed = seal(&k, 1, b"ctx", &pt).unwrap();
            let bit = bit % (sealed.len() * 8);
            sealed[bit / 8] ^= 1 << (bit % 8);
            prop_assert_eq!(open(&k, b"ctx", &sealed).unwrap_err(), CryptoError::DecryptionFailed);
        }
    }

    #[test]
    fn wrong_context_or_key_fails_the_same_way() {
        let k = AeadKey::new(&[7; KEY_LEN]);
        let other = AeadKey::new(&[8; KEY_LEN]);
        let sealed = seal(&k, 1, b"subject-a/email", b"secret").unwrap();
        assert_eq!(
            open(&k, b"subject-b/email", &sealed).unwrap_err(),
            CryptoError::DecryptionFailed
        );
        assert_eq!(
            open(&other, b"subject-a/email", &sealed).unwrap_err(),
            CryptoError::DecryptionFailed
        );
        assert_eq!(
            open(&k, b"", &sealed[..4]).unwrap_err(),
            CryptoError::DecryptionFailed
        );
    }

    #[test]
    fn nonces_differ() {
        let k = AeadKey::new(&[7; KEY_LEN]);
        let a = seal(&k, 1, b"", b"same").unwrap();
        let b = seal(&k, 1, b"", b"same").unwrap();
        assert_ne!(a, b);
    }
}
