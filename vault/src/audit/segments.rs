//! The audit trail's files: numbered segments of length-prefixed records.
//!
//! `<data_dir>/audit/seg-000000000001.log`, `seg-000000000002.log`, …; each
//! frame is a 4-byte little-endian length and an encoded [`AuditRecord`].
//! Segments only grow at their end and are removed whole when they fall out
//! of retention; `anchor.pb` then holds a signed [`Checkpoint`] of the last
//! removed event, from which the remaining chain verifies.
//!
//! The segment being written is zero-filled ahead of its frames, in steps of
//! [`PREALLOCATE`] bytes: a sync of frames written over space that is
//! already allocated changes no file metadata, so it needs no journal commit
//! (measured: about half the time of a sync after an append). A zero length
//! therefore ends the frames when only zeros follow it; a finished segment
//! is cut back to its last frame, and so is one left by a crash, at start.

use super::{AuditEvent, AuditRecord, Checkpoint};
use crate::error::{Error, Result};
use prost::Message;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

/// Largest record accepted when reading (a frame longer than this is damage).
pub(super) const MAX_FRAME: usize = 1 << 20;

/// How far ahead of its frames the segment being written is zero-filled.
pub(super) const PREALLOCATE: u64 = 1 << 20;

/// The file of the anchor left by pruning.
pub(super) const ANCHOR_FILE: &str = "anchor.pb";

/// An I/O failure of the trail, as the error requests see (`UNAVAILABLE`).
pub(super) fn io(what: &str, e: std::io::Error) -> Error {
    Error::Unavailable(format!("audit trail: {what}: {}", e.kind()))
}

/// The path of segment `number`.
pub(super) fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("seg-{number:012}.log"))
}

fn segment_number(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".log")?;
    (digits.len() == 12 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The segment files in `dir`, by number.
pub(super) fn list(dir: &Path) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io("listing segments", e))? {
        let entry = entry.map_err(|e| io("listing segments", e))?;
        if let Some(n) = entry.file_name().to_str().and_then(segment_number) {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// What one segment holds (durable events only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Segment {
    pub number: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub first_time: i64,
    pub last_time: i64,
    /// Chain hash of the last event.
    pub last_hash: [u8; 32],
}

/// How reading a segment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// At the end of the file, after a whole frame.
    Clean,
    /// At a zero length from `offset` on, followed by zeros only: space
    /// zero-filled ahead of the frames and not used yet (or not any more).
    Zeros { offset: u64 },
    /// At a frame that is cut short or malformed, starting at `offset`.
    Torn { offset: u64 },
}

/// Calls `f(offset, record bytes)` for each frame of the segment at `path`
/// until `f` answers `false` or the frames end.
pub(super) fn read_frames(
    path: &Path,
    mut f: impl FnMut(u64, &[u8]) -> Result<bool>,
) -> Result<End> {
    let file = File::open(path).map_err(|e| io("opening a segment", e))?;
    let mut r = BufReader::with_capacity(256 << 10, file);
    let mut offset = 0u64;
    let mut buf = Vec::new();
    loop {
        let mut len = [0u8; 4];
        match read_full(&mut r, &mut len)? {
            0 => return Ok(End::Clean),
            4 => {}
            _ => return Ok(End::Torn { offset }),
        }
        let n = u32::from_le_bytes(len) as usize;
        if n == 0 {
            return Ok(if only_zeros(&mut r)? {
                End::Zeros { offset }
            } else {
                End::Torn { offset }
            });
        }
        if n > MAX_FRAME {
            return Ok(End::Torn { offset });
        }
        buf.resize(n, 0);
        if read_full(&mut r, &mut buf)? != n {
            return Ok(End::Torn { offset });
        }
        if !f(offset, &buf)? {
            return Ok(End::Clean);
        }
        offset += 4 + n as u64;
    }
}

