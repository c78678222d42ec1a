//! Value tokens that carry their own locator: what Tokenize issues for
//! every value but a card number.
//!
//! A locator says where a value lives: the subject's key slot, the field,
//! and the value's counter within the subject; a random nonce makes each
//! attempt's token its own (a Tokenize that failed does not advance the
//! subject's counter, and its retry must not mint the token the failed
//! attempt's audit event already names). Its token is
//! `tok_` + 22 URL-safe base64 characters holding 132 bits: a 4-bit token
//! key version, then one 128-bit block, the locator encrypted with that
//! version's token key (AES-256 as a pseudorandom permutation):
//!
//! ```text
//! block = AES-256(token key v, slot (40 bits) ‖ field (8) ‖ counter (32) ‖ nonce (16) ‖ zeros (32))
//! token = "tok_" ‖ base64url-sextets(v (4 bits) ‖ block (128 bits))
//! ```
//!
//! Without the key a token is 128 bits that say nothing; with it, Detokenize
//! finds the subject without a token → subject pointer. A forged, damaged or
//! foreign token (another vault's key) decrypts to a block whose 32 check
//! bits are zero with probability 2^-32, and so answers like any unknown
//! token (the check is a fast filter: a token is only ever taken for a
//! value whose record holds that very token). The version sits in the token's first character, so the token key
//! can rotate for new tokens while old ones still open; a token whose version
//! the vault has no key for is unknown too. The tokens issued before this
//! format (128 random bits) decode as some version with a failing check.

use super::PREFIX;
use crate::crypto::keys::TokenKey;

/// Largest subject slot a locator holds (40 bits).
pub const MAX_SLOT: u64 = (1 << 40) - 1;

/// Highest token key version (4 bits; 0 is never used).
pub const MAX_VERSION: u8 = 15;

const BODY_LEN: usize = 22;
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Where a value lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Locator {
    /// The subject's key slot (up to [`MAX_SLOT`]).
    pub slot: u64,
    /// The field's number in the schema.
    pub field: u8,
    /// The value's counter within the subject.
    pub counter: u32,
    /// Random: tells apart two tokens minted for the same counter (an
    /// attempt that failed, and its retry).
    pub nonce: u16,
}

impl Locator {
    fn block(self) -> Option<[u8; 16]> {
        if self.slot > MAX_SLOT {
            return None;
        }
        let v = (u128::from(self.slot) << 88)
            | (u128::from(self.field) << 80)
            | (u128::from(self.counter) << 48)
            | (u128::from(self.nonce) << 32);
        Some(v.to_be_bytes())
    }

    fn from_block(block: [u8; 16]) -> Option<Self> {
        let v = u128::from_be_bytes(block);
        if v & ((1u128 << 32) - 1) != 0 {
            return None;
        }
        Some(Self {
            slot: u64::try_from(v >> 88).ok()?,
            field: u8::try_from((v >> 80) & 0xff).ok()?,
            counter: u32::try_from((v >> 48) & 0xffff_ffff).ok()?,
            nonce: u16::try_from((v >> 32) & 0xffff).ok()?,
        })
    }
}

/// The token of `locator` under `key`, or `None` if the slot is beyond
/// [`MAX_SLOT`] or the key's version is not 1 to [`MAX_VERSION`].
pub fn encode(key: &TokenKey, locator: Locator) -> Option<String> {
    let version = key.version();
    if version == 0 || version > MAX_VERSION {
        return None;
    }
    let block = u128::from_be_bytes(key.encrypt_block(locator.block()?));
    let mut out = String::with_capacity(PREFIX.len() + BODY_LEN);
    out.push_str(PREFIX);
    // 132 bits, six at a time from the top: the version's 4 bits and the
    // block's first 2, then the block's other 126.
    let first = (usize::from(version) << 2) | usize::try_from(block >> 126).ok()?;
    out.push(char::from(ALPHABET[first]));
    for i in 0..21 {
        let sextet = usize::try_from((block >> (120 - 6 * i)) & 63).ok()?;
        out.push(char::from(ALPHABET[sextet]));
    }
    Some(out)
}

/// The token key version a token names (its first character), or `None` if
/// `text` is not `tok_` + 22 base64url characters.
pub fn version_of(text: &str) -> Option<u8> {
    Some(sextet(*body(text)?.first()?)? >> 2)
}

/// The 22 characters after `tok_`, if `text` has that shape.
fn body(text: &str) -> Option<&[u8]> {
    let body = text.strip_prefix(PREFIX)?.as_bytes();
    (body.len() == BODY_LEN).then_some(body)
}

