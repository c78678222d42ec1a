//! The subject export document (GDPR 15 and 20), schema
//! `vault.subject-export.v1`, documented in `docs/lifecycle.md`.

use crate::audit::{AuditEvent, SubjectHistory};
use crate::engine::{SubjectData, ValueState};
use crate::model::calendar::utc_time;
use crate::schema::Schema;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// The export format's name and version.
pub const FORMAT: &str = "vault.subject-export.v1";

/// Most audit events one export lists.
pub const MAX_HISTORY: usize = 100_000;

/// Disclosures that showed something of a value (an earlier export too:
/// the privacy officer received it for the subject).
const SHOWN: [&str; 5] = ["PLAIN", "PARTIAL", "MASKED", "FOUND", "EXPORTED"];

fn time_or_null(unix_secs: i64) -> Value {
    if unix_secs > 0 {
        Value::String(utc_time(unix_secs))
    } else {
        Value::Null
    }
}

fn by(principal: &str, role: &str) -> Value {
    if principal.is_empty() {
        Value::Null
    } else {
        json!({"principal": principal, "role": role})
    }
}

/// The export of `subject_id` from what the store and the audit trail
/// hold, at `now` (Unix seconds).
pub(crate) fn document(
    schema: &Schema,
    subject_id: &str,
    data: &SubjectData,
    history: &SubjectHistory,
    now: i64,
) -> Value {
    let r = &data.record;
    let purposes: Vec<Value> = r
        .purposes
        .iter()
        .map(|p| {
            let def = schema.purpose(p);
            json!({
                "purpose": p,
                "basis": def.map(|d| d.basis.name()),
                "description": def.map(|d| d.description.as_str()),
            })
        })
        .collect();
    let fields: Vec<Value> = data
        .values
        .iter()
        .map(|v| {
            let e = &v.entry;
            let def = schema.field(&e.field);
            let class = def.and_then(|d| schema.class(&d.class));
            json!({
                "field": e.field,
                "token": e.token,
                "value": v.value.as_ref().map(|s| s.as_str()),
                "state": v.state.name(),
                "class": def.map(|d| d.class.as_str()),
                "purposes": def.map(|d| d.purposes.clone()).unwrap_or_default(),
                "stored_at": time_or_null(e.created_at),
                "stored_by": by(&e.stored_by, &e.stored_by_role),
                "corrections": e.value_version.saturating_sub(1),
                "corrected_at": if e.value_version > 1 { time_or_null(e.updated_at) } else { Value::Null },
                "corrected_by": by(&e.updated_by, &e.updated_by_role),
                "retention": class.map(|c| json!({
                    "days": c.retention.days,
                    "after": c.retention.after.name(),
                })),
                "expires_at": if v.state == ValueState::Stored || v.state == ValueState::Expired {
                    v.expires_at.map_or(Value::Null, time_or_null)
                } else {
                    Value::Null
                },
                "shredded_at": time_or_null(e.shredded_at),
            })
        })
        .collect();
    let mut recipients: BTreeMap<(&str, &str), Recipient<'_>> = BTreeMap::new();
    let mut access = Vec::with_capacity(history.events.len());
    for e in &history.events {
        let items: Vec<_> = e
            .items
            .iter()
            .filter(|i| {
                i.subject_id == subject_id
                    || (i.subject_id.is_empty() && e.subject_id == subject_id)
            })
            .collect();
        if e.outcome == "ok" {
            for i in items
                .iter()
                .filter(|i| SHOWN.contains(&i.disclosure.as_str()))
            {
                let who = recipients.entry((&e.principal, &e.role)).or_default();
                who.fields.insert(&i.field);
                if !e.purpose.is_empty() {
                    who.purposes.insert(&e.purpose);
                }
                who.times += 1;
                who.first = who.first.min(e.time_unix_micros);
                who.last = who.last.max(e.time_unix_micros);
            }
        }
        access.push(event(e, &items));
    }
    let recipients: Vec<Value> = recipients
        .into_iter()
        .map(|((principal, role), w)| {
            json!({
                "principal": principal,
                "role": role,
                "fields": w.fields,
                "purposes": w.purposes,
                "values_shown": w.times,
                "first_at": utc_time(w.first / 1_000_000),
                "last_at": utc_time(w.last / 1_000_000),
            })
        })
        .collect();
    json!({
        "format": FORMAT,
        "generated_at": utc_time(now),
        "subject_id": subject_id,
        "first_stored_at": time_or_null(r.created_at),
        "last_activity_at": time_or_null(r.last_activity),
        "policy_version": r.policy_version,
        "consented_purposes": purposes,
        "restricted": r.restricted,
        "legal_hold": if r.legal_hold_case.is_empty() { Value::Null } else { json!({
            "case_id": r.legal_hold_case,
            "reason": r.legal_hold_reason,
            "since": time_or_null(r.legal_hold_since),
        })},
        "travel_end": time_or_null(r.travel_end),
        "account_holder": if r.account_holder.is_empty() { Value::Null } else { json!({
            "subject_id": r.account_holder,
            "attestation": r.holder_attestation,
            "linked_at": time_or_null(r.linked_at),
            "linked_by": r.linked_by,
        })},
        "companions": data.companions.iter().map(|c| json!({
            "subject_id": c.subject_id,
            "linked_at": time_or_null(c.linked_at),
        })).collect::<Vec<_>>(),
        "fields": fields,
        "recipients": recipients,
        "access_history": access,
        "access_history_since": history.complete_since.map_or(Value::Null, |t| Value::String(utc_time(t / 1_000_000))),
        "access_history_truncated": history.truncated,
    })
}

