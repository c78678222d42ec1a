//! Bearer token parsing (`vault::auth::credentials`, the `parse` behind
//! every authenticated request's `authorization: Bearer vt1.<id>.<secret>`).
//!
//! Properties: a token that parses has a 16-character id and a secret of 32
//! bytes, or two parts of 16, and re-encoding its parts gives the same
//! text (so one secret has exactly one text).
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use vault::auth::credentials::TOKEN_PREFIX;
use vault::fuzzing::parse_bearer;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some(parts) = parse_bearer(text) else {
        return;
    };
    assert_eq!(parts.id.len(), 16);
    assert_eq!(
        URL_SAFE_NO_PAD.decode(&parts.id).map(|b| b.len()).ok(),
        Some(12)
    );
    let secret = match &parts.approval {
        None => {
            assert_eq!(parts.secret.len(), 32);
            URL_SAFE_NO_PAD.encode(parts.secret.as_slice())
        }
        Some(b) => {
            assert_eq!((parts.secret.len(), b.len()), (16, 16));
            URL_SAFE_NO_PAD.encode(parts.secret.as_slice()) + &URL_SAFE_NO_PAD.encode(b.as_slice())
        }
    };
    assert_eq!(format!("{TOKEN_PREFIX}{}.{secret}", parts.id), text);
});
