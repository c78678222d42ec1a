//! Token formats: opaque references to one stored value, safe to keep anywhere.
//!
//! A value token is `tok_` followed by 22 URL-safe base64 characters (132
//! bits): the encrypted locator of its value ([`locator`]), which says
//! nothing without the vault's token key. (Tokens issued before key slots
//! were 128 random bits in the same shape, and still work.)
//!
//! A card number's token has the number's shape instead, so that systems
//! built for card numbers can keep it: the same length, the same last four
//! digits, the other digits random, and a check digit that always fails the
//! Luhn check, so it is never a card number, never its own card's number,
//! and is told apart from one without asking the vault (PCI DSS tokenization
//! guidelines). It carries nothing of the number beyond the last four, which
//! PCI DSS allows to be shown.

pub mod locator;

use crate::crypto::{CryptoError, random_array};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Prefix of value tokens.
pub const PREFIX: &str = "tok_";
const BODY_LEN: usize = 22;

/// Lengths of card numbers, and so of card tokens.
pub const CARD_DIGITS: std::ops::RangeInclusive<usize> = 12..=19;

/// A syntactically valid token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(String);

impl Token {
    /// The value token of `locator` under the token key `key` (`None` if
    /// the locator does not fit the format).
    pub fn from_locator(key: &crate::crypto::keys::TokenKey, at: locator::Locator) -> Option<Self> {
        locator::encode(key, at).map(Self)
    }

    /// A new random token (the format before locators; for tests).
    pub fn generate() -> Result<Self, CryptoError> {
        let bytes: [u8; 16] = random_array()?;
        let mut s = String::with_capacity(PREFIX.len() + BODY_LEN);
        s.push_str(PREFIX);
        URL_SAFE_NO_PAD.encode_string(bytes, &mut s);
        Ok(Self(s))
    }

    /// A new card token for the card number `digits` (canonical: 12 to 19
    /// ASCII digits): same length, same last four, random elsewhere, failing
    /// the Luhn check. The caller makes sure it is not already taken.
    pub fn generate_card(digits: &str) -> Result<Self, CryptoError> {
        let n = digits.len();
        if !CARD_DIGITS.contains(&n) || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CryptoError::Internal("a card token needs a card number"));
        }
        let last4 = &digits[n - 4..];
        // One in ten random heads passes the Luhn check with these last four;
        // 64 draws all passing is a broken generator, not bad luck.
        for _ in 0..64 {
            let mut s = String::with_capacity(n);
            random_digits(n - 4, &mut s)?;
            s.push_str(last4);
            if !crate::cards::luhn_valid(&s) {
                return Ok(Self(s));
            }
        }
        Err(CryptoError::Random)
    }

    /// Whether this is a card token.
    pub fn is_card(&self) -> bool {
        !self.0.starts_with(PREFIX)
    }

    /// Parses `text`, or `None` if it is not a well-formed token. A string of
    /// digits that passes the Luhn check is a card number, not a token.
    pub fn parse(text: &str) -> Option<Self> {
        well_formed(text).then(|| Self(text.to_owned()))
    }

    /// [`Token::parse`], keeping `text`'s allocation.
    pub fn parse_owned(text: String) -> Option<Self> {
        well_formed(&text).then_some(Self(text))
    }

    /// The token's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The token's text, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// Whether `text` is a token (see [`Token::parse`]): a card token, or
