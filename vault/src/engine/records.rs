//! Records the engine stores, encoded with prost (unknown fields are kept,
//! new fields can be added with new tags).

use prost::Message;

fn token_eq(a: &str, b: &str) -> bool {
    crate::crypto::ct_eq(a.as_bytes(), b.as_bytes())
}

/// One wrapped data key of a subject.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WrappedDek {
    /// The DEK's version within the subject.
    #[prost(uint32, tag = "1")]
    pub version: u32,
    /// The DEK sealed by a KEK (the KEK version is in the envelope header).
    /// In memory only: the stored record leaves it empty, the key is in the
    /// subject's key slot (records stored before key slots held it here).
    #[prost(bytes = "vec", tag = "2")]
    pub wrapped: Vec<u8>,
    /// Values sealed under this DEK so far (GCM with random nonces: a key
    /// is replaced long before 2^32 uses).
    #[prost(uint64, tag = "3")]
    pub encryptions: u64,
}

/// A subject: its keys, every encrypted value, and consent. One record, so
/// that writing it commits a request atomically; its data keys are in its
/// key slot, so that shredding the slot shreds the subject.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SubjectRecord {
    /// Every DEK the subject has had, still needed to read its values.
    #[prost(message, repeated, tag = "1")]
    pub deks: Vec<WrappedDek>,
    /// The DEK version that encrypts new values.
    #[prost(uint32, tag = "2")]
    pub active_dek: u32,
    /// Every stored value of the subject, one per token.
    #[prost(message, repeated, tag = "3")]
    pub entries: Vec<FieldEntry>,
    /// Purposes the subject consented to.
    #[prost(string, repeated, tag = "4")]
    pub purposes: Vec<String>,
    /// Privacy-policy version the data was collected under.
    #[prost(string, tag = "5")]
    pub policy_version: String,
    /// When the subject was first stored (Unix seconds).
    #[prost(int64, tag = "6")]
    pub created_at: i64,
    /// When the subject's data was last written (Unix seconds).
    #[prost(int64, tag = "7")]
    pub last_activity: i64,
    /// Whether processing is restricted (GDPR 18): stored, revealed to nobody.
    #[prost(bool, tag = "8")]
    pub restricted: bool,
    /// The case of a legal hold (empty: none): no erasure, no expiry.
    #[prost(string, tag = "9")]
    pub legal_hold_case: String,
    /// Why the hold was set.
    #[prost(string, tag = "10")]
    pub legal_hold_reason: String,
    /// When the hold was set (Unix seconds).
    #[prost(int64, tag = "11")]
    pub legal_hold_since: i64,
    /// Retention anchor: the end of travel (Unix seconds; 0: none given).
    #[prost(int64, tag = "12")]
    pub travel_end: i64,
    /// A travel companion's account holder: the subject who supplied this
    /// subject's data ("" when none).
    #[prost(string, tag = "13")]
    pub account_holder: String,
    /// The holder's attestation that the companion agreed (a reference, no
    /// personal data).
    #[prost(string, tag = "14")]
    pub holder_attestation: String,
    /// When the companion was linked to the holder (Unix seconds).
    #[prost(int64, tag = "15")]
    pub linked_at: i64,
    /// Who linked it (principal name).
    #[prost(string, tag = "16")]
    pub linked_by: String,
    /// When the subject was first stored (Unix microseconds; 0 in records
    /// made before it was kept), always after any erasure the journal
    /// records for the same id: what tells a subject stored again after an
    /// erasure from the erased one ([`super::replay_erasures`]).
    #[prost(int64, tag = "17")]
    pub created_at_micros: i64,
    /// The subject's key slot (0 only in a backup made before key slots: a
    /// restore gives it one; a stored record without one is refused).
    #[prost(uint64, tag = "18")]
    pub slot: u64,
    /// The counter of the subject's next value token.
    #[prost(uint32, tag = "19")]
    pub next_counter: u32,
}

impl SubjectRecord {
    /// Whether this record was stored before an erasure of its id at
    /// `erased_at_micros` (so that the erasure must shred it). A record
    /// without `created_at_micros` only has seconds: one made in the same
    /// second as the erasure counts as erased.
    pub fn predates(&self, erased_at_micros: i64) -> bool {
        if self.created_at_micros > 0 {
            self.created_at_micros <= erased_at_micros
        } else {
            self.created_at <= erased_at_micros.div_euclid(1_000_000)
        }
    }
}

