//! Reading the trail back at start: every frame of every segment is checked
//! (it decodes, its sequence number follows, its chain hash and MAC match,
//! a checkpoint's signature holds), from the pruning anchor on.
//!
//! Only two things are ever cut, both at the end: the zero-filled space
//! ahead of a segment's frames, and a write interrupted at the very end of
//! the last segment ([`segments::is_torn_tail`]), which is moved to
//! `seg-….log.torn-OFFSET` as evidence and named in the `vault_start`
//! event. Anything else that fails its checks is damage: the vault refuses
//! to start and names the segment file, the offset and the event expected
//! there. An operator then decides: restore the audit directory from a
//! copy, or set the damaged part aside by writing that name and offset
//! (`seg-000000000003.log:1234`) into the file [`SET_ASIDE_FILE`] of the
//! audit directory and starting again; the bytes from there on and every
//! later segment are then kept as `….damaged…` evidence beside the trail,
//! the chain goes on after the last event that checked out, and the
//! `vault_start` event says so. Nothing is ever dropped silently.

use super::segments::{self, End, Segment};
use super::{ChainChecker, Checkpoint, Mark, verify_checkpoint};
use crate::error::{Error, Result};
use std::path::Path;

/// The file in which an operator names the damage to set aside (one line:
/// `SEGMENT-FILE:OFFSET`, as the refusal names it). Read once, then removed.
pub const SET_ASIDE_FILE: &str = "set-aside";

/// What reading the trail back found.
#[derive(Debug, Default)]
pub(super) struct Recovered {
    /// The segments that hold the chain, oldest first.
    pub segments: Vec<Segment>,
    /// The last event (the anchor's, or seq 0, if none).
    pub head: Mark,
    /// The number of the next segment to create.
    pub next_number: u64,
    /// What was repaired or set aside, for the `vault_start` event.
    pub notes: Vec<String>,
}

/// A place where the trail fails its checks.
struct Damage {
    number: u64,
    offset: u64,
    seq: u64,
    problem: String,
}

impl Damage {
    fn file(&self) -> String {
        format!("seg-{:012}.log", self.number)
    }

    fn spot(&self) -> String {
        format!("{}:{}", self.file(), self.offset)
    }
}

/// Event types that end a run cleanly: its stop, and the checkpoint that
/// closing writes after it.
fn ends_cleanly(last: &str, before_last: &str) -> bool {
    last == "vault_stop" || (last == "checkpoint" && before_last == "vault_stop")
}

