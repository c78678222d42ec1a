//! Keeps every event within what the trail's reader accepts, whatever a
//! caller sent: the writer passes each event through [`bound`] before it
//! is numbered, so no call site, present or future, can write a frame the
//! reader would refuse (see `docs/audit.md`, "Limits").
//!
//! - a short text field (who, from where, what, why, and each item's
//!   field, token, disclosure and subject) longer than [`MAX_TEXT_BYTES`]
//!   is recorded as its length and a keyed digest, never the text;
//! - a `detail` longer than [`MAX_DETAIL_BYTES`] keeps its beginning and
//!   says how long it was, with the digest of the whole;
//! - an event lists at most [`MAX_ITEMS_PER_EVENT`] items, and only as
//!   many as fit in [`MAX_EVENT_BYTES`]; the rest follow, in order, in
//!   `items_continued` events naming the event they continue: nothing
//!   about an access is dropped, and every frame stays small.
//!
//! Digests are `HMAC-SHA256(audit key, SHA-256(TEXT_DIGEST_LABEL ‖ text))`,
//! cut to 8 bytes: two events with the same long text show the same
//! digest, but nobody without the vault's key can test a guess against it.

use super::{AuditEvent, AuditItem};
use crate::crypto::keys::AuditKey;
use prost::Message;

/// Largest encoded event the trail stores (the reader accepts frames up to
/// [`super::segments::MAX_FRAME`], four times this).
pub const MAX_EVENT_BYTES: usize = 256 << 10;
/// Longest short text field recorded as it is.
pub const MAX_TEXT_BYTES: usize = 512;
/// Longest `detail` recorded whole.
pub const MAX_DETAIL_BYTES: usize = 32 << 10;
/// Most items one event lists.
pub const MAX_ITEMS_PER_EVENT: usize = 1000;

/// Domain separation of the digests of long texts.
const TEXT_DIGEST_LABEL: &[u8] = b"vault/v1/audit-text-digest";

/// Bytes kept free in an event for the note that says where its items go on.
const NOTE_ROOM: usize = 256;

// A stored record is the event plus a 32-byte hash and a 32-byte MAC, each
// with a tag and a length: far below what the reader accepts.
const _: () = assert!(MAX_EVENT_BYTES + 256 <= super::segments::MAX_FRAME);

/// `<N bytes, hmac-sha256 0123456789abcdef>`: what an event records of a
/// text too long to keep (its length and keyed digest, not the text).
pub fn digest(key: &AuditKey, text: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(TEXT_DIGEST_LABEL);
    ctx.update(text.as_bytes());
    let mut h = [0u8; 32];
    h.copy_from_slice(ctx.finish().as_ref());
    let mac = key.mac(&h);
    format!(
        "<{} bytes, hmac-sha256 {}>",
        text.len(),
        crate::model::hex(&mac[..8])
    )
}

/// A caller's text as an event's detail quotes it: as it is (Rust-quoted)
/// up to `verbatim` bytes, else only its length and digest.
pub fn quote(key: &AuditKey, text: &str, verbatim: usize) -> String {
    if text.len() <= verbatim {
        format!("{text:?}")
    } else {
        digest(key, text)
    }
}

fn cap_text(key: &AuditKey, s: &mut String) {
    if s.len() > MAX_TEXT_BYTES {
        *s = digest(key, s);
    }
}

