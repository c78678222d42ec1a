//! Token parsing (`vault::tokens::Token::parse`): the text of a token that
//! callers send to Detokenize and Update.
//!
//! Properties: both parsers agree; a token that parses is its text,
//! unchanged (canonical: re-encoding gives the same text); a card token has
//! a card number's length, digits only, and fails the Luhn check; a value
//! token is `tok_` and 22 base64url characters (132 bits).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault::tokens::{CARD_DIGITS, PREFIX, Token};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = Token::parse(text);
    assert_eq!(parsed, Token::parse_owned(text.to_owned()));
    let Some(token) = parsed else {
        return;
    };
    assert_eq!(token.as_str(), text);
    assert_eq!(token.to_string(), text);
    if token.is_card() {
        assert!(CARD_DIGITS.contains(&text.len()), "{text:?}");
        assert!(text.bytes().all(|b| b.is_ascii_digit()), "{text:?}");
        assert!(
            !vault::cards::luhn_valid(text),
            "a card number taken for a token"
        );
    } else {
        let body = text
            .strip_prefix(PREFIX)
            .expect("a value token has the prefix");
        // 22 base64url characters: all 132 bits count (a locator token's
        // key version and encrypted block).
        assert_eq!(body.len(), 22, "{text:?}");
        assert!(
            body.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{text:?}"
        );
    }
    assert_eq!(Token::parse(token.as_str()), Some(token.clone()));
});
