//! Token formats: opaque references to one stored value, safe to keep anywhere.
//!
//! A token is `tok_` followed by 128 bits from the operating system's
//! generator in URL-safe base64 (22 characters). It is random, so it carries
//! nothing of the value. (Format-preserving card tokens come with card
//! handling.)

use crate::crypto::{CryptoError, random_array};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Prefix of random tokens.
pub const PREFIX: &str = "tok_";
const BODY_LEN: usize = 22;

/// A syntactically valid token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(String);

impl Token {
    /// A new random token.
    pub fn generate() -> Result<Self, CryptoError> {
        let bytes: [u8; 16] = random_array()?;
        let mut s = String::with_capacity(PREFIX.len() + BODY_LEN);
        s.push_str(PREFIX);
        URL_SAFE_NO_PAD.encode_string(bytes, &mut s);
        Ok(Self(s))
    }

    /// Parses `text`, or `None` if it is not a well-formed token.
    pub fn parse(text: &str) -> Option<Self> {
        let body = text.strip_prefix(PREFIX)?;
        let ok = body.len() == BODY_LEN
            && body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && URL_SAFE_NO_PAD.decode(body).is_ok_and(|b| b.len() == 16);
        ok.then(|| Self(text.to_owned()))
    }

    /// The token's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
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
        ] {
            assert!(Token::parse(bad).is_none(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = Token::parse(&s);
        }
    }
}
