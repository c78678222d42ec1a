//! The subject export document (GDPR 15 and 20), schema
//! `vault.subject-export.v1`, documented in `docs/lifecycle.md`.

use crate::audit::{AuditEvent, SubjectHistory};
use crate::engine::types::utc_time;
use crate::engine::{SubjectData, ValueState};
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
