//! Key layout of the vault's records in a [`super::Store`].
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `meta/format` | | layout version (one byte) |
//! | `key/seed` | | derivation seed wrapped by the root key |
//! | `key/kek/` | version (u32 BE) | KEK wrapped by the root key |
//! | `key/active-kek` | | active KEK version (u32 BE) |
//! | `sub/` | subject id | `SubjectRecord`: every encrypted value, consent, and the number of the subject's key slot |
//! | `slot/` | key slot (u64 BE) | subject id (a pointer), or a tombstone once erased |
//! | `field/` | field number (u8) | field name: the numbers value tokens carry |
//! | `tok/` | card token (or a token issued before key slots) | subject id (a pointer) |
//! | `idx/` | blind index (32 bytes) ‖ subject id | token (a pointer) |
//! | `cred/` | credential id | `CredentialRecord`: name, role, expiry, revocation, keyed hash of the secret |
//! | `meta/bootstrapped` | | present once the first operator token was issued |
//! | `erased/` | subject id | `ErasureReceiptBody`: the erasure journal (no personal data) |
//! | `revoked/` | credential id | revocation time (i64 BE, Unix seconds): the revocation journal |
//! | `shred/` | key slot (u64 BE) ‖ version (u32 BE; all ones: every version) | an intent to shred, until done |
//!
//! Subjects' wrapped data keys are not entries: each subject has a key slot
//! ([`super::slots`]) that an erasure overwrites with zeros. A value token
//! carries its subject's slot, its field's number and a counter, encrypted
//! ([`crate::tokens::locator`]); Detokenize follows `slot/` to the subject.
//! Card tokens keep their digits and so carry nothing: they point to their
//! subject through `tok/`.
//!
//! The pointer of an erased subject's slot, and of an erased card token, is
//! a tombstone: a zero byte (subject ids never start with one) and, for a
//! card token, the field name, so that the token answers `ERASED`.
//!
//! The subject record is the truth: one key holds all of a subject's
//! ciphertexts, so writing it is the single atomic commit of a request.
//! Key slots, slot, token and index pointers are written before it; a
//! reader follows them and then checks the subject record, so a pointer
//! left by a request that never committed (a crash between the writes)
//! leads nowhere. sled's log may keep old versions of a record for a while;
//! without the key in the slot they are ciphertexts nobody can open.
//!
//! Subject ids and tokens are pseudonymous references, stored as they are;
//! values exist only as ciphertexts, index entries only as keyed hashes.

/// The layout version this code writes and reads.
pub const LAYOUT_VERSION: u8 = 2;
/// Key of the layout version.
pub const META_FORMAT: &[u8] = b"meta/format";
/// Key of the wrapped derivation seed.
pub const SEED: &[u8] = b"key/seed";
/// Key of the active KEK version.
pub const ACTIVE_KEK: &[u8] = b"key/active-kek";
/// Prefix of wrapped KEKs.
pub const KEK_PREFIX: &[u8] = b"key/kek/";
/// Prefix of KEK creation times: `key/kek-meta/<version>` = Unix seconds.
pub const KEK_META_PREFIX: &[u8] = b"key/kek-meta/";
/// Prefix of retired KEK versions: `key/kek-retired/<version>` = Unix
/// seconds (the wrapped KEK itself is destroyed).
pub const KEK_RETIRED_PREFIX: &[u8] = b"key/kek-retired/";
/// Prefix of subject records.
pub const SUBJECT_PREFIX: &[u8] = b"sub/";
/// Prefix of token pointers.
pub const TOKEN_PREFIX: &[u8] = b"tok/";
/// Prefix of blind index entries.
pub const INDEX_PREFIX: &[u8] = b"idx/";
/// Prefix of bearer-token credentials.
pub const CREDENTIAL_PREFIX: &[u8] = b"cred/";
/// Present once the bootstrap operator token has been issued.
pub const BOOTSTRAPPED: &[u8] = b"meta/bootstrapped";
/// Prefix of the erasure journal.
pub const ERASED_PREFIX: &[u8] = b"erased/";
/// Prefix of the revocation journal: `revoked/<credential id>` = Unix
/// seconds (i64 BE), written with the revocation; a restore replays it.
pub const REVOKED_PREFIX: &[u8] = b"revoked/";
/// The KEK version every DEK is to be rewrapped under (present while a
/// rotation's rewrap has not finished; resumed at start).
pub const REWRAP: &[u8] = b"key/rewrap";
/// Prefix of the travel-companion links: `cmp/<holder>/<companion>`.
pub const COMPANION_PREFIX: &[u8] = b"cmp/";
/// The token key version that encrypts new value tokens (one byte; absent:
/// 1). A restore moves it on by one.
pub const TOKEN_VERSION: &[u8] = b"key/token-version";
/// Prefix of the subjects' key slots: `slot/<u64 BE>` = subject id.
pub const SLOT_PREFIX: &[u8] = b"slot/";
/// Prefix of the field numbers: `field/<u8>` = field name.
pub const FIELD_PREFIX: &[u8] = b"field/";
/// Prefix of the intents to shred a key slot (see [`super::sled`]).
pub const SHRED_PREFIX: &[u8] = b"shred/";
/// When a node last reloaded its access policy (on a shared store: the
/// other nodes reload theirs when it changes).
pub const POLICY_RELOADED: &[u8] = b"meta/policy-reloaded";
/// First byte of a tombstone (of an erased subject's key slot pointer, or
/// card token pointer).
pub const TOMBSTONE: u8 = 0;

