//! Envelope open (`vault::crypto::envelope` through `DataKey::open`): every
//! ciphertext read from the store, under a fixed key.
//!
//! Properties: arbitrary bytes never open (nor panic); the input sealed
//! opens to itself, with its key version in the header; one flipped bit,
//! a cut, or another context fails, always as `DecryptionFailed`. Contexts
//! go beyond 256 bytes, so that both ways of building the AAD are reached.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault::crypto::CryptoError;
use vault::crypto::envelope::{OVERHEAD, key_version};
use vault::crypto::keys::DataKey;

fuzz_target!(|data: &[u8]| {
    let key = DataKey::from_bytes(7, &[0x42; 32]);
    let (ctx_len, flip, rest) = match data {
        [a, b, c, rest @ ..] => (usize::from(*a) * 2, u16::from_le_bytes([*b, *c]), rest),
        _ => return,
    };
    let (context, body) = rest.split_at(ctx_len.min(rest.len()));

    assert_eq!(
        key.open(context, body).map(|_| ()),
        Err(CryptoError::DecryptionFailed),
        "forged envelope opened"
    );

    let sealed = key.seal(context, body).expect("sealing works");
    assert_eq!(sealed.len(), body.len() + OVERHEAD);
    assert_eq!(key_version(&sealed), Some(7));
    assert_eq!(key.open(context, &sealed).expect("opens").as_slice(), body);

    let bit = usize::from(flip) % (sealed.len() * 8);
    let mut flipped = sealed.clone();
    flipped[bit / 8] ^= 1 << (bit % 8);
    assert_eq!(
        key.open(context, &flipped).map(|_| ()),
        Err(CryptoError::DecryptionFailed)
    );
    let cut = usize::from(flip) % sealed.len();
    assert_eq!(
        key.open(context, &sealed[..cut]).map(|_| ()),
        Err(CryptoError::DecryptionFailed)
    );
    let mut other = context.to_vec();
    other.push(0);
    assert_eq!(
        key.open(&other, &sealed).map(|_| ()),
        Err(CryptoError::DecryptionFailed)
    );
    let other_key = DataKey::from_bytes(7, &[0x43; 32]);
    assert_eq!(
        other_key.open(context, &sealed).map(|_| ()),
        Err(CryptoError::DecryptionFailed)
    );
});
