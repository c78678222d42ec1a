//! Shamir secret sharing of the 32-byte root key over GF(2^8) (the AES
//! field, x^8 + x^4 + x^3 + x + 1), byte by byte: any `threshold` of the
//! shares give the key back, fewer give nothing about it.
//!
//! Field arithmetic is constant-time (no table look-ups indexed by secret
//! bytes, no secret-dependent branches). Shares are written for custodians
//! as text: `vault-share-v1:<vault id>:<threshold>:<index>:<32 bytes hex>:<check>`
//! where `check` is the first 4 bytes of SHA-256 over the rest, so that a
//! mistyped share is a clear error. The vault keeps SHA-256 of each share
//! (under its vault id and index) to tell a wrong share from a right one
//! without holding anything that helps rebuild the key.

use super::{CryptoError, random_array};
use ring::digest::{SHA256, digest};
use zeroize::Zeroizing;

/// Length of the shared secret.
pub const SECRET_LEN: usize = 32;

const PREFIX: &str = "vault-share-v1";

/// Multiplication in GF(2^8), in constant time.
fn mul(mut a: u8, mut b: u8) -> u8 {
    let mut p = 0u8;
    for _ in 0..8 {
        // Add a if the low bit of b is set, without branching.
        p ^= a & 0u8.wrapping_sub(b & 1);
        let carry = 0u8.wrapping_sub(a >> 7);
        a = (a << 1) ^ (0x1b & carry);
        b >>= 1;
    }
    p
}

/// The multiplicative inverse (a^254; 0 for 0), in constant time.
fn inv(a: u8) -> u8 {
    // a^254 = a^(2+4+8+16+32+64+128)
    let mut result = 1u8;
    let mut power = a;
    for _ in 0..7 {
        power = mul(power, power);
        result = mul(result, power);
    }
    result
}

/// One custodian's share.
pub struct Share {
    /// The x coordinate, 1 to 255.
    pub index: u8,
    /// The polynomials' values at `index`, one per secret byte.
    pub value: Zeroizing<[u8; SECRET_LEN]>,
}

impl std::fmt::Debug for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Share")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

/// Splits `secret` into `n` shares, any `k` of which rebuild it (2 <= k <=
/// n <= 255).
pub fn split(secret: &[u8; SECRET_LEN], n: u8, k: u8) -> Result<Vec<Share>, CryptoError> {
    if k < 2 || n < k {
        return Err(CryptoError::Internal("shares need 2 <= k <= n"));
    }
    // coefficients[j][i]: coefficient of x^(j+1) for secret byte i.
    let mut coefficients = Vec::with_capacity(usize::from(k - 1));
    for _ in 1..k {
        coefficients.push(Zeroizing::new(random_array::<SECRET_LEN>()?));
    }
    let mut shares = Vec::with_capacity(usize::from(n));
    for x in 1..=n {
        let mut value = Zeroizing::new([0u8; SECRET_LEN]);
        for (i, v) in value.iter_mut().enumerate() {
            // Horner: ((c_{k-1} x + c_{k-2}) x + ...) x + secret
            let mut y = 0u8;
            for c in coefficients.iter().rev() {
                y = mul(y ^ c[i], x);
            }
            *v = y ^ secret[i];
        }
        shares.push(Share { index: x, value });
    }
    Ok(shares)
}

/// The secret from shares with distinct indexes (Lagrange interpolation
/// at 0). With fewer than the threshold the result is a wrong key, which
/// the caller finds out (it does not open the vault's keys).
pub fn combine(shares: &[Share]) -> Option<Zeroizing<[u8; SECRET_LEN]>> {
    if shares.is_empty() {
        return None;
    }
    for (i, a) in shares.iter().enumerate() {
        if a.index == 0 || shares[..i].iter().any(|b| b.index == a.index) {
            return None;
        }
    }
    let mut secret = Zeroizing::new([0u8; SECRET_LEN]);
    for a in shares {
        // The Lagrange basis polynomial of a at 0: prod b / (b - a).
        let mut basis = 1u8;
        for b in shares.iter().filter(|b| b.index != a.index) {
            basis = mul(basis, mul(b.index, inv(b.index ^ a.index)));
        }
        for (s, v) in secret.iter_mut().zip(a.value.iter()) {
            *s ^= mul(basis, *v);
        }
    }
    Some(secret)
}