/// Whether everything left in `r` is zero bytes.
fn only_zeros(r: &mut impl Read) -> Result<bool> {
    let mut chunk = [0u8; 8192];
    loop {
        let n = read_full(r, &mut chunk)?;
        if chunk[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        if n < chunk.len() {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(io("reading a segment", e)),
        }
    }
    Ok(got)
}

/// Appends `record`'s frame to `out`.
pub(super) fn frame(record: &AuditRecord, out: &mut Vec<u8>) {
    let len = record.encoded_len();
    out.reserve(4 + len);
    // Records are far below 4 GiB (events carry at most a batch of items).
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
    record.encode_raw(out);
}

/// A record and its event, decoded.
pub(super) fn decode(bytes: &[u8]) -> Option<(AuditRecord, AuditEvent)> {
    let record = AuditRecord::decode(bytes).ok()?;
    let event = AuditEvent::decode(record.event.as_slice()).ok()?;
    Some((record, event))
}

/// Reads a whole segment's summary and its last event's type; `Torn` if it
/// ends in a cut or malformed frame (the summary covers the frames before
/// it). `None` if it holds no decodable event.
pub(super) fn summarize(dir: &Path, number: u64) -> Result<(Option<Segment>, End, String)> {
    let mut seg: Option<Segment> = None;
    let mut last_type = String::new();
    // Where the frames that do not decode, after the last that does, begin.
    let mut undecoded_from = None;
    let end = read_frames(&segment_path(dir, number), |offset, bytes| {
        // A whole frame that does not decode is damage, not an interrupted
        // write: it stays for verify to name (unless zeros follow, below).
        let Some((record, event)) = decode(bytes) else {
            undecoded_from.get_or_insert(offset);
            return Ok(true);
        };
        undecoded_from = None;
        let Ok(hash) = <[u8; 32]>::try_from(record.hash.as_slice()) else {
            return Ok(true);
        };
        match seg.as_mut() {
            None => {
                seg = Some(Segment {
                    number,
                    first_seq: event.seq,
                    last_seq: event.seq,
                    first_time: event.time_unix_micros,
                    last_time: event.time_unix_micros,
                    last_hash: hash,
                })
            }
            Some(s) => {
                s.last_seq = event.seq;
                s.last_time = event.time_unix_micros;
                s.last_hash = hash;
            }
        }
        last_type = event.event_type;
        Ok(true)
    })?;
    // Frames that do not decode followed by the zero-filled space: a write
    // into that space interrupted part-way (only some of its pages reached
    // the disk).
    let end = match (end, undecoded_from) {
        (End::Zeros { .. }, Some(offset)) => End::Torn { offset },
        (end, _) => end,
    };
    Ok((seg, end, last_type))
}

/// Moves the bytes of segment `number` from `offset` on into a `.torn`
/// file beside it (kept as evidence) and cuts the segment there.
pub(super) fn set_aside_tail(dir: &Path, number: u64, offset: u64) -> Result<(PathBuf, u64)> {
    let path = segment_path(dir, number);
    let bytes = std::fs::read(&path).map_err(|e| io("reading a torn segment", e))?;
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    let aside = dir.join(format!("seg-{number:012}.log.torn-{offset}"));
    write_synced(&aside, &bytes[start..])?;
    cut(dir, number, offset)?;
    Ok((aside, (bytes.len() - start) as u64))
}

/// Writes `bytes` to `path` through a temporary file, synced and renamed.
pub(super) fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(|e| io("creating a file", e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| io("writing a file", e))?;
    std::fs::rename(&tmp, path).map_err(|e| io("renaming a file", e))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Makes `dir`'s entries (new and removed files) durable.
pub(super) fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("syncing the directory", e))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// The anchor left by the last pruning, if any.
pub(super) fn read_anchor(dir: &Path) -> Result<Option<Checkpoint>> {
    match std::fs::read(dir.join(ANCHOR_FILE)) {
        Ok(bytes) => Checkpoint::decode(bytes.as_slice())
            .map(Some)
            .map_err(|_| Error::Integrity),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("reading the anchor", e)),
    }
}

/// Opens segment `number` for writing (at offsets the writer keeps),
/// creating it (and making its name durable) if needed; returns it and its
/// length.
pub(super) fn open_for_write(dir: &Path, number: u64) -> std::io::Result<(File, u64)> {
    let path = segment_path(dir, number);
    let existed = path.exists();
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&path)?;
    if !existed {
        #[cfg(unix)]
        File::open(dir)?.sync_all()?;
    }
    let len = file.metadata()?.len();
    Ok((file, len))
}

/// Writes zeros over `from..to` of `file` (space for the frames to come).
pub(super) fn zero_fill(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
    let mut at = from;
    while at < to {
        let n = usize::try_from(to - at)
            .unwrap_or(usize::MAX)
            .min(ZEROS.len());
        file.write_all_at(&ZEROS[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// Cuts segment `number` back to `len` bytes (a torn or zero-filled tail)
/// and makes that durable.
pub(super) fn cut(dir: &Path, number: u64, len: u64) -> Result<()> {
    OpenOptions::new()
        .write(true)
        .open(segment_path(dir, number))
        .and_then(|f| f.set_len(len).and_then(|()| f.sync_all()))
        .map_err(|e| io("cutting a segment", e))
}
