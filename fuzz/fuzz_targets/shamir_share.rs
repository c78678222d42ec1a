//! Shamir share text (`vault::crypto::shamir::decode`): what custodians
//! type or paste into `vaultctl unseal` and `vaultd officer`.
//!
//! The checksum (4 bytes of SHA-256) would stop the fuzzer at the first
//! step, so when the first byte is odd the rest is taken as a share's body
//! and given its right checksum here; otherwise the text is used as it is.
//!
//! Properties: decoding never panics; a share that decodes has an index of
//! 1 to 255, a threshold of at least 2 and an 8-hex-digit vault id, and
//! encoding it again gives the text it came from (without surrounding
//! white space, and up to the case of hex digits): one share, one text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault::crypto::shamir::{decode, encode};

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let text = if mode & 1 == 1 {
        let sum = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
        let check: String = sum.as_ref()[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("{text}:{check}")
    } else {
        text.to_owned()
    };
    let Ok(share) = decode(&text) else {
        return;
    };
    assert_ne!(share.share.index, 0);
    assert!(share.threshold >= 2);
    assert_eq!(share.vault_id.len(), 8);
    assert!(share.vault_id.bytes().all(|b| b.is_ascii_hexdigit()));
    // Hex digits may be typed in either case (the checksum covers the text
    // as typed); everything else has one spelling.
    let again = encode(&share.vault_id, share.threshold, &share.share);
    let body = |t: &str| t.rsplit_once(':').map(|(b, _)| b.to_ascii_lowercase());
    assert_eq!(
        body(&again),
        body(text.trim()),
        "share text is not canonical"
    );
});
