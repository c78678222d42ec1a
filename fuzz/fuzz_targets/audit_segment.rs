//! Audit segment reading (`vault::audit::segments`, as the start's
//! recovery reads the trail): frames, the chain's checks on each record
//! (sequence, hash, MAC under a fixed key) and, at the first problem,
//! whether it is a write interrupted at the end or damage.
//!
//! Two kinds of input, written as segment 1 of a temporary directory.
//! Raw bytes: reading never fails on a readable file nor panics, and the
//! frames read, each put back as its 4-byte length and bytes, are exactly
//! the file's bytes up to where reading stopped (a clean end is the end of
//! the file unless checking stopped at damage, a zero end is followed by
//! zeros only, a torn end lies inside the file). A segment built here as
//! the vault writes it, from fuzzed events and any chain start: it reads
//! back whole, with or without zeros after it; cut inside its last frame, it is a torn tail; with a byte of
//! any frame but the last changed, it is damage and never taken for an
//! interrupted write.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use std::sync::OnceLock;
use vault::crypto::keys::{AuditKey, DerivationSeed};
use vault::fuzzing::{SegmentCheck, SegmentEnd, check_segment, segment_path};
use vault_proto::audit::chain_hash;
use vault_proto::v1::{AuditEvent, AuditRecord};

#[derive(Debug, Arbitrary)]
struct Event {
    time_unix_micros: i64,
    event_type: String,
    principal: String,
    detail: String,
}

#[derive(Debug, Arbitrary)]
enum Edit {
    None,
    /// Zeros after the frames (the space zero-filled ahead).
    Zeros(u16),
    /// Cut this many bytes off the end (within the last frame).
    CutLast(u16),
    /// XOR a byte at this position (of the frames before the last).
    Flip(u32, u8),
}

#[derive(Debug, Arbitrary)]
enum Input {
    Raw(Vec<u8>),
    Built {
        first: u64,
        prev_hash: [u8; 32],
        events: Vec<Event>,
        edit: Edit,
    },
}

struct Fixture {
    dir: tempfile::TempDir,
    key: AuditKey,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| Fixture {
        dir: tempfile::tempdir().expect("a temporary directory"),
        key: AuditKey::derive(&DerivationSeed::from_bytes(&[3; 32])),
    })
}

/// Reads `data` as segment 1, starting the chain at `first` after `prev`,
/// and checks how the frames read relate to the bytes.
fn read(data: &[u8], first: u64, prev: [u8; 32]) -> SegmentCheck {
    let f = fixture();
    let path = segment_path(f.dir.path(), 1);
    std::fs::write(&path, data).expect("writing the segment");
    let c = check_segment(&path, first, prev, &f.key).expect("a readable segment reads");
    let mut rebuilt = Vec::with_capacity(data.len());
    for (offset, bytes) in &c.frames {
        assert_eq!(*offset, rebuilt.len() as u64, "frame offsets");
        assert!(!bytes.is_empty(), "an empty frame");
        rebuilt.extend_from_slice(&u32::try_from(bytes.len()).expect("small").to_le_bytes());
        rebuilt.extend_from_slice(bytes);
    }
    assert!(
        data.starts_with(&rebuilt),
        "frames are not the file's bytes"
    );
    match c.end {
        SegmentEnd::Clean => assert!(
            rebuilt.len() == data.len() || c.damage.is_some(),
            "a clean end before the end of the file"
        ),
        SegmentEnd::Zeros(at) => {
            let at = usize::try_from(at).expect("small");
            assert_eq!(at, rebuilt.len());
            assert!(data.len() >= at + 4);
            assert!(
                data[at..].iter().all(|b| *b == 0),
                "zero end before non-zero bytes"
            );
        }
        SegmentEnd::Torn(at) => {
            let at = usize::try_from(at).expect("small");
            assert_eq!(at, rebuilt.len());
            assert!(at < data.len(), "torn at the end of the file");
        }
    }
    if let Some((offset, ..)) = c.damage {
        assert_eq!(
            Some(offset),
            c.frames.last().map(|f| f.0),
            "damage is the last frame read"
        );
    }
    assert_eq!(
        c.torn_tail.is_some(),
        c.damage.is_some() || matches!(c.end, SegmentEnd::Torn(_))
    );
    c
}

fuzz_target!(|input: Input| {
    let key = &fixture().key;
    let (first, prev_hash, events, edit) = match input {
        Input::Raw(bytes) => {
            read(&bytes, 1, [0; 32]);
            return;
        }
        Input::Built {
            first,
            prev_hash,
            events,
            edit,
        } => (first, prev_hash, events, edit),
    };
    let mut data = Vec::new();
    // Where each frame starts, and the end of the last.
    let mut starts = Vec::new();
    let (mut seq, mut prev) = (first, prev_hash);
    for (i, e) in events.into_iter().enumerate() {
        if i > 0 {
            let Some(next) = seq.checked_add(1) else {
                break;
            };
            seq = next;
        }
        let event = AuditEvent {
            seq,
            time_unix_micros: e.time_unix_micros,
            event_type: e.event_type,
            principal: e.principal,
            detail: e.detail,
            ..Default::default()
        };
        let encoded = event.encode_to_vec();
        prev = chain_hash(&prev, &encoded);
        let record = AuditRecord {
            event: encoded,
            hash: prev.to_vec(),
            mac: key.mac(&prev).to_vec(),
        };
        starts.push(data.len());
        data.extend_from_slice(
            &u32::try_from(record.encoded_len())
                .expect("small")
                .to_le_bytes(),
        );
        record.encode(&mut data).expect("a Vec grows");
    }
    let n = starts.len() as u64;
    match edit {
        Edit::None | Edit::Zeros(_) => {
            let z = match edit {
                Edit::Zeros(z) => usize::from(z),
                _ => 0,
            };
            data.resize(data.len() + z, 0);
            let c = read(&data, first, prev_hash);
            // Zeros after the frames are space filled ahead (four or more:
            // a zero length) or a length prefix cut short (fewer): the
            // events are all there either way.
            let torn = (1..4).contains(&z).then_some(true);
            assert_eq!((c.good, c.damage, c.torn_tail), (n, None, torn), "{c:?}");
        }
        Edit::CutLast(cut) => {
            let Some(&last) = starts.last() else {
                return;
            };
            let cut = 1 + usize::from(cut) % (data.len() - last);
            data.truncate(data.len() - cut);
            let c = read(&data, first, prev_hash);
            assert_eq!((c.good, c.damage), (n - 1, None), "{c:?}");
            if data.len() > last {
                assert_eq!(c.end, SegmentEnd::Torn(last as u64));
            }
            assert_eq!(
                c.torn_tail,
                (data.len() > last).then_some(true),
                "a cut last frame is an interrupted write: {c:?}"
            );
        }
        Edit::Flip(at, x) => {
            let (Some(&last), true) = (starts.last(), x != 0) else {
                return;
            };
            if last == 0 {
                return;
            }
            let at = usize::try_from(at).expect("small") % last;
            data[at] ^= x;
            let c = read(&data, first, prev_hash);
            assert!(c.good < n, "a changed byte went unnoticed: {c:?}");
            assert_eq!(
                c.torn_tail,
                Some(false),
                "a change before a good record taken for an interrupted write: {c:?}"
            );
        }
    }
});
