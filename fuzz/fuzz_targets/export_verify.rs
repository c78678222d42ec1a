//! Export verification (`vault_client::verify_export::verify_export`): `vaultctl
//! audit verify` on an export file, offline, with the vault's public key.
//!
//! Two kinds of input. Raw text: verification never panics and never says
//! valid (the checkpoint signatures cannot be forged). An export built here
//! from fuzzed events (any sequence start, any field text), signed with a
//! fixed key as the vault signs it: it verifies, with the right count,
//! unless its sequence numbers reach u64::MAX (no checkpoint can follow
//! that event); without one of its lines, with one of them twice, two of
//! them swapped, a line after the checkpoint, its first events cut and the
//! header rewritten to match, or under another key, it does not.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use ring::signature::{Ed25519KeyPair, KeyPair};
use std::sync::OnceLock;
use vault_client::verify_export::{ExportVerdict, checkpoint_line, event_line, header_line, verify_export};
use vault_proto::audit::{chain_hash, checkpoint_message, export_message};
use vault_proto::v1::{AuditEvent, AuditItem, Checkpoint, ExportedEvent};

#[derive(Debug, Arbitrary)]
struct Event {
    time_unix_micros: i64,
    event_type: String,
    principal: String,
    subject_id: String,
    items: Vec<(String, String)>,
    status_code: i32,
    detail: String,
}

#[derive(Debug, Arbitrary)]
enum Edit {
    None,
    Drop(u8),
    Duplicate(u8),
    Swap(u8, u8),
    Append(String),
    CutStart(u8),
    OtherKey,
}

#[derive(Debug, Arbitrary)]
enum Input {
    Raw(String),
    Built {
        after_seq: u64,
        start: [u8; 32],
        events: Vec<Event>,
        edit: Edit,
    },
}

fn keys() -> &'static (Ed25519KeyPair, Ed25519KeyPair) {
    static KEYS: OnceLock<(Ed25519KeyPair, Ed25519KeyPair)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let k = |b| Ed25519KeyPair::from_seed_unchecked(&[b; 32]).expect("a key");
        (k(1), k(2))
    })
}

fuzz_target!(|input: Input| {
    let (key, other) = keys();
    let public = key.public_key().as_ref();
    let (after_seq, start, events, edit) = match input {
        Input::Raw(text) => {
            let verdict = verify_export(text.lines(), public);
            assert!(
                !matches!(verdict, ExportVerdict::Valid { .. }),
                "forged export accepted"
            );
            return;
        }
        Input::Built {
            after_seq,
            start,
            events,
            edit,
        } => (after_seq, start, events, edit),
    };
    // The chain's first event follows 32 zero bytes.
    let start = if after_seq == 0 { [0; 32] } else { start };
    let mut lines = vec![header_line(after_seq, &start)];
    // The sequence number and chain hash after each line so far.
    let mut marks = vec![(after_seq, start)];
    let (mut seq, mut prev) = (after_seq, start);
    for e in events {
        // Sequence numbers end at u64::MAX: no event can follow that one.
        let Some(next) = seq.checked_add(1) else {
            break;
        };
        seq = next;
        let event = AuditEvent {
            seq,
            time_unix_micros: e.time_unix_micros,
            event_type: e.event_type,
            principal: e.principal,
            subject_id: e.subject_id,
            items: e
                .items
                .into_iter()
                .map(|(field, token)| AuditItem {
                    field,
                    token,
                    ..Default::default()
                })
                .collect(),
            status_code: e.status_code,
            detail: e.detail,
            ..Default::default()
        };
        let encoded = event.encode_to_vec();
        prev = chain_hash(&prev, &encoded);
        lines.push(event_line(&ExportedEvent {
            event: Some(event),
            hash: prev.to_vec(),
            encoded,
        }));
        marks.push((seq, prev));
    }
    let n = seq - after_seq;
    let signer = if matches!(edit, Edit::OtherKey) {
        other
    } else {
        key
    };
    let time_unix_micros = 1_800_000_000_000_000;
    let checkpoint = Checkpoint {
        seq,
        hash: prev.to_vec(),
        signature: signer
            .sign(&checkpoint_message(seq, &prev))
            .as_ref()
            .to_vec(),
        time_unix_micros,
        start_after_seq: after_seq,
        start_prev_hash: start.to_vec(),
        export_signature: signer
            .sign(&export_message(
                after_seq,
                &start,
                seq,
                &prev,
                time_unix_micros,
            ))
            .as_ref()
            .to_vec(),
    };
    lines.push(checkpoint_line(&checkpoint));

    let before = lines.len() - 1;
    let changed = match edit {
        Edit::None => false,
        Edit::OtherKey => true,
        Edit::Drop(i) => {
            lines.remove(usize::from(i) % lines.len());
            true
        }
        Edit::Duplicate(i) => {
            let i = usize::from(i) % lines.len();
            lines.insert(i, lines[i].clone());
            true
        }
        Edit::Swap(i, j) => {
            let (i, j) = (usize::from(i) % lines.len(), usize::from(j) % lines.len());
            lines.swap(i, j);
            lines[i] != lines[j]
        }
        Edit::Append(text) => {
            lines.push(text);
            // Blank lines are skipped wherever they are.
            !lines[lines.len() - 1].trim().is_empty()
        }
        Edit::CutStart(k) => {
            // Cut the first k events and rewrite the header to match: only
            // the start signed in the checkpoint tells.
            let k = usize::from(k) % before;
            if k > 0 {
                let (seq, hash) = marks[k];
                lines.drain(..=k);
                lines.insert(0, header_line(seq, &hash));
            }
            k > 0
        }
    };
    let verdict = verify_export(lines.iter().map(String::as_str), public);
    if changed || seq == u64::MAX {
        assert!(
            !matches!(verdict, ExportVerdict::Valid { .. }),
            "an edited export verified: {verdict:?}"
        );
    } else {
        assert_eq!(
            verdict,
            ExportVerdict::Valid {
                events: n,
                checkpoint_seq: seq
            }
        );
    }
});
