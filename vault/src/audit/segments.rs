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
//! Only such zeros, and a write interrupted at the very end of the last
//! segment ([`is_torn_tail`]), are ever cut: anything else that fails its
//! checks is damage, for an operator to decide on (see `recovery`).

use super::{AuditEvent, AuditRecord, Checkpoint};
use crate::crypto::keys::AuditKey;
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
pub(super) fn io(what: &'static str, e: std::io::Error) -> Error {
    Error::audit_io(what, e)
}

/// The path of segment `number`.
pub(crate) fn segment_path(dir: &Path, number: u64) -> PathBuf {
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
pub(crate) enum End {
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
pub(crate) fn read_frames(
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
pub(crate) fn decode(bytes: &[u8]) -> Option<(AuditRecord, AuditEvent)> {
    let record = AuditRecord::decode(bytes).ok()?;
    let event = AuditEvent::decode(record.event.as_slice()).ok()?;
    Some((record, event))
}

/// Sectors a disk writes whole: a write interrupted by a power loss leaves
/// each one either written or as it was (here: zero-filled ahead).
const SECTOR: u64 = 512;

/// Largest tail considered as an interrupted write (the writer writes at
/// most what waits for the disk, 64 MiB, at once, into space zero-filled
/// 1 MiB ahead).
const MAX_TORN: u64 = 80 << 20;

/// Whether the bytes of segment `path` from `offset` on are what a write
/// interrupted there leaves, and nothing else (the caller checks that the
/// segment is the last and that the previous run did not stop cleanly):
///
/// 1. the frame at `offset` is cut short: its length is whole but the file
///    ends inside its record; or its length is zero (its first sector did
///    not reach the disk) with bytes after it; or a sector-aligned part of
///    its record, at least 8 bytes, is all zeros (a sector of it did not
///    reach the disk);
/// 2. no record from `offset` on carries a MAC of this vault: nothing
///    written by the vault and complete is behind it.
///
/// Anything else (an impossible length, a changed byte, a whole record
/// that fails its checks, a good record after a bad one) is damage.
pub(crate) fn is_torn_tail(path: &Path, offset: u64, key: &AuditKey) -> Result<bool> {
    let len = std::fs::metadata(path)
        .map_err(|e| io("reading a segment", e))?
        .len();
    if len.saturating_sub(offset) > MAX_TORN {
        return Ok(false);
    }
    let mut file = File::open(path).map_err(|e| io("opening a segment", e))?;
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(offset))
        .map_err(|e| io("reading a segment", e))?;
    let mut rest = Vec::new();
    file.read_to_end(&mut rest)
        .map_err(|e| io("reading a segment", e))?;
    let cut_short = match rest.get(..4) {
        None => true,
        Some(l) => {
            let n = u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize;
            if n == 0 {
                rest.iter().any(|&b| b != 0)
            } else if n > MAX_FRAME {
                false
            } else if 4 + n > rest.len() {
                true
            } else {
                lost_sector(offset, &rest[..4 + n])
            }
        }
    };
    if !cut_short {
        return Ok(false);
    }
    Ok(!has_authentic_record(&rest, key))
}

/// Whether a sector-aligned part of `frame` (at `offset` in its file), at
/// least 8 bytes long, is all zeros.
fn lost_sector(offset: u64, frame: &[u8]) -> bool {
    let end = offset + frame.len() as u64;
    let mut b = offset.next_multiple_of(SECTOR);
    while b < end {
        let lo = usize::try_from(b - offset).unwrap_or(usize::MAX);
        let hi = usize::try_from((b + SECTOR).min(end) - offset).unwrap_or(usize::MAX);
        if let Some(part) = frame.get(lo..hi)
            && part.len() >= 8
            && part.iter().all(|&x| x == 0)
        {
            return true;
        }
        b += SECTOR;
    }
    false
}

/// Whether a frame holding a record with this vault's MAC starts anywhere
/// in `bytes`.
fn has_authentic_record(bytes: &[u8], key: &AuditKey) -> bool {
    (0..bytes.len().saturating_sub(4)).any(|p| {
        let n = u32::from_le_bytes([bytes[p], bytes[p + 1], bytes[p + 2], bytes[p + 3]]) as usize;
        if n == 0 || n > MAX_FRAME {
            return false;
        }
        let Some(body) = bytes.get(p + 4..p + 4 + n) else {
            return false;
        };
        AuditRecord::decode(body).is_ok_and(|r| {
            <[u8; 32]>::try_from(r.hash.as_slice()).is_ok_and(|h| key.verify(&h, &r.mac))
        })
    })
}

/// Moves the bytes of segment `number` from `offset` on into a file
/// `seg-….log.SUFFIX-OFFSET` beside it (kept as evidence) and cuts the
/// segment there; returns that file and the bytes moved.
pub(super) fn set_aside_from(
    dir: &Path,
    number: u64,
    offset: u64,
    suffix: &str,
) -> Result<(PathBuf, u64)> {
    let path = segment_path(dir, number);
    let bytes = std::fs::read(&path).map_err(|e| io("reading a segment", e))?;
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    let aside = dir.join(format!("seg-{number:012}.log.{suffix}-{offset}"));
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