/// Reads and checks every segment in `dir` (see the module documentation).
pub(super) fn recover(
    keys: &super::Keys,
    dir: &Path,
    anchor: Option<&Checkpoint>,
) -> Result<Recovered> {
    let key = &*keys.mac;
    let public = keys.checkpoint.public();
    let (start_seq, start_hash) = match anchor {
        Some(a) => {
            let hash: [u8; 32] = a.hash.as_slice().try_into().map_err(|_| {
                Error::AuditDamaged(format!("{} is malformed", segments::ANCHOR_FILE))
            })?;
            if !verify_checkpoint(&public, a.seq, &a.hash, &a.signature) {
                return Err(Error::AuditDamaged(format!(
                    "{} (where the kept chain starts, after event {}) is not signed by this vault",
                    segments::ANCHOR_FILE,
                    a.seq
                )));
            }
            (a.seq, hash)
        }
        None => (0, [0; 32]),
    };
    let decision = read_decision(dir)?;
    let numbers = segments::list(dir)?;
    let mut out = Recovered {
        head: Mark {
            seq: start_seq,
            time: anchor.map_or(0, |a| a.time_unix_micros),
            hash: start_hash,
        },
        next_number: numbers.last().map_or(1, |n| n + 1),
        ..Default::default()
    };
    let mut checker = ChainChecker::new(
        start_seq.saturating_add(1),
        start_hash,
        Some(key),
        Some(&public),
    );
    // The last two event types, for "did the previous run stop cleanly".
    let mut types = (String::new(), String::new());
    for (i, &n) in numbers.iter().enumerate() {
        let path = segments::segment_path(dir, n);
        let last = i + 1 == numbers.len();
        if is_pruned_leftover(&path, anchor)? {
            // Left over from a pruning interrupted after its anchor.
            std::fs::remove_file(&path)
                .map_err(|e| segments::io("removing a pruned segment", e))?;
            continue;
        }
        let mut seg: Option<Segment> = None;
        let mut bad: Option<(u64, u64, &'static str)> = None;
        let end = segments::read_frames(&path, |offset, bytes| {
            let item = segments::decode(bytes);
            match checker.check(item.as_ref().map(|(r, e)| (r, e))) {
                Ok(()) => {
                    if let Some((_, e)) = item {
                        note_event(&mut seg, n, &e, checker.head());
                        types = (e.event_type, std::mem::take(&mut types.0));
                    }
                    Ok(true)
                }
                Err((seq, problem)) => {
                    bad = Some((offset, seq, problem));
                    Ok(false)
                }
            }
        })?;
        let damage = match (bad, end) {
            (Some((offset, seq, problem)), _) => Some(Damage {
                number: n,
                offset,
                seq,
                problem: problem.to_owned(),
            }),
            (None, End::Clean) => None,
            (None, End::Zeros { offset }) => {
                // Zero-filled ahead and not used: a run that ended without
                // cutting it (killed or crashed).
                segments::cut(dir, n, offset)?;
                None
            }
            (None, End::Torn { offset }) => Some(Damage {
                number: n,
                offset,
                seq: checker.next_seq(),
                problem: "a frame cut short or with an impossible length".into(),
            }),
        };
        if let Some(d) = damage {
            let torn = last
                && !ends_cleanly(&types.0, &types.1)
                && segments::is_torn_tail(&path, d.offset, key)?;
            if torn {
                let (aside, bytes) = segments::set_aside_from(dir, n, d.offset, "torn")?;
                tracing::warn!(file = %aside.display(), bytes, "audit trail ended in an interrupted write; set aside");
                out.notes.push(format!(
                    "the trail ended in {bytes} bytes that were not a whole event (a write interrupted at event {}, never acknowledged); set aside in {}",
                    d.seq,
                    file_name(&aside)
                ));
            } else if decision.as_deref() == Some(d.spot().as_str()) {
                set_aside_by_operator(dir, &d, &numbers[i + 1..], &mut out)?;
                keep(dir, &mut out, n, seg)?;
                break;
            } else {
                let msg = refusal(&d, decision.as_deref());
                tracing::error!(file = %d.file(), offset = d.offset, seq = d.seq, problem = %d.problem, "audit trail damaged; not starting");
                return Err(Error::AuditDamaged(msg));
            }
        }
        keep(dir, &mut out, n, seg)?;
    }
    if let Some(s) = out.segments.last() {
        out.head = Mark {
            seq: s.last_seq,
            time: s.last_time,
            hash: s.last_hash,
        };
        if !ends_cleanly(&types.0, &types.1) {
            out.notes.push(
                "the previous run ended without a vault_stop event (killed or crashed): a write whose event is among its last may not have been applied".into(),
            );
        }
    }
    if decision.is_some() {
        // A decision is for one start: it is done, or named nothing there is.
        std::fs::remove_file(dir.join(SET_ASIDE_FILE))
            .map_err(|e| segments::io("removing the set-aside file", e))?;
    }
    Ok(out)
}

/// Adds `seg` (segment `number`) to the trail's segments, or removes its
/// file if it holds no event (created by a run that wrote nothing into it,
/// or whose only bytes were set aside).
fn keep(dir: &Path, out: &mut Recovered, number: u64, seg: Option<Segment>) -> Result<()> {
    match seg {
        Some(s) => out.segments.push(s),
        None => std::fs::remove_file(segments::segment_path(dir, number))
            .map_err(|e| segments::io("removing an empty segment", e))?,
    }
    Ok(())
}

fn note_event(seg: &mut Option<Segment>, number: u64, e: &super::AuditEvent, hash: [u8; 32]) {
    match seg {
        None => {
            *seg = Some(Segment {
                number,
                first_seq: e.seq,
                last_seq: e.seq,
                first_time: e.time_unix_micros,
                last_time: e.time_unix_micros,
                last_hash: hash,
            });
        }
        Some(s) => {
            s.last_seq = e.seq;
            s.last_time = e.time_unix_micros;
            s.last_hash = hash;
        }
    }
}

/// Whether the segment at `path` was pruned already (its first event is at
/// or before the anchor: pruning removes whole segments).
fn is_pruned_leftover(path: &Path, anchor: Option<&Checkpoint>) -> Result<bool> {
    let Some(a) = anchor else {
        return Ok(false);
    };
    let mut first = None;
    segments::read_frames(path, |_, bytes| {
        first = segments::decode(bytes).map(|(_, e)| e.seq);
        Ok(false)
    })?;
    Ok(first.is_some_and(|s| s <= a.seq))
}

/// The operator's decision, if the set-aside file exists.
fn read_decision(dir: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(dir.join(SET_ASIDE_FILE)) {
        Ok(text) => Ok(Some(text.trim().to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(segments::io("reading the set-aside file", e)),
    }
}

fn file_name(p: &Path) -> &str {
    p.file_name().and_then(|f| f.to_str()).unwrap_or("?")
}

/// The message of a refusal to start: where, what, and what to do.
fn refusal(d: &Damage, decision: Option<&str>) -> String {
    let ignored = match decision {
        Some(other) => format!(" (the {SET_ASIDE_FILE} file names {other:?}, not this place)"),
        None => String::new(),
    };
    format!(
        "segment file {} at byte offset {}, where event {} should be: {}. The vault does not start with a damaged audit trail{ignored}. Keep a copy of the audit directory; then restore it from a copy, or, to set the damaged part aside (the bytes from there on and every later segment are kept beside the trail as evidence, and the chain goes on after event {}), write \"{}\" into the file {SET_ASIDE_FILE} of the audit directory and start again",
        d.file(),
        d.offset,
        d.seq,
        d.problem,
        d.seq.saturating_sub(1),
        d.spot()
    )
}

/// Carries out the operator's decision for `d`: the damaged segment's bytes
/// from the damage on, and the segments after it, are set aside.
fn set_aside_by_operator(dir: &Path, d: &Damage, later: &[u64], out: &mut Recovered) -> Result<()> {
    let (aside, bytes) = segments::set_aside_from(dir, d.number, d.offset, "damaged")?;
    let mut moved = Vec::new();
    for &m in later {
        let from = segments::segment_path(dir, m);
        let to = dir.join(format!("seg-{m:012}.log.damaged"));
        std::fs::rename(&from, &to).map_err(|e| segments::io("setting a segment aside", e))?;
        moved.push(file_name(&to).to_owned());
    }
    segments::sync_dir(dir)?;
    tracing::warn!(file = %d.file(), offset = d.offset, seq = d.seq, bytes, later = moved.len(), "damaged audit trail set aside by the operator's decision");
    out.notes.push(format!(
        "by the operator's decision ({SET_ASIDE_FILE} file), the trail damaged in {} at byte offset {} (where event {} should be: {}) was set aside: {bytes} bytes in {}{}; the chain goes on after event {} (the set-aside events are not part of it; their numbers are used again)",
        d.file(),
        d.offset,
        d.seq,
        d.problem,
        file_name(&aside),
        if moved.is_empty() {
            String::new()
        } else {
            format!(" and the later segments {}", moved.join(", "))
        },
        d.seq.saturating_sub(1)
    ));
    Ok(())
}