/// `tok_` and 22 URL-safe base64 characters.
fn well_formed(text: &str) -> bool {
    if CARD_DIGITS.contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit()) {
        return !crate::cards::luhn_valid(text);
    }
    let Some(body) = text.strip_prefix(PREFIX) else {
        return false;
    };
    body.len() == BODY_LEN
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Appends `n` uniformly random decimal digits to `out`.
fn random_digits(n: usize, out: &mut String) -> Result<(), CryptoError> {
    while out.len() < n {
        let bytes: [u8; 32] = random_array()?;
        // 250 is the largest multiple of 10 that fits a byte: rejecting
        // 250..=255 keeps every digit equally likely.
        for b in bytes.into_iter().filter(|b| *b < 250) {
            if out.len() == n {
                break;
            }
            out.push(char::from(b'0' + b % 10));
        }
    }
    Ok(())
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_tokens_parse_and_differ() {
        let a = Token::generate().unwrap();
        let b = Token::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 26);
        assert_eq!(Token::parse(a.as_str()), Some(a));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for bad in [
            "",
            "tok_",
            "tok_short",
            "TOK_AAAAAAAAAAAAAAAAAAAAAA",
            "tok_AAAAAAAAAAAAAAAAAAAA+A",
            "tok_AAAAAAAAAAAAAAAAAAAAAAA",
            "tok_AAAAAAAAAAAAAAAAAAAA=A",
        ] {
            assert!(Token::parse(bad).is_none(), "{bad}");
        }
        // Every one of the 132 bits counts (a locator token uses them all).
        assert!(Token::parse("tok_AAAAAAAAAAAAAAAAAAAAAB").is_some());
    }

    /// A random card number of `len` digits that passes the Luhn check.
    fn card_number(len: usize) -> String {
        loop {
            let mut s = String::new();
            random_digits(len, &mut s).unwrap();
            if crate::cards::luhn_valid(&s) {
                return s;
            }
        }
    }

    /// PCI-TOK, the token format: 100,000 random valid numbers of every
    /// length; each token keeps length and last four, fails Luhn, is not the
    /// number, parses back as a card token and not as a random one.
    #[test]
    fn pci_tok_card_tokens_keep_length_and_last_four_and_fail_luhn() {
        let mut heads_differ = 0;
        for i in 0..100_000 {
            let len = 12 + i % 8;
            let number = card_number(len);
            let t = Token::generate_card(&number).unwrap();
            let s = t.as_str();
            assert_eq!(s.len(), len);
            assert_eq!(&s[len - 4..], &number[len - 4..]);
            assert!(!crate::cards::luhn_valid(s));
            assert_ne!(s, number);
            assert!(!s.contains(&number));
            assert!(t.is_card());
            assert_eq!(Token::parse(s), Some(t.clone()));
            heads_differ += usize::from(s[..len - 4] != number[..len - 4]);
        }
        // Random heads: equal to the number's head only by chance (at most
        // about one in 10^8 for 12 digits).
        assert!(heads_differ >= 99_990, "{heads_differ}");
    }

    #[test]
    fn card_numbers_are_not_tokens() {
        assert!(Token::parse("4111111111111111").is_none());
        assert!(Token::parse("4111111111111112").unwrap().is_card());
        assert!(Token::parse("41111111112").is_none(), "11 digits");
        assert!(Token::parse("41111111111111111112").is_none(), "20 digits");
        assert!(Token::parse("4111 1111 1111 1112").is_none());
        assert!(Token::generate_card("41111111111").is_err());
        assert!(Token::generate_card("4111-1111-1111-1111").is_err());
        assert!(!Token::generate().unwrap().is_card());
    }

    #[test]
    fn random_digits_are_uniform_enough() {
        let mut s = String::new();
        random_digits(100_000, &mut s).unwrap();
        for d in '0'..='9' {
            let n = s.chars().filter(|c| *c == d).count();
            assert!((9_000..11_000).contains(&n), "{d}: {n}");
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = Token::parse(&s);
        }

        /// Both ways of parsing take and refuse the same strings: random
        /// text, near-tokens (the prefix and 22 characters of the body's
        /// alphabet or beyond it) and digit strings of card length.
        #[test]
        fn parse_owned_agrees_with_parse(
            s in "\\PC{0,40}|tok_[A-Za-z0-9_=+/-]{20,24}|[0-9]{11,20}"
        ) {
            prop_assert_eq!(Token::parse_owned(s.clone()), Token::parse(&s));
        }
    }
}
