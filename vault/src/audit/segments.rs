//! The audit trail's files: numbered segments of length-prefixed records.
//!
//! `<data_dir>/audit/seg-000000000001.log`, `seg-000000000002.log`, …; each
//! frame is a 4-byte little-endian length and an encoded [`AuditRecord`].
//! Segments only grow at their end and are removed whole when they fall out
//! of retention; `anchor.pb` then holds a signed [`Checkpoint`] of the last
//! removed event, from which the remaining chain verifies.

use super::{AuditEvent, AuditRecord, Checkpoint};
use crate::error::{Error, Result};
use prost::Message;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

/// Largest record accepted when reading (a frame longer than this is damage).
pub(super) const MAX_FRAME: usize = 1 << 20;

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
        if n == 0 || n > MAX_FRAME {
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
    let end = read_frames(&segment_path(dir, number), |_, bytes| {
        // A whole frame that does not decode is damage, not an interrupted
        // write: it stays for verify to name.
        let Some((record, event)) = decode(bytes) else {
            return Ok(true);
        };
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
    let file = OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| io("opening a torn segment", e))?;
    file.set_len(offset)
        .and_then(|()| file.sync_all())
        .map_err(|e| io("cutting a torn segment", e))?;
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

/// Opens segment `number` for appending, creating it (and making its name
/// durable) if needed.
pub(super) fn open_for_append(dir: &Path, number: u64) -> std::io::Result<(File, u64)> {
    let path = segment_path(dir, number);
    let existed = path.exists();
    let file = OpenOptions::new().create(true).append(true).open(&path)?;
    if !existed {
        #[cfg(unix)]
        File::open(dir)?.sync_all()?;
    }
    let len = file.metadata()?.len();
    Ok((file, len))
}
