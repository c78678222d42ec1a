//! Entry points for the fuzz targets in `fuzz/`: thin wrappers over parsers
//! that are not public. Not an API (hidden from the docs); each follows the
//! parser it wraps, so that a change there shows here at compile time.

use crate::audit::ChainChecker;
use crate::audit::segments::{self, End};
use crate::auth::credentials::{self, Secret};
use crate::crypto::keys::AuditKey;
use crate::error::Result;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// A bearer token (`vt1.<id>.<secret>`) taken apart by the parser that
/// authentication uses.
pub struct BearerParts {
    /// The credential id (base64url text, as in the token).
    pub id: String,
    /// The whole secret, or the requester's part of a two-part secret.
    pub secret: Zeroizing<Vec<u8>>,
    /// The approver's part of a two-part secret.
    pub approval: Option<Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for BearerParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerParts")
            .field("id", &self.id)
            .field("two_parts", &self.approval.is_some())
            .finish_non_exhaustive()
    }
}

/// Parses a bearer token as [`crate::auth::credentials::CredentialStore::verify`] does.
pub fn parse_bearer(text: &str) -> Option<BearerParts> {
    let (id, secret) = credentials::parse(text)?;
    let (secret, approval) = match secret {
        Secret::Whole(s) => (s, None),
        Secret::Parts(a, b) => (a, Some(b)),
    };
    Some(BearerParts {
        id: id.to_owned(),
        secret,
        approval,
    })
}

/// How reading an audit segment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentEnd {
    /// At the end of the file, after a whole frame (or where checking
    /// stopped at damage).
    Clean,
    /// At a zero length at this offset, followed by zeros only.
    Zeros(u64),
    /// At a frame cut short or with an impossible length, at this offset.
    Torn(u64),
}

impl From<End> for SegmentEnd {
    fn from(end: End) -> Self {
        match end {
            End::Clean => Self::Clean,
            End::Zeros { offset } => Self::Zeros(offset),
            End::Torn { offset } => Self::Torn(offset),
        }
    }
}

/// The path of audit segment `number` in `dir`.
pub fn segment_path(dir: &Path, number: u64) -> PathBuf {
    segments::segment_path(dir, number)
}

/// What reading one segment found, read and checked the way the start's
/// recovery reads the trail.
#[derive(Debug)]
pub struct SegmentCheck {
    /// Every frame read: its offset and record bytes (up to and including
    /// the first that fails the chain's checks).
    pub frames: Vec<(u64, Vec<u8>)>,
    /// How reading ended.
    pub end: SegmentEnd,
    /// The first frame that fails the chain's checks: its offset, the
    /// sequence number expected there, and what is wrong.
    pub damage: Option<(u64, u64, &'static str)>,
    /// Records that passed the checks.
    pub good: u64,
    /// Where the damage or the torn end is, whether the bytes from there on
    /// are what an interrupted write leaves (`None`: nothing wrong).
    pub torn_tail: Option<bool>,
}

/// Reads the segment file at `path` as the start's recovery does: frame by
/// frame, each checked against the chain from event `first` after
/// `prev_hash`, MACs under `key`; at the first problem, whether it is an
/// interrupted write at the end or damage.
pub fn check_segment(
    path: &Path,
    first: u64,
    prev_hash: [u8; 32],
    key: &AuditKey,
) -> Result<SegmentCheck> {
    let mut checker = ChainChecker::new(first, prev_hash, Some(key), None);
    let mut frames = Vec::new();
    let mut damage = None;
    let end = segments::read_frames(path, |offset, bytes| {
        frames.push((offset, bytes.to_vec()));
        let item = segments::decode(bytes);
        match checker.check(item.as_ref().map(|(r, e)| (r, e))) {
            Ok(()) => Ok(true),
            Err((seq, problem)) => {
                damage = Some((offset, seq, problem));
                Ok(false)
            }
        }
    })?;
    let at = match (damage, end) {
        (Some((offset, ..)), _) | (None, End::Torn { offset }) => Some(offset),
        _ => None,
    };
    let torn_tail = at
        .map(|offset| segments::is_torn_tail(path, offset, key))
        .transpose()?;
    Ok(SegmentCheck {
        frames,
        end: end.into(),
        damage,
        good: checker.verdict(None).good,
        torn_tail,
    })
}
