//! The verifiable export format of the audit trail (JSON Lines), and its
//! offline verification. This module owns the format: `vaultctl audit
//! export` writes these lines, `vaultctl audit verify FILE` checks them, and
//! `vaultctl audit query --json` prints events as [`event_json`] does.
//!
//! An export is, line by line:
//!
//! 1. `{"vault_audit_export": 2, "after_seq": N, "start_prev_hash": HEX}`
//! 2. one line per event: `{"seq": S, "hash": HEX, "encoded": BASE64, "event": {...}}`
//!    where `event` is the event as JSON (the schema of docs/audit.md) and
//!    `encoded` its protobuf encoding, over which the chain hash is computed;
//! 3. `{"checkpoint": {"seq": S, "hash": HEX, "signature": HEX, "time_unix_micros": T,
//!    "start_after_seq": N, "start_prev_hash": HEX, "export_signature": HEX}}`:
//!    Ed25519 signatures by the vault over the last event's hash, and over
//!    the export's start bound to that end and time.
//!
//! [`verify_export`] needs only the export and the vault's public key
//! (`vaultctl audit pubkey`): it recomputes every hash, checks that each
//! event's JSON matches its encoding, and checks both signatures, so that
//! an export cut at either end, or with lines after its checkpoint, is
//! refused. Version 1 exports (whose start was not signed) are refused.

use crate::proto::{AuditEvent, Checkpoint, ExportedEvent};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use prost::Message;
use vault_proto::audit::{chain_hash, verify_checkpoint, verify_export_checkpoint};

/// Lower-case hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses lower- or upper-case hexadecimal.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    let t = text.trim();
    if !t.len().is_multiple_of(2) {
        return None;
    }
    (0..t.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(t.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The export's first line.
pub fn header_line(after_seq: u64, start_prev_hash: &[u8]) -> String {
    serde_json::json!({"vault_audit_export": 2, "after_seq": after_seq,
        "start_prev_hash": hex(start_prev_hash)})
    .to_string()
}

/// One audit event as JSON (the export schema: the proto's field names).
pub fn event_json(e: &AuditEvent) -> serde_json::Value {
    let items: Vec<_> = e
        .items
        .iter()
        .map(|i| {
            serde_json::json!({"field": i.field, "token": i.token,
                "disclosure": i.disclosure, "subject_id": i.subject_id})
        })
        .collect();
    let mut v = serde_json::json!({
        "seq": e.seq, "time_unix_micros": e.time_unix_micros, "event_type": e.event_type,
        "principal": e.principal, "role": e.role, "auth": e.auth, "peer": e.peer,
        "request_id": e.request_id, "rpc": e.rpc, "action": e.action, "purpose": e.purpose,
        "subject_id": e.subject_id, "items": items, "outcome": e.outcome,
        "status_code": e.status_code, "detail": e.detail,
    });
    if let (Some(c), Some(map)) = (&e.checkpoint, v.as_object_mut()) {
        map.insert(
            "checkpoint".into(),
            serde_json::json!({"seq": c.seq, "hash": hex(&c.hash),
                "signature": hex(&c.signature),
                "time_unix_micros": c.time_unix_micros}),
        );
    }
    v
}

/// One event's line.
pub fn event_line(e: &ExportedEvent) -> String {
    let event = e.event.as_ref().map_or(serde_json::Value::Null, event_json);
    serde_json::json!({"seq": e.event.as_ref().map_or(0, |e| e.seq), "hash": hex(&e.hash),
        "encoded": STANDARD.encode(&e.encoded), "event": event})
    .to_string()
}

/// The checkpoint's line.
pub fn checkpoint_line(c: &Checkpoint) -> String {
    serde_json::json!({"checkpoint": {"seq": c.seq, "hash": hex(&c.hash),
        "signature": hex(&c.signature), "time_unix_micros": c.time_unix_micros,
        "start_after_seq": c.start_after_seq, "start_prev_hash": hex(&c.start_prev_hash),
        "export_signature": hex(&c.export_signature)}})
    .to_string()
}

/// The checkpoint of a checkpoint line, if it has every field.
fn parse_checkpoint(c: &serde_json::Value) -> Option<Checkpoint> {
    let bytes = |k: &str| c.get(k).and_then(|s| s.as_str()).and_then(unhex);
    Some(Checkpoint {
        seq: c.get("seq")?.as_u64()?,
        hash: bytes("hash")?,
        signature: bytes("signature")?,
        time_unix_micros: c.get("time_unix_micros")?.as_i64()?,
        start_after_seq: c.get("start_after_seq")?.as_u64()?,
        start_prev_hash: bytes("start_prev_hash")?,
        export_signature: bytes("export_signature")?,
    })
}

/// What an offline verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportVerdict {
    /// Every event and the checkpoint check out.
    Valid {
        /// Events verified.
        events: u64,
        /// The checkpoint's sequence number.
        checkpoint_seq: u64,
    },
    /// The first bad event and what is wrong with it.
    BadEvent {
        /// Its sequence number (the one expected at that place).
        seq: u64,
        /// What is wrong.
        problem: String,
    },
    /// The export as a whole is wrong (format, checkpoint).
    Bad(String),
}

fn field<'a>(v: &'a serde_json::Value, k: &str) -> Option<&'a serde_json::Value> {
    v.get(k)
}

