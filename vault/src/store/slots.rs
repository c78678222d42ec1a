//! The key-slot file: every subject's wrapped data key in a fixed-size
//! slot, overwritten in place.
//!
//! Ciphertexts live in sled, whose log keeps old versions of a value until
//! it reuses the segment: an erased subject's ciphertexts may linger there
//! for a while. They are useless without the subject's data key, and that
//! key is only ever here, in one slot of one file that is overwritten with
//! zeros and synced when the subject is erased (crypto-shredding). A file
//! overwritten in place keeps no older version of a slot (the file systems
//! the vault supports write data in place; see docs/security.md).
//!
//! Layout: slot `n` is the 256 bytes at offset `256 n` of `DATA_DIR/keyslots`
//! (`0600`). A slot has two halves of 128 bytes; the data key of version `v`
//! is in half `v % 2`, so that a re-keyed subject's new key is written
//! beside the old one, which is zeroed once the new one is committed. A
//! half is `length (u8) ‖ version (u32 BE) ‖ wrapped key ‖ zeros`; an
//! all-zero half is empty. A slot number is not handed out again while a
//! pointer (`slot/`, a subject's or an erased subject's tombstone) names
//! it; only the highest slots, whose first commit never reached the disk
//! (a crash between the key's write and the pointer's), are handed out
//! again, overwriting a key nobody was told of.
//!
//! A slot is written with one positional write of 128 bytes inside one
//! 256-byte-aligned block: a device sector (512 bytes or more) holds it
//! whole, so a crash leaves it old or new, not torn.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

/// Bytes per slot.
pub const SLOT_LEN: u64 = 256;
/// Bytes per half slot.
const HALF_LEN: usize = 128;
/// The longest wrapped key a half holds.
pub const MAX_WRAPPED: usize = HALF_LEN - 5;

/// The data keys one slot holds: `(version, wrapped key)`, at most two.
pub type SlotKeys = Vec<(u32, Vec<u8>)>;

/// The key-slot file.
pub struct SlotFile {
    file: File,
    path: PathBuf,
    /// Reads share it, writes take it alone: a reader never sees half a
    /// write.
    lock: RwLock<()>,
}

impl std::fmt::Debug for SlotFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn io_lock() -> std::io::Error {
    std::io::Error::other("key-slot lock poisoned")
}

fn half_offset(slot: u64, half: usize) -> std::io::Result<u64> {
    slot.checked_mul(SLOT_LEN)
        .and_then(|o| o.checked_add(u64::try_from(half * HALF_LEN).ok()?))
        .ok_or_else(|| std::io::Error::other("key slot out of range"))
}

/// The half that holds key `version`.
fn half_of(version: u32) -> usize {
    usize::from(version % 2 == 1)
}

impl SlotFile {
    /// Opens (creating if needed, owner-only) the slot file at `path`.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let mut o = std::fs::OpenOptions::new();
        o.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(0o600);
        }
        let file = o.open(path)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if file.metadata()?.permissions().mode() & 0o077 != 0 {
                file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            }
        }
        Ok(Self {
            file,
            path: path.to_owned(),
            lock: RwLock::new(()),
        })
    }

    /// The keys slot `slot` holds (none past the end of the file).
    pub fn read(&self, slot: u64) -> std::io::Result<SlotKeys> {
        let mut buf = [0u8; SLOT_LEN as usize];
        {
            let _shared = self.lock.read().map_err(|_| io_lock())?;
            read_at(&self.file, &mut buf, half_offset(slot, 0)?)?;
        }
        let keys = buf.chunks(HALF_LEN).filter_map(parse_half).collect();
        zeroize::Zeroize::zeroize(&mut buf);
        Ok(keys)
    }

    /// Writes key `version` (`wrapped`) into its half of `slot`; returns
    /// what the half held before (to put back if the write is undone).
    pub fn put(&self, slot: u64, version: u32, wrapped: &[u8]) -> std::io::Result<Vec<u8>> {
        let len = u8::try_from(wrapped.len())
            .ok()
            .filter(|l| usize::from(*l) <= MAX_WRAPPED)
            .ok_or_else(|| std::io::Error::other("wrapped key too long for a key slot"))?;
        let mut half = [0u8; HALF_LEN];
        half[0] = len;
        half[1..5].copy_from_slice(&version.to_be_bytes());
        half[5..5 + wrapped.len()].copy_from_slice(wrapped);
        let at = half_offset(slot, half_of(version))?;
        let _alone = self.lock.write().map_err(|_| io_lock())?;
        let mut old = vec![0u8; HALF_LEN];
        read_at(&self.file, &mut old, at)?;
        write_at(&self.file, &half, at)?;
        Ok(old)
    }

    /// Puts back the half of `slot` for `version` as [`SlotFile::put`]
    /// returned it.
    pub fn restore(&self, slot: u64, version: u32, old: &[u8]) -> std::io::Result<()> {
        let at = half_offset(slot, half_of(version))?;
        let _alone = self.lock.write().map_err(|_| io_lock())?;
        write_at(&self.file, old, at)
    }

    /// Overwrites with zeros the half of `slot` holding key `version`, if
    /// it holds that version, or (`None`) the whole slot.
    pub fn shred(&self, slot: u64, version: Option<u32>) -> std::io::Result<()> {
        let _alone = self.lock.write().map_err(|_| io_lock())?;
        match version {
            None => write_at(&self.file, &[0u8; SLOT_LEN as usize], half_offset(slot, 0)?),
            Some(v) => {
                let at = half_offset(slot, half_of(v))?;
                let mut held = [0u8; HALF_LEN];
                read_at(&self.file, &mut held, at)?;
                let holds = parse_half(&held).is_some_and(|(hv, _)| hv == v);
                zeroize::Zeroize::zeroize(&mut held);
                if holds {
                    write_at(&self.file, &[0u8; HALF_LEN], at)?;
                }
                Ok(())
            }
        }
    }

    /// Makes every write so far durable.
    pub fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }

    /// Bytes the file takes.
    pub fn len(&self) -> std::io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// Whether no slot was ever written.
    pub fn is_empty(&self) -> std::io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Calls `f` with every slot that holds a key, in slot order (blocking;
    /// for backups and checks).
    pub fn for_each(&self, f: &mut dyn FnMut(u64, &SlotKeys)) -> std::io::Result<()> {
        let slots = self.len()? / SLOT_LEN;
        for slot in 0..slots {
            let keys = self.read(slot)?;
            if !keys.is_empty() {
                f(slot, &keys);
            }
        }
        Ok(())
    }
}