/// Who has been shown values of the subject.
struct Recipient<'a> {
    fields: BTreeSet<&'a str>,
    purposes: BTreeSet<&'a str>,
    times: u64,
    first: i64,
    last: i64,
}

impl Default for Recipient<'_> {
    fn default() -> Self {
        Self {
            fields: BTreeSet::new(),
            purposes: BTreeSet::new(),
            times: 0,
            first: i64::MAX,
            last: i64::MIN,
        }
    }
}

/// One audit event as the export lists it: who, when, what, why, and what
/// they got of this subject's fields (never a value; events hold none).
fn event(e: &AuditEvent, items: &[&crate::audit::AuditItem]) -> Value {
    json!({
        "seq": e.seq,
        "time": utc_time(e.time_unix_micros / 1_000_000),
        "principal": e.principal,
        "role": e.role,
        "action": e.action,
        "rpc": e.rpc,
        "purpose": e.purpose,
        "outcome": e.outcome,
        "fields": items.iter().map(|i| json!({
            "field": i.field,
            "token": i.token,
            "disclosure": i.disclosure,
        })).collect::<Vec<_>>(),
    })
}

/// `doc` as JSON text, in one buffer allocated once at its final size (a
/// buffer that grows would leave copies of the values behind in the memory
/// it frees), with every string of `doc` wiped before it is dropped. The
/// text goes out in a [`vault_proto::v1::SubjectExportResponse`], which
/// wipes it in turn once it is sent.
pub(crate) fn into_json(mut doc: Value) -> Result<String, serde_json::Error> {
    /// Counts the bytes written to it.
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut size = Count(0);
    let written = serde_json::to_writer_pretty(&mut size, &doc).and_then(|()| {
        let mut buf = Vec::with_capacity(size.0);
        serde_json::to_writer_pretty(&mut buf, &doc).map(|()| buf)
    });
    wipe(&mut doc);
    let buf = written?;
    // serde_json writes UTF-8 only; anything else is wiped, not returned.
    String::from_utf8(buf).map_err(|e| {
        zeroize::Zeroize::zeroize(&mut e.into_bytes());
        <serde_json::Error as serde::ser::Error>::custom("export document is not UTF-8")
    })
}

/// Wipes every string of `v` (values and metadata alike; object keys are
/// the document's own names).
fn wipe(v: &mut Value) {
    match v {
        Value::String(s) => zeroize::Zeroize::zeroize(s),
        Value::Array(a) => a.iter_mut().for_each(wipe),
        Value::Object(m) => m.values_mut().for_each(wipe),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wipes_on_drop<T: zeroize::ZeroizeOnDrop>() {}

    /// The messages that carry values in clear wipe them when dropped, and
    /// the export's text is written into a buffer that never grows (no
    /// freed copy) while the document's own strings are wiped.
    #[test]
    fn detokenize_response_strings_and_export_buffers_are_zeroized() {
        use vault_proto::v1;
        wipes_on_drop::<v1::Disclosed>();
        wipes_on_drop::<v1::SubjectExportResponse>();
        wipes_on_drop::<v1::FieldValue>();
        wipes_on_drop::<v1::UpdateRequest>();
        wipes_on_drop::<v1::LookupRequest>();

        let doc = json!({
            "format": FORMAT,
            "fields": (0..200).map(|i| json!({
                "field": "email",
                "value": format!("person.{i}@example.com"),
                "corrections": i,
            })).collect::<Vec<_>>(),
        });
        let want = serde_json::to_string_pretty(&doc).unwrap();
        let text = into_json(doc.clone()).unwrap();
        assert_eq!(text, want);
        assert_eq!(text.capacity(), text.len(), "allocated once, at its size");

        let mut doc = doc;
        wipe(&mut doc);
        let left = doc.to_string();
        assert!(!left.contains("example.com"), "{left}");
        assert!(!left.contains(FORMAT));
        assert!(left.contains("\"corrections\":199"));
    }
}