/// Verifies an export given as its lines, with the vault's Ed25519 public
/// key. Lines are read one at a time (an export of any length verifies in
/// bounded memory).
pub fn verify_export<S: AsRef<str>>(
    lines: impl IntoIterator<Item = S>,
    public_key: &[u8],
) -> ExportVerdict {
    let mut lines = lines.into_iter().filter(|l| !l.as_ref().trim().is_empty());
    let Some(header) = lines
        .next()
        .and_then(|l| serde_json::from_str::<serde_json::Value>(l.as_ref()).ok())
    else {
        return ExportVerdict::Bad("no header line".into());
    };
    match field(&header, "vault_audit_export").and_then(|v| v.as_u64()) {
        Some(2) => {}
        Some(1) => {
            return ExportVerdict::Bad(
                "a version 1 export: its start is not signed, so a cut start cannot be found; export again".into(),
            );
        }
        _ => return ExportVerdict::Bad("not a version 2 vault audit export".into()),
    }
    let (Some(after), Some(prev)) = (
        field(&header, "after_seq").and_then(|v| v.as_u64()),
        field(&header, "start_prev_hash")
            .and_then(|v| v.as_str())
            .and_then(unhex)
            .and_then(|h| <[u8; 32]>::try_from(h).ok()),
    ) else {
        return ExportVerdict::Bad("header lacks after_seq or start_prev_hash".into());
    };
    if after == 0 && prev != [0; 32] {
        return ExportVerdict::Bad(
            "the header's start_prev_hash is not the chain's start (32 zero bytes before event 1)"
                .into(),
        );
    }
    let start = (after, prev);
    let mut prev = prev;
    let mut next = after.checked_add(1);
    for line in lines.by_ref() {
        let Some(expected) = next else {
            return ExportVerdict::Bad("sequence numbers out of range".into());
        };
        next = expected.checked_add(1);
        let line = line.as_ref();
        let bad = |problem: &str| ExportVerdict::BadEvent {
            seq: expected,
            problem: problem.into(),
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            return bad("line is not JSON");
        };
        if let Some(c) = field(&v, "checkpoint") {
            let Some(c) = parse_checkpoint(c) else {
                return ExportVerdict::Bad("malformed checkpoint".into());
            };
            if c.seq.checked_add(1) != Some(expected) || c.hash != prev {
                return ExportVerdict::Bad(format!(
                    "the checkpoint (event {}) does not match the last event ({}): events missing at the end",
                    c.seq,
                    expected - 1
                ));
            }
            if !verify_export_checkpoint(public_key, &c) {
                return ExportVerdict::Bad(
                    "checkpoint signature invalid (not this vault's key, or the events were rewritten)".into(),
                );
            }
            // The signed start must be the header's: an export whose first
            // events were cut (and its header rewritten to match) fails here.
            if (c.start_after_seq, c.start_prev_hash.as_slice()) != (start.0, &start.1[..]) {
                return ExportVerdict::Bad(format!(
                    "the export's start (after event {}) is not the one the vault signed (after event {}): events missing at the start",
                    start.0, c.start_after_seq
                ));
            }
            if lines.next().is_some() {
                return ExportVerdict::Bad(
                    "lines after the checkpoint: they are not covered by its signature".into(),
                );
            }
            return ExportVerdict::Valid {
                events: expected - after - 1,
                checkpoint_seq: c.seq,
            };
        }
        if field(&v, "seq").and_then(|s| s.as_u64()) != Some(expected) {
            return bad("missing, reordered or inserted (sequence number out of place)");
        }
        let Some(encoded) = field(&v, "encoded")
            .and_then(|e| e.as_str())
            .and_then(|e| STANDARD.decode(e).ok())
        else {
            return bad("no encoded event");
        };
        let Ok(event) = AuditEvent::decode(encoded.as_slice()) else {
            return bad("encoded event does not decode");
        };
        if event.seq != expected {
            return bad("the encoded event's sequence number is out of place");
        }
        if field(&v, "event") != Some(&event_json(&event)) {
            return bad("the event's JSON does not match its encoding (changed)");
        }
        if let Some(cp) = &event.checkpoint
            && (cp.seq.checked_add(1) != Some(expected)
                || cp.hash.as_slice() != prev
                || !verify_checkpoint(public_key, cp.seq, &cp.hash, &cp.signature))
        {
            return bad("checkpoint does not match the chain or is not signed by this vault");
        }
        let hash = chain_hash(&prev, &encoded);
        if field(&v, "hash")
            .and_then(|h| h.as_str())
            .and_then(unhex)
            .as_deref()
            != Some(&hash[..])
        {
            return bad("hash does not match the event and its predecessor (changed or reordered)");
        }
        prev = hash;
    }
    ExportVerdict::Bad("no checkpoint line: the export is cut short".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the lines (a fuzzed export), verification answers and
        /// never accepts without the key's signature.
        #[test]
        fn any_lines_get_a_verdict(lines in proptest::collection::vec(".{0,200}", 0..8),
                                   after in any::<u64>(), seq in any::<u64>()) {
            let key = [7u8; 32];
            let verdict = verify_export(lines.iter().map(String::as_str), &key);
            prop_assert!(!matches!(verdict, ExportVerdict::Valid { .. }), "{:?}", verdict);
            // Well-formed lines with extreme numbers.
            let mut ls = vec![header_line(after, &[0; 32])];
            ls.push(serde_json::json!({"seq": seq, "hash": hex(&[1; 32]),
                "encoded": "", "event": {}}).to_string());
            ls.push(checkpoint_line(&Checkpoint { seq, start_after_seq: after,
                hash: vec![0; 32], start_prev_hash: vec![0; 32], ..Default::default() }));
            let verdict = verify_export(ls.iter().map(String::as_str), &key);
            prop_assert!(!matches!(verdict, ExportVerdict::Valid { .. }), "{:?}", verdict);
        }
    }

    #[test]
    fn a_start_at_the_last_sequence_number_is_refused_not_a_panic() {
        let ls = [
            header_line(u64::MAX, &[0; 32]),
            "{}".to_owned(),
            "{}".to_owned(),
        ];
        assert!(matches!(
            verify_export(ls.iter().map(String::as_str), &[0; 32]),
            ExportVerdict::Bad(_) | ExportVerdict::BadEvent { .. }
        ));
    }
}
