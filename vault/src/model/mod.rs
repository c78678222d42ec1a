//! The bottom layer: the words every other layer speaks, and nothing that
//! does I/O or holds a key.
//!
//! - [`clock`]: where the vault gets the time ([`Clock`]), and tests move it.
//! - [`calendar`]: UTC dates of Unix times, and back.
//! - [`ids`]: identifiers validated at the edge ([`SubjectId`], [`Purpose`],
//!   [`PolicyVersion`], [`TravelEnd`]).
//! - [`principal`]: an authenticated caller ([`Principal`]).
//! - [`reveal`]: what a caller gets of one field ([`Reveal`]).
//! - [`journal`]: "this event is durable, then this batch is written"
//!   ([`Journal`], [`journal::commit`]; `crate::error::Audited` is its
//!   event with the vault's error).
//!
//! See `docs/architecture.md` for the layers above.

pub mod calendar;
pub mod clock;
pub mod faults;
pub mod ids;
pub mod journal;
pub mod principal;
pub mod reveal;

pub use clock::{Clock, OffsetClock, SystemClock};

/// Lower-case hex of `bytes` (file names, share text, fingerprints).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
pub use ids::{MAX_SUBJECT_ID, PolicyVersion, Purpose, SubjectId, TravelEnd};
pub use journal::Journal;
pub use principal::{AuthMethod, Principal};
pub use reveal::Reveal;
