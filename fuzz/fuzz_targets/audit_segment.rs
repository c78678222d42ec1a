//! Audit segment reading (`vault::audit::segments`): the trail's files as
//! the vault reads them at start, for Verify, Query and Export.
//!
//! The input is written as segment 1 of a temporary directory, then read
//! frame by frame and summarised as at start.
//!
//! Properties: reading never fails on a readable file nor panics; the frames
//! read, each put back as its 4-byte length and bytes, are exactly the
//! file's bytes up to where reading stopped; a clean end is the end of the
//! file, a zero end is followed by zeros only, a torn end lies inside the
//! file; the summary ends where reading did (zeros after frames that do not
//! decode are torn) and names the first and last decodable event.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use std::sync::OnceLock;
use vault::fuzzing::{SegmentEnd, read_segment, segment_path, summarize_segment};
use vault_proto::v1::{AuditEvent, AuditRecord};

static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let dir = DIR
        .get_or_init(|| tempfile::tempdir().expect("a temporary directory"))
        .path();
    let path = segment_path(dir, 1);
    std::fs::write(&path, data).expect("writing the segment");

    let (frames, end) = read_segment(&path).expect("a readable segment reads");
    let mut rebuilt = Vec::with_capacity(data.len());
    for (offset, bytes) in &frames {
        assert_eq!(*offset, rebuilt.len() as u64, "frame offsets");
        assert!(!bytes.is_empty(), "an empty frame");
        rebuilt.extend_from_slice(&u32::try_from(bytes.len()).expect("small").to_le_bytes());
        rebuilt.extend_from_slice(bytes);
    }
    match end {
        SegmentEnd::Clean => assert_eq!(rebuilt, data),
        SegmentEnd::Zeros(at) => {
            let at = usize::try_from(at).expect("small");
            assert_eq!(&data[..at], rebuilt.as_slice());
            assert!(data.len() >= at + 4);
            assert!(
                data[at..].iter().all(|b| *b == 0),
                "zero end before non-zero bytes"
            );
        }
        SegmentEnd::Torn(at) => {
            let at = usize::try_from(at).expect("small");
            assert_eq!(&data[..at], rebuilt.as_slice());
            assert!(at < data.len(), "torn at the end of the file");
        }
    }

    let (summary, summary_end, last_type) =
        summarize_segment(dir, 1).expect("a readable segment summarises");
    match (end, summary_end) {
        (a, b) if a == b => {}
        (SegmentEnd::Zeros(_), SegmentEnd::Torn(_)) => {}
        (a, b) => panic!("read ends {a:?}, summary ends {b:?}"),
    }
    let decoded: Vec<AuditEvent> = frames
        .iter()
        .filter_map(|(_, bytes)| {
            let record = AuditRecord::decode(bytes.as_slice()).ok()?;
            let event = AuditEvent::decode(record.event.as_slice()).ok()?;
            (record.hash.len() == 32).then_some(event)
        })
        .collect();
    match (decoded.first(), decoded.last()) {
        (Some(first), Some(last)) => {
            assert_eq!(summary, Some((first.seq, last.seq)));
            assert_eq!(last_type, last.event_type);
        }
        _ => assert_eq!(summary, None),
    }
});
