//! Token parsing (`vault::tokens::Token::parse`): the text of a token that
//! callers send to Detokenize and Update.
//!
//! Properties: both parsers agree; a token that parses is its text,
//! unchanged (canonical: re-encoding gives the same text); a card token has
//! a card number's length, digits only, and fails the Luhn check; a random
//! token is `tok_` and the canonical base64url of 16 bytes.
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
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
            .expect("a random token has the prefix");
        let bytes = URL_SAFE_NO_PAD.decode(body).expect("its body is base64url");
        assert_eq!(bytes.len(), 16);
        assert_eq!(URL_SAFE_NO_PAD.encode(&bytes), body, "non-canonical body");
    }
    assert_eq!(Token::parse(token.as_str()), Some(token.clone()));
});