fn cap_detail(key: &AuditKey, s: &mut String) {
    if s.len() <= MAX_DETAIL_BYTES {
        return;
    }
    let marker = format!(" … [detail cut: {} in all]", digest(key, s));
    let mut end = MAX_DETAIL_BYTES.saturating_sub(marker.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str(&marker);
}

fn cap_fields(key: &AuditKey, e: &mut AuditEvent) {
    for s in [
        &mut e.event_type,
        &mut e.principal,
        &mut e.role,
        &mut e.auth,
        &mut e.peer,
        &mut e.request_id,
        &mut e.rpc,
        &mut e.action,
        &mut e.purpose,
        &mut e.subject_id,
        &mut e.outcome,
    ] {
        cap_text(key, s);
    }
    cap_detail(key, &mut e.detail);
    for i in &mut e.items {
        for s in [
            &mut i.field,
            &mut i.token,
            &mut i.disclosure,
            &mut i.subject_id,
        ] {
            cap_text(key, s);
        }
    }
}

/// Bytes an item adds to its event's encoding.
fn item_len(i: &AuditItem) -> usize {
    let n = i.encoded_len();
    1 + prost::encoding::encoded_len_varint(n as u64) + n
}

/// `e` within the limits, as the events to store in its place, in order:
/// `e` itself (its long texts replaced by digests), then as many
/// `items_continued` events as its items need. `first_seq` is the sequence
/// number `e` will get (the continuations name it).
pub fn bound(key: &AuditKey, mut e: AuditEvent, first_seq: u64) -> Vec<AuditEvent> {
    cap_fields(key, &mut e);
    if e.items.len() <= MAX_ITEMS_PER_EVENT && e.encoded_len() <= MAX_EVENT_BYTES {
        return vec![e];
    }
    if e.items.is_empty() {
        return vec![last_resort(key, e)];
    }
    let items = std::mem::take(&mut e.items);
    let total = items.len();
    // Every event of the group carries at most e's other fields.
    let budget = MAX_EVENT_BYTES
        .saturating_sub(e.encoded_len())
        .saturating_sub(NOTE_ROOM);
    let mut groups: Vec<Vec<AuditItem>> = Vec::new();
    let mut current = Vec::new();
    let mut used = 0;
    for item in items {
        let n = item_len(&item);
        if !current.is_empty() && (current.len() == MAX_ITEMS_PER_EVENT || used + n > budget) {
            groups.push(std::mem::take(&mut current));
            used = 0;
        }
        used += n;
        current.push(item);
    }
    groups.push(current);
    let rest = groups.len() - 1;
    let mut out = Vec::with_capacity(groups.len());
    let mut from = 1;
    for (k, group) in groups.into_iter().enumerate() {
        let to = from + group.len() - 1;
        let mut part = if k == 0 {
            let mut first = std::mem::take(&mut e);
            let sep = if first.detail.is_empty() { "" } else { "; " };
            first.detail = format!(
                "{}{sep}items {from}-{to} of {total}; the rest in the next {rest} items_continued event(s)",
                first.detail
            );
            first
        } else {
            AuditEvent {
                event_type: "items_continued".into(),
                time_unix_micros: out.first().map_or(0, |f: &AuditEvent| f.time_unix_micros),
                detail: format!("items {from}-{to} of {total} of event {first_seq}"),
                ..continuation_of(out.first())
            }
        };
        part.items = group;
        out.push(last_resort(key, part));
        from = to + 1;
    }
    out
}

/// The fields a continuation repeats from the event it continues: who,
/// from where, which request, what, why, and how it ended.
fn continuation_of(first: Option<&AuditEvent>) -> AuditEvent {
    let Some(f) = first else {
        return AuditEvent::default();
    };
    AuditEvent {
        principal: f.principal.clone(),
        role: f.role.clone(),
        auth: f.auth.clone(),
        peer: f.peer.clone(),
        request_id: f.request_id.clone(),
        rpc: f.rpc.clone(),
        action: f.action.clone(),
        purpose: f.purpose.clone(),
        subject_id: f.subject_id.clone(),
        outcome: f.outcome.clone(),
        status_code: f.status_code,
        ..Default::default()
    }
}

/// The guarantee itself, whatever the caps above miss: an event still too
/// large loses its items and detail, and says so.
fn last_resort(key: &AuditKey, mut e: AuditEvent) -> AuditEvent {
    let n = e.encoded_len();
    if n <= MAX_EVENT_BYTES {
        return e;
    }
    tracing::error!(
        bytes = n,
        "an audit event exceeded its limit after capping; stored without items and detail"
    );
    let items = e.items.len();
    e.items.clear();
    e.detail = format!(
        "event of {n} bytes over the limit of {MAX_EVENT_BYTES}: its {items} item(s) and detail were left out (detail {})",
        digest(key, &e.detail)
    );
    e.checkpoint = None;
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> AuditKey {
        let seed = crate::crypto::keys::DerivationSeed::from_bytes(&[7; 32]);
        AuditKey::derive(&seed)
    }

    fn item(i: usize) -> AuditItem {
        AuditItem {
            field: "email".into(),
            token: format!("tok_{i:022}"),
            disclosure: "PLAIN".into(),
            subject_id: format!("subject-{i}"),
        }
    }

    #[test]
    fn a_small_event_is_kept_as_it_is() {
        let e = AuditEvent {
            principal: "p".into(),
            detail: "d".into(),
            items: (0..10).map(item).collect(),
            ..Default::default()
        };
        assert_eq!(bound(&key(), e.clone(), 1), vec![e]);
    }

    #[test]
    fn long_texts_become_their_length_and_digest() {
        let k = key();
        let long = "x".repeat(3 << 20);
        let e = AuditEvent {
            principal: long.clone(),
            detail: long.clone(),
            items: vec![AuditItem {
                token: long.clone(),
                ..item(0)
            }],
            ..Default::default()
        };
        let out = bound(&k, e, 1);
        assert_eq!(out.len(), 1);
        let e = &out[0];
        assert!(e.encoded_len() <= MAX_EVENT_BYTES);
        assert_eq!(e.principal, digest(&k, &long));
        assert!(e.principal.starts_with("<3145728 bytes, hmac-sha256 "));
        assert!(!e.principal.contains("xx"));
        assert_eq!(e.items[0].token, e.principal);
        assert!(e.detail.len() <= MAX_DETAIL_BYTES);
        assert!(
            e.detail
                .ends_with(&format!(" … [detail cut: {} in all]", digest(&k, &long)))
        );
        // The same text, the same digest; another text, another.
        assert_ne!(digest(&k, &long), digest(&k, "y"));
        assert_eq!(quote(&k, "abc", 8), "\"abc\"");
        assert_eq!(quote(&k, "abcdefghij", 8), digest(&k, "abcdefghij"));
    }

    #[test]
    fn many_items_go_on_in_continuations_and_none_is_lost() {
        let k = key();
        let n = 25_000;
        let e = AuditEvent {
            event_type: "request".into(),
            principal: "p".into(),
            request_id: "r".into(),
            outcome: "ok".into(),
            time_unix_micros: 5,
            items: (0..n).map(item).collect(),
            ..Default::default()
        };
        let out = bound(&k, e, 40);
        assert!(out.len() >= 25, "{}", out.len());
        assert!(out.iter().all(|e| e.encoded_len() <= MAX_EVENT_BYTES
            && e.items.len() <= MAX_ITEMS_PER_EVENT));
        assert_eq!(out[0].event_type, "request");
        assert!(
            out[0].detail.starts_with("items 1-1000 of 25000"),
            "{}",
            out[0].detail
        );
        assert!(out[1..].iter().all(|c| c.event_type == "items_continued"
            && c.principal == "p"
            && c.request_id == "r"
            && c.time_unix_micros == 5
            && c.detail.ends_with("of 25000 of event 40")));
        let all: Vec<AuditItem> = out.into_iter().flat_map(|e| e.items).collect();
        assert_eq!(all, (0..n).map(item).collect::<Vec<_>>());
    }

    #[test]
    fn large_items_are_grouped_by_size() {
        let k = key();
        let big = |i: usize| AuditItem {
            field: "f".repeat(MAX_TEXT_BYTES),
            token: "t".repeat(MAX_TEXT_BYTES),
            disclosure: "d".repeat(MAX_TEXT_BYTES),
            subject_id: format!("{i:0width$}", width = MAX_TEXT_BYTES),
        };
        let e = AuditEvent {
            detail: "z".repeat(MAX_DETAIL_BYTES),
            items: (0..MAX_ITEMS_PER_EVENT).map(big).collect(),
            ..Default::default()
        };
        let out = bound(&k, e, 1);
        assert!(out.len() > 1);
        assert!(out.iter().all(|e| e.encoded_len() <= MAX_EVENT_BYTES));
        assert_eq!(
            out.iter().map(|e| e.items.len()).sum::<usize>(),
            MAX_ITEMS_PER_EVENT
        );
    }
}