/// Key of a subject's erasure journal entry.
pub fn erased(subject_id: &str) -> Vec<u8> {
    join(ERASED_PREFIX, &[subject_id.as_bytes()])
}

/// Key of a credential's revocation journal entry.
pub fn revoked(credential_id: &str) -> Vec<u8> {
    join(REVOKED_PREFIX, &[credential_id.as_bytes()])
}

/// Whether `key` is an entry of a journal a restore replays (erasures,
/// revocations).
pub fn is_journal(key: &[u8]) -> bool {
    key.starts_with(ERASED_PREFIX) || key.starts_with(REVOKED_PREFIX)
}

/// Key of the link from account holder `holder` to its travel companion
/// `companion` (subject ids hold no `/`).
pub fn companion(holder: &str, companion: &str) -> Vec<u8> {
    join(
        COMPANION_PREFIX,
        &[holder.as_bytes(), b"/", companion.as_bytes()],
    )
}

/// Prefix of every companion link of `holder`.
pub fn companions_of(holder: &str) -> Vec<u8> {
    join(COMPANION_PREFIX, &[holder.as_bytes(), b"/"])
}

/// The tombstone of an erased token of `field`.
pub fn tombstone(field: &str) -> Vec<u8> {
    join(&[TOMBSTONE], &[field.as_bytes()])
}

/// Key of the pointer from key slot `slot` to its subject.
pub fn slot(slot: u64) -> Vec<u8> {
    join(SLOT_PREFIX, &[&slot.to_be_bytes()])
}

/// The slot number of a `slot/` key.
pub fn slot_number(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(
        key.strip_prefix(SLOT_PREFIX)?.try_into().ok()?,
    ))
}

/// Key of field number `number`.
pub fn field(number: u8) -> Vec<u8> {
    join(FIELD_PREFIX, &[&[number]])
}

/// Length of a blind index value.
pub const BLIND_LEN: usize = 32;

fn join(prefix: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + parts.iter().map(|p| p.len()).sum::<usize>());
    k.extend_from_slice(prefix);
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

/// Key of the wrapped KEK of `version`.
pub fn kek(version: u32) -> Vec<u8> {
    join(KEK_PREFIX, &[&version.to_be_bytes()])
}

/// Key of the creation time of KEK `version`.
pub fn kek_meta(version: u32) -> Vec<u8> {
    join(KEK_META_PREFIX, &[&version.to_be_bytes()])
}

/// Key of the retirement of KEK `version`.
pub fn kek_retired(version: u32) -> Vec<u8> {
    join(KEK_RETIRED_PREFIX, &[&version.to_be_bytes()])
}

/// Key of a bearer-token credential.
pub fn credential(id: &str) -> Vec<u8> {
    join(CREDENTIAL_PREFIX, &[id.as_bytes()])
}

/// Key of a subject's record.
pub fn subject(subject_id: &str) -> Vec<u8> {
    join(SUBJECT_PREFIX, &[subject_id.as_bytes()])
}

/// Key of a token's pointer to its subject.
pub fn token(token: &str) -> Vec<u8> {
    join(TOKEN_PREFIX, &[token.as_bytes()])
}

/// Prefix of every index entry of one blind index value.
pub fn index_prefix(blind: &[u8; BLIND_LEN]) -> Vec<u8> {
    join(INDEX_PREFIX, &[blind])
}

/// Key of the index entry of `blind` for `subject_id`.
pub fn index(blind: &[u8; BLIND_LEN], subject_id: &str) -> Vec<u8> {
    join(INDEX_PREFIX, &[blind, subject_id.as_bytes()])
}

/// The subject id at the end of an index key.
pub fn index_subject(key: &[u8]) -> Option<&str> {
    std::str::from_utf8(key.get(INDEX_PREFIX.len() + BLIND_LEN..)?).ok()
}
