//! The pure chain checker: hashes, MACs and checkpoint signatures of a run
//! of records, with no I/O (the trail's `verify`, recovery at start and
//! offline tools all use it).

use super::*;

/// The result of checking a run of records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Records that checked out, from the first.
    pub good: u64,
    /// The first bad sequence number and what is wrong with it.
    pub first_bad: Option<(u64, &'static str)>,
    /// The hash of the last good record (32 zero bytes if none).
    pub head: [u8; 32],
}

/// Checks a chain one record at a time, from a known start.
#[derive(Debug)]
pub struct ChainChecker<'a> {
    expected: u64,
    prev: [u8; 32],
    good: u64,
    /// The last record checked was event u64::MAX: none may follow.
    ended: bool,
    key: Option<&'a AuditKey>,
    public_key: Option<&'a [u8]>,
}

impl<'a> ChainChecker<'a> {
    /// A checker expecting event `first` after `prev_hash`; with `key` it
    /// checks MACs, with `public_key` the checkpoints' signatures.
    pub fn new(
        first: u64,
        prev_hash: [u8; 32],
        key: Option<&'a AuditKey>,
        public_key: Option<&'a [u8]>,
    ) -> Self {
        Self {
            expected: first,
            prev: prev_hash,
            good: 0,
            ended: false,
            key,
            public_key,
        }
    }

    /// Checks the next record (`None`: one that does not decode); on a
    /// problem, the sequence number where it is and what is wrong.
    pub fn check(
        &mut self,
        item: Option<(&AuditRecord, &AuditEvent)>,
    ) -> std::result::Result<(), (u64, &'static str)> {
        let at = self.expected;
        let Some((record, event)) = item else {
            return Err((at, "undecodable event"));
        };
        if self.ended {
            return Err((at, "an event after the last sequence number there can be"));
        }
        if event.seq > at {
            return Err((at, "missing (deleted)"));
        }
        if event.seq < at {
            return Err((
                at,
                "sequence number does not match its place (reordered or inserted)",
            ));
        }
        let hash = chain_hash(&self.prev, &record.event);
        if record.hash.as_slice() != hash.as_slice() {
            return Err((
                at,
                "hash does not match the event and its predecessor (changed, reordered or inserted)",
            ));
        }
        if let Some(k) = self.key
            && !k.verify(&hash, &record.mac)
        {
            return Err((at, "MAC does not match (not written by this vault)"));
        }
        if let Some(cp) = &event.checkpoint {
            let signed = self
                .public_key
                .is_none_or(|pk| verify_checkpoint(pk, cp.seq, &cp.hash, &cp.signature));
            if cp.seq.checked_add(1) != Some(at) || cp.hash.as_slice() != self.prev || !signed {
                return Err((
                    at,
                    "checkpoint does not match the chain or is not signed by this vault",
                ));
            }
        }
        self.prev = hash;
        self.good += 1;
        match self.expected.checked_add(1) {
            Some(next) => self.expected = next,
            None => self.ended = true,
        }
        Ok(())
    }

    /// The sequence number the next record must have.
    pub fn next_seq(&self) -> u64 {
        self.expected
    }

    /// The chain hash of the last record that checked out (or the start's).
    pub fn head(&self) -> [u8; 32] {
        self.prev
    }

    /// The verdict so far, with `first_bad` if a check failed.
    pub fn verdict(&self, first_bad: Option<(u64, &'static str)>) -> Verified {
        Verified {
            good: self.good,
            first_bad,
            head: self.prev,
        }
    }
}

/// Checks records in order, starting at `first` after `prev_hash`; with
/// `key`, the MACs too; with `public_key`, the checkpoints' signatures.
pub fn verify_chain(
    records: impl IntoIterator<Item = Option<(AuditRecord, AuditEvent)>>,
    first: u64,
    prev_hash: [u8; 32],
    key: Option<&AuditKey>,
    public_key: Option<&[u8]>,
) -> Verified {
    let mut c = ChainChecker::new(first, prev_hash, key, public_key);
    for r in records {
        if let Err(bad) = c.check(r.as_ref().map(|(r, e)| (r, e))) {
            return c.verdict(Some(bad));
        }
    }
    c.verdict(None)
}