/// A share as a custodian holds it, with the vault it belongs to and the
/// threshold.
#[derive(Debug)]
pub struct EncodedShare {
    /// The vault's id (8 hex digits).
    pub vault_id: String,
    /// Shares needed.
    pub threshold: u8,
    /// The share.
    pub share: Share,
}

fn check(body: &str) -> String {
    crate::model::hex(&digest(&SHA256, body.as_bytes()).as_ref()[..4])
}

/// The text form of `share` for a custodian.
pub fn encode(vault_id: &str, threshold: u8, share: &Share) -> Zeroizing<String> {
    let body = Zeroizing::new(format!(
        "{PREFIX}:{vault_id}:{threshold}:{}:{}",
        share.index,
        crate::model::hex(share.value.as_ref())
    ));
    Zeroizing::new(format!("{}:{}", body.as_str(), check(&body)))
}

/// Why a share's text is not a share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ShareError {
    /// Not in the share format.
    #[error("not a vault share (expected vault-share-v1:...)")]
    Format,
    /// The checksum does not match: a typo or a damaged copy.
    #[error("the share's checksum does not match: mistyped or damaged")]
    Checksum,
}

/// A number as [`encode`] writes it: decimal digits, no sign, no leading
/// zero (`str::parse` and `from_str_radix` also take a `+`, so that one
/// share would have many texts).
fn decimal(text: &str) -> Option<u8> {
    let canonical =
        text.bytes().all(|b| b.is_ascii_digit()) && !(text.len() > 1 && text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

/// Parses a custodian's share text (surrounding whitespace ignored). Hex
/// digits may be in either case; everything else has the one spelling
/// that [`encode`] writes.
pub fn decode(text: &str) -> Result<EncodedShare, ShareError> {
    let text = text.trim();
    let (body, sum) = text.rsplit_once(':').ok_or(ShareError::Format)?;
    let parts: Vec<&str> = body.split(':').collect();
    let [prefix, vault_id, threshold, index, value] = parts.as_slice() else {
        return Err(ShareError::Format);
    };
    if *prefix != PREFIX
        || vault_id.len() != 8
        || !vault_id.bytes().all(|b| b.is_ascii_hexdigit())
        || value.len() != 2 * SECRET_LEN
        || !value.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(ShareError::Format);
    }
    if !super::ct_eq(check(body).as_bytes(), sum.as_bytes()) {
        return Err(ShareError::Checksum);
    }
    let threshold = decimal(threshold).ok_or(ShareError::Format)?;
    let index = decimal(index).ok_or(ShareError::Format)?;
    if index == 0 || threshold < 2 {
        return Err(ShareError::Format);
    }
    let mut bytes = Zeroizing::new([0u8; SECRET_LEN]);
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(value.get(2 * i..2 * i + 2).ok_or(ShareError::Format)?, 16)
            .map_err(|_| ShareError::Format)?;
    }
    Ok(EncodedShare {
        vault_id: (*vault_id).to_owned(),
        threshold,
        share: Share {
            index,
            value: bytes,
        },
    })
}

