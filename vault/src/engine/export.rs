//! What a subject export (GDPR 15 and 20) reads of the store: every value
//! of the subject in clear, with its state and expiry, and the companions
//! the subject supplied data for.

use super::records::{FieldEntry, SubjectRecord};
use super::{Engine, open_value};
use crate::error::{Error, Result};
use crate::model::SubjectId;
use crate::store::keys;
use std::sync::Arc;
use zeroize::Zeroizing;

/// The state of one stored value at export time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueState {
    /// Stored and readable: the value is in the export.
    Stored,
    /// Past its retention (the sweeper has not shredded it yet): not read.
    Expired,
    /// Shredded by the retention sweeper.
    Shredded,
    /// A CVV waiting in memory for payment authorisation: never exported.
    Pending,
    /// A CVV revealed once, past its time to live, or dropped by a restart.
    Gone,
    /// A field no longer in `fields.toml`: no longer served.
    Retired,
}

impl ValueState {
    /// The name in the export document.
    pub fn name(self) -> &'static str {
        match self {
            Self::Stored => "stored",
            Self::Expired => "expired",
            Self::Shredded => "shredded",
            Self::Pending => "pending_in_memory",
            Self::Gone => "gone",
            Self::Retired => "retired_field",
        }
    }
}

/// One value of an exported subject.
pub struct ExportedValue {
    /// The entry (token, field, times, who stored it; its ciphertext too,
    /// which the document leaves out).
    pub entry: FieldEntry,
    /// What became of the value.
    pub state: ValueState,
    /// The canonical value, when `state` is [`ValueState::Stored`].
    pub value: Option<Zeroizing<String>>,
    /// When it expires (Unix seconds), by its class.
    pub expires_at: Option<i64>,
}

impl std::fmt::Debug for ExportedValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportedValue")
            .field("field", &self.entry.field)
            .field("state", &self.state)
            .field("value", &self.value.as_ref().map(|_| "[redacted]"))
            .finish_non_exhaustive()
    }
}

/// A travel companion the subject supplied data for.
#[derive(Debug, Clone)]
pub struct Companion {
    /// The companion's subject id.
    pub subject_id: String,
    /// When it was linked (Unix seconds; 0 if its record is gone).
    pub linked_at: i64,
}

/// Everything the store holds about one subject.
#[derive(Debug)]
pub struct SubjectData {
    /// The subject's record (consent, restriction, hold, anchors, link).
    pub record: Arc<SubjectRecord>,
    /// Each stored value, in the order stored.
    pub values: Vec<ExportedValue>,
    /// The companions linked to the subject as their account holder.
    pub companions: Vec<Companion>,
}

impl Engine {
    /// Reads everything about `subject` for its export: each value
    /// decrypted unless expired, shredded or a CVV (never exported).
    /// `NOT_FOUND` if the subject holds nothing (or was erased).
    pub fn export_subject(&self, subject: &SubjectId) -> Result<SubjectData> {
        let sid = subject.as_str();
        let record = self
            .subject_record(sid)?
            .ok_or(Error::NotFound("subject"))?;
        let now = self.clock.now();
        let mut values = Vec::with_capacity(record.entries.len());
        for entry in &record.entries {
            let expires_at = self.expires_at(&record, entry);
            let (state, value) = match self.schema.field(&entry.field) {
                None => (ValueState::Retired, None),
                Some(f) if f.memory_only() => {
                    if self.cvv.is_pending(&entry.token, sid, now) {
                        (ValueState::Pending, None)
                    } else {
                        (ValueState::Gone, None)
                    }
                }
                Some(_) if entry.shredded_at > 0 || entry.ciphertext.is_empty() => {
                    (ValueState::Shredded, None)
                }
                Some(_) if self.is_expired(&record, entry, now) => (ValueState::Expired, None),
                Some(_) => {
                    let dek = self.dek_of(sid, &record, entry.dek_version)?;
                    (ValueState::Stored, Some(open_value(sid, entry, &dek)?))
                }
            };
            values.push(ExportedValue {
                entry: FieldEntry {
                    ciphertext: Vec::new(),
                    blind: Vec::new(),
                    ..entry.clone()
                },
                state,
                value,
                expires_at,
            });
        }
        let mut companions = Vec::new();
        let prefix = keys::companions_of(sid);
        for (key, _) in self.store.scan_prefix(&prefix, usize::MAX)? {
            let Some(id) = key
                .strip_prefix(prefix.as_slice())
                .and_then(|k| std::str::from_utf8(k).ok())
            else {
                continue;
            };
            let linked_at = self
                .subject_record(id)?
                .filter(|r| r.account_holder == sid)
                .map_or(0, |r| r.linked_at);
            companions.push(Companion {
                subject_id: id.to_owned(),
                linked_at,
            });
        }
        Ok(SubjectData {
            record,
            values,
            companions,
        })
    }
}