impl SubjectRecord {
    /// Puts the wrapped keys its key slot holds (`held`: version and
    /// wrapped key) into the record's DEKs. Returns whether every DEK found
    /// its key (not when the slot changed after the record was read: a
    /// re-key or an erasure in between).
    pub fn fill_keys(&mut self, held: &[(u32, Vec<u8>)]) -> bool {
        let mut complete = true;
        for d in &mut self.deks {
            match held.iter().find(|(v, _)| *v == d.version) {
                Some((_, w)) => d.wrapped.clone_from(w),
                None => complete = false,
            }
        }
        complete
    }

    /// The record encoded as it is stored: without its wrapped keys, which
    /// are in its key slot.
    pub fn stored_form(&mut self) -> Vec<u8> {
        let wrapped: Vec<Vec<u8>> = self
            .deks
            .iter_mut()
            .map(|d| std::mem::take(&mut d.wrapped))
            .collect();
        let bytes = self.encode_to_vec();
        for (d, w) in self.deks.iter_mut().zip(wrapped) {
            d.wrapped = w;
        }
        bytes
    }

    /// The wrapped DEK of `version`.
    pub fn dek(&self, version: u32) -> Option<&WrappedDek> {
        self.deks.iter().find(|d| d.version == version)
    }

    /// The entry of `token` (tokens compared in constant time).
    pub fn entry(&self, token: &str) -> Option<&FieldEntry> {
        self.position(token).and_then(|i| self.entries.get(i))
    }

    /// Where the entry of `token` is in `entries` (tokens compared in
    /// constant time).
    pub fn position(&self, token: &str) -> Option<usize> {
        self.entries.iter().position(|e| token_eq(&e.token, token))
    }

    /// The entry of `token`, to change.
    pub fn entry_mut(&mut self, token: &str) -> Option<&mut FieldEntry> {
        self.entries.iter_mut().find(|e| token_eq(&e.token, token))
    }
}

/// One stored value behind a token.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FieldEntry {
    /// The token that refers to this value.
    #[prost(string, tag = "1")]
    pub token: String,
    /// The field name.
    #[prost(string, tag = "2")]
    pub field: String,
    /// Incremented by each correction; bound into the ciphertext.
    #[prost(uint32, tag = "3")]
    pub value_version: u32,
    /// The subject's DEK version that sealed the value.
    #[prost(uint32, tag = "4")]
    pub dek_version: u32,
    /// The sealed value.
    #[prost(bytes = "vec", tag = "5")]
    pub ciphertext: Vec<u8>,
    /// When the value was stored (Unix seconds).
    #[prost(int64, tag = "6")]
    pub created_at: i64,
    /// When the value was last corrected (Unix seconds).
    #[prost(int64, tag = "7")]
    pub updated_at: i64,
    /// The value's blind index, for look-up fields (to remove it on change).
    #[prost(bytes = "vec", tag = "8")]
    pub blind: Vec<u8>,
    /// When the retention sweeper shredded the value (Unix seconds; 0: it
    /// has not). The ciphertext is then gone and the token answers EXPIRED.
    #[prost(int64, tag = "9")]
    pub shredded_at: i64,
    /// Who stored the value: principal name and role.
    #[prost(string, tag = "10")]
    pub stored_by: String,
    #[prost(string, tag = "11")]
    pub stored_by_role: String,
    /// Who last corrected it ("" if nobody has).
    #[prost(string, tag = "12")]
    pub updated_by: String,
    #[prost(string, tag = "13")]
    pub updated_by_role: String,
    /// When the value's retention ran out while a legal hold kept it (Unix
    /// seconds; 0: it has not): the value then stays expired whatever
    /// activity follows, and is shredded once the hold is lifted.
    #[prost(int64, tag = "14")]
    pub expired_at: i64,
    /// Whether the token has a `tok/` pointer (a card token, or a token
    /// issued before key slots); a value token finds its subject through
    /// the locator it carries.
    #[prost(bool, tag = "15")]
    pub pointer: bool,
}