/// The key a half holds, if any.
fn parse_half(half: &[u8]) -> Option<(u32, Vec<u8>)> {
    let len = usize::from(*half.first()?);
    if len == 0 || len > MAX_WRAPPED {
        return None;
    }
    let version = u32::from_be_bytes(half.get(1..5)?.try_into().ok()?);
    Some((version, half.get(5..5 + len)?.to_vec()))
}

/// Reads `buf.len()` bytes at `at`; bytes past the end of the file read as
/// zeros.
fn read_at(file: &File, buf: &mut [u8], at: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut done = 0;
    while done < buf.len() {
        let n = file.read_at(&mut buf[done..], at + done as u64)?;
        if n == 0 {
            buf[done..].fill(0);
            break;
        }
        done += n;
    }
    Ok(())
}

fn write_at(file: &File, buf: &[u8], at: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.write_all_at(buf, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_go_to_their_half_and_shredding_zeroes_them_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyslots");
        let slots = SlotFile::open(&path).unwrap();
        assert!(slots.read(5).unwrap().is_empty());
        slots.put(5, 1, b"wrapped-one").unwrap();
        slots.put(5, 2, b"wrapped-two").unwrap();
        slots.put(2, 1, b"other").unwrap();
        assert_eq!(
            slots.read(5).unwrap(),
            vec![(2, b"wrapped-two".to_vec()), (1, b"wrapped-one".to_vec())]
        );
        // Version 3 replaces version 1 in its half.
        let old = slots.put(5, 3, b"wrapped-three").unwrap();
        assert_eq!(parse_half(&old), Some((1, b"wrapped-one".to_vec())));
        // Shredding a version the half no longer holds does nothing.
        slots.shred(5, Some(1)).unwrap();
        assert_eq!(slots.read(5).unwrap().len(), 2);
        slots.shred(5, Some(2)).unwrap();
        assert_eq!(slots.read(5).unwrap(), vec![(3, b"wrapped-three".to_vec())]);
        slots.restore(5, 3, &old).unwrap();
        assert_eq!(slots.read(5).unwrap(), vec![(1, b"wrapped-one".to_vec())]);
        slots.shred(5, None).unwrap();
        slots.sync().unwrap();
        drop(slots);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, 6 * SLOT_LEN);
        assert!(bytes[5 * SLOT_LEN as usize..].iter().all(|b| *b == 0));
        assert!(!bytes.windows(7).any(|w| w == b"wrapped"));
        let slots = SlotFile::open(&path).unwrap();
        let mut seen = Vec::new();
        slots.for_each(&mut |s, k| seen.push((s, k.len()))).unwrap();
        assert_eq!(seen, vec![(2, 1)]);
        assert!(slots.put(1, 1, &[1; MAX_WRAPPED + 1]).is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