/// What the vault keeps to recognise share `index`: SHA-256 over the vault
/// id, the index and the share's value.
pub fn fingerprint(vault_id: &str, share: &Share) -> [u8; 32] {
    let mut input = Zeroizing::new(Vec::with_capacity(64));
    input.extend_from_slice(b"vault/v1/share\0");
    input.extend_from_slice(vault_id.as_bytes());
    input.push(share.index);
    input.extend_from_slice(share.value.as_ref());
    let d = digest(&SHA256, &input);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_arithmetic() {
        assert_eq!(mul(0x57, 0x83), 0xc1); // FIPS-197's example
        for a in 1..=255u8 {
            assert_eq!(mul(a, inv(a)), 1, "{a}");
        }
        assert_eq!(inv(0), 0);
    }

    #[test]
    fn any_threshold_of_shares_rebuilds_the_secret_and_fewer_do_not() {
        let secret = [7u8; SECRET_LEN];
        let shares = split(&secret, 5, 3).unwrap();
        assert_eq!(shares.len(), 5);
        let pick = |idx: &[usize]| -> Vec<Share> {
            idx.iter()
                .map(|&i| Share {
                    index: shares[i].index,
                    value: shares[i].value.clone(),
                })
                .collect()
        };
        for set in [[0, 1, 2], [4, 2, 0], [1, 3, 4]] {
            assert_eq!(*combine(&pick(&set)).unwrap(), secret, "{set:?}");
        }
        assert_eq!(*combine(&pick(&[0, 1, 2, 3])).unwrap(), secret);
        assert_ne!(*combine(&pick(&[0, 1])).unwrap(), secret);
        assert!(combine(&pick(&[0, 0, 1])).is_none(), "duplicate index");
        for (n, k) in [(2, 3), (3, 1), (0, 0)] {
            assert_eq!(
                split(&secret, n, k).unwrap_err(),
                CryptoError::Internal("shares need 2 <= k <= n")
            );
        }
    }

    #[test]
    fn two_shares_of_three_are_consistent_with_every_secret_byte() {
        // With k-1 shares every value of a secret byte is possible: for
        // each candidate, some third share completes it.
        let secret = [0x42u8; SECRET_LEN];
        let shares = split(&secret, 3, 3).unwrap();
        let mut seen = std::collections::HashSet::new();
        for third in 0..=255u8 {
            let mut v = [0u8; SECRET_LEN];
            v[0] = third;
            let set = vec![
                Share {
                    index: 1,
                    value: shares[0].value.clone(),
                },
                Share {
                    index: 2,
                    value: shares[1].value.clone(),
                },
                Share {
                    index: 3,
                    value: Zeroizing::new(v),
                },
            ];
            seen.insert(combine(&set).unwrap()[0]);
        }
        assert_eq!(seen.len(), 256);
    }

    #[test]
    fn share_text_round_trips_and_typos_are_caught() {
        let secret = [9u8; SECRET_LEN];
        let shares = split(&secret, 3, 2).unwrap();
        let text = encode("0a1b2c3d", 2, &shares[1]);
        let back = decode(&format!("  {}\n", text.as_str())).unwrap();
        assert_eq!((back.vault_id.as_str(), back.threshold), ("0a1b2c3d", 2));
        assert_eq!(back.share.index, 2);
        assert_eq!(*back.share.value, *shares[1].value);
        assert!(format!("{:?}", back.share).find("value").is_none());
        let mut typo = text.as_str().to_owned();
        let at = typo.len() - 20;
        let c = if &typo[at..=at] == "0" { "1" } else { "0" };
        typo.replace_range(at..=at, c);
        assert_eq!(decode(&typo).unwrap_err(), ShareError::Checksum);
        assert_eq!(decode("hello").unwrap_err(), ShareError::Format);
        assert_ne!(
            fingerprint("0a1b2c3d", &shares[0]),
            fingerprint("0a1b2c3d", &shares[1])
        );
    }

    /// `body` with its right checksum.
    fn with_check(body: &str) -> String {
        format!("{body}:{}", check(body))
    }

    /// Caught by the `shamir_share` fuzz target
    /// (`fuzz/regressions/shamir_share/plus-sign-in-hex.bin`): a `+` in
    /// place of a hex digit (`from_str_radix("+4", 16)` is 4), and signs or
    /// leading zeros in the threshold and index, were taken, so one share
    /// had many texts. Upper-case hex stays accepted
    /// (`uppercase-hex.bin`): custodians may type it.
    #[test]
    fn fuzz_share_parse_plus_sign_accepted() {
        let hex = "00112233045566778899aabbccddeeff00112233445588966779aabbccddeeff";
        let good = with_check(&format!("{PREFIX}:0123abcd:2:1:{hex}"));
        let share = decode(&good).unwrap();
        assert_eq!(encode("0123abcd", 2, &share.share).as_str(), good);
        for bad in [
            format!("{PREFIX}:0123abcd:2:1:{}", hex.replacen("04", "+4", 1)),
            format!("{PREFIX}:0123abcd:+2:1:{hex}"),
            format!("{PREFIX}:0123abcd:2:+1:{hex}"),
            format!("{PREFIX}:0123abcd:02:1:{hex}"),
            format!("{PREFIX}:0123abcd:2:001:{hex}"),
            format!("{PREFIX}:0123abcd:2::{hex}"),
        ] {
            assert_eq!(
                decode(&with_check(&bad)).unwrap_err(),
                ShareError::Format,
                "{bad}"
            );
        }
        let upper = with_check(&format!("{PREFIX}:0123ABCD:2:1:{}", hex.to_uppercase()));
        let share = decode(&upper).unwrap();
        assert_eq!(
            (share.vault_id.as_str(), share.share.index),
            ("0123ABCD", 1)
        );
        assert_eq!(
            share.share.value.as_ref(),
            decode(&good).unwrap().share.value.as_ref()
        );
    }
}