/// The locator `text` carries under `key` (whose version must be the
/// token's), or `None`: malformed, another version, or a failing check
/// (forged, damaged, another vault's, or a random token of the old format).
pub fn decode(key: &TokenKey, text: &str) -> Option<Locator> {
    let body = body(text)?;
    let first = sextet(body[0])?;
    if first >> 2 != key.version() {
        return None;
    }
    let mut block = u128::from(first & 3);
    for &c in &body[1..] {
        block = (block << 6) | u128::from(sextet(c)?);
    }
    Locator::from_block(key.decrypt_block(block.to_be_bytes()))
}

fn sextet(c: u8) -> Option<u8> {
    Some(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        b'_' => 63,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keys::DerivationSeed;

    fn key(seed: u8, version: u8) -> TokenKey {
        TokenKey::derive(&DerivationSeed::from_bytes(&[seed; 32]), version, None)
    }

    const AT: Locator = Locator {
        slot: 123_456_789,
        field: 7,
        counter: 42,
        nonce: 0x5a5a,
    };

    #[test]
    fn a_token_carries_its_locator_and_looks_like_any_value_token() {
        let k = key(1, 1);
        let t = encode(&k, AT).unwrap();
        assert!(t.starts_with("tok_") && t.len() == 26, "{t}");
        // The shape of every value token.
        assert!(t[4..].bytes().all(|b| ALPHABET.contains(&b)), "{t}");
        assert!(super::super::Token::parse(&t).is_some());
        assert_eq!(decode(&k, &t), Some(AT));
        assert_eq!(version_of(&t), Some(1));
        let edge = Locator {
            slot: MAX_SLOT,
            field: u8::MAX,
            counter: u32::MAX,
            nonce: u16::MAX,
        };
        assert_eq!(decode(&k, &encode(&k, edge).unwrap()), Some(edge));
        assert_eq!(
            encode(
                &k,
                Locator {
                    slot: MAX_SLOT + 1,
                    ..AT
                }
            ),
            None
        );
    }

    #[test]
    fn neighbouring_locators_give_unrelated_tokens() {
        let k = key(1, 1);
        let a = encode(&k, AT).unwrap();
        for b in [
            encode(&k, Locator { counter: 43, ..AT }).unwrap(),
            // Same place, another attempt.
            encode(
                &k,
                Locator {
                    nonce: 0x5a5b,
                    ..AT
                },
            )
            .unwrap(),
        ] {
            let same = a.bytes().zip(b.bytes()).filter(|(x, y)| x == y).count();
            // The prefix (4) and the version's character may agree; a
            // 128-bit block shares about a third of a character of 22 by
            // chance.
            assert!(same <= 4 + 1 + 4, "{a} {b}");
        }
    }

    #[test]
    fn any_changed_character_forged_or_foreign_token_is_unknown() {
        let k = key(1, 1);
        let t = encode(&k, AT).unwrap();
        let alphabet: Vec<char> = ALPHABET.iter().map(|&b| char::from(b)).collect();
        for i in 4..t.len() {
            for &c in alphabet.iter().step_by(7) {
                let mut changed: Vec<char> = t.chars().collect();
                if changed[i] == c {
                    continue;
                }
                changed[i] = c;
                let changed: String = changed.into_iter().collect();
                assert_eq!(decode(&k, &changed), None, "{changed}");
            }
        }
        // Another vault's key, another version of this vault's key.
        assert_eq!(decode(&key(2, 1), &t), None);
        assert_eq!(decode(&key(1, 2), &t), None);
        // Random tokens of the old format are unknown, whatever version
        // their first character happens to name.
        for _ in 0..200 {
            let old = super::super::Token::generate().unwrap();
            let v = version_of(old.as_str()).unwrap();
            if v > 0 {
                assert_eq!(decode(&key(1, v), old.as_str()), None);
            }
        }
        for bad in [
            "",
            "tok_",
            "tok_AAAA",
            "tok_!AAAAAAAAAAAAAAAAAAAAA",
            "4111111111111111",
        ] {
            assert_eq!(decode(&k, bad), None, "{bad}");
        }
    }

    #[test]
    fn the_key_rotates_for_new_tokens_and_old_ones_still_open() {
        let (v1, v2) = (key(1, 1), key(1, 2));
        let old = encode(&v1, AT).unwrap();
        let new = encode(&v2, AT).unwrap();
        assert_ne!(old, new);
        assert_eq!((version_of(&old), version_of(&new)), (Some(1), Some(2)));
        assert_eq!(decode(&v1, &old), Some(AT));
        assert_eq!(decode(&v2, &new), Some(AT));
        assert_eq!(encode(&key(1, 0), AT), None);
        assert_eq!(encode(&key(1, 16), AT), None);
    }

    #[test]
    fn debug_of_a_token_key_prints_no_key() {
        assert_eq!(format!("{:?}", key(9, 3)), "TokenKey(v3, ..)");
    }
}
