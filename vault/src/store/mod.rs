//! Storage: the [`Store`] trait, and its embedded implementation on sled.
//!
//! A store is an ordered key-value map, and a set of numbered key slots
//! that hold subjects' wrapped data keys. What a backend must give the
//! slots: at most two key versions per slot (a subject's current key, and
//! its next one during a re-key), a new key durable before any record that
//! uses it, and a shred that leaves the key unrecoverable from the store's
//! files once the commit that asked for it returns (the sled backend
//! overwrites a fixed-size slot of its own file in place: [`slots`]; a
//! backend that keeps old row versions must say how long an old key
//! survives, and bound it: docs/postgres-plan.md, for issue 20). A [`Store::commit`] applies a batch's
//! operations in order, each one atomic, and returns only once all of them
//! are on disk; concurrent commits share one flush (group commit), so durable
//! writes cost a fraction of an fsync each.
//!
//! A batch as a whole is not promised to be atomic against a crash (sled's
//! atomic batches serialise the whole process). The engine does not need
//! it: its layout (see [`keys`]) makes the *last* operation of every batch
//! the one write that commits the request, and every read checks the other
//! entries against it. A commit that *fails* is undone whole, though
//! ([`Store::commit`]): a write reported as failed did not happen.
//! A backend with real transactions (PostgreSQL) may apply a batch atomically.

pub mod keys;
pub mod postgres;
mod private;
pub mod sled;
pub mod slots;

pub use slots::SlotKeys;

/// One change in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Set `key` to `value`.
    Put(Vec<u8>, Vec<u8>),
    /// Remove `key`.
    Delete(Vec<u8>),
    /// Set `key` to `value` where `key` holds nothing: the commit fails
    /// with [`StoreError::Conflict`] (and does nothing) where it holds
    /// something (a number or a name another node took first).
    Insert(Vec<u8>, Vec<u8>),
    /// Nothing, where `key` holds exactly `value`; else the commit fails
    /// with [`StoreError::Conflict`] (and does nothing): the value a
    /// read-modify-write read has not changed under it (another node wrote
    /// it). The key's row stays locked until the commit ends, on a backend
    /// with transactions.
    Expect(Vec<u8>, Vec<u8>),
    /// Write data key `version` (`wrapped`) into key slot `slot`, beside
    /// the slot's other version (see [`slots`]).
    PutKey {
        /// The slot.
        slot: u64,
        /// The key's version.
        version: u32,
        /// The wrapped key.
        wrapped: Vec<u8>,
    },
    /// Overwrite key `version` of `slot` (`None`: the whole slot) with
    /// zeros, durably: in a [`Store::commit`], once the batch's other
    /// operations are durable; in a [`Store::apply`], at once.
    ShredKey {
        /// The slot.
        slot: u64,
        /// The key's version (`None`: every key of the slot).
        version: Option<u32>,
    },
}

/// Changes applied in order; the last one is the request's commit point.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    ops: Vec<Op>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(Op::Put(key.into(), value.into()));
    }

    /// Removes `key`.
    pub fn delete(&mut self, key: impl Into<Vec<u8>>) {
        self.ops.push(Op::Delete(key.into()));
    }

    /// Writes key `version` of `slot`.
    pub fn put_key(&mut self, slot: u64, version: u32, wrapped: Vec<u8>) {
        self.ops.push(Op::PutKey {
            slot,
            version,
            wrapped,
        });
    }

    /// Sets `key` to `value` where it holds nothing ([`Op::Insert`]).
    pub fn insert(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(Op::Insert(key.into(), value.into()));
    }

    /// Fails the commit unless `key` holds `value` ([`Op::Expect`]).
    pub fn expect(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(Op::Expect(key.into(), value.into()));
    }

    /// Shreds key `version` of `slot` (`None`: the whole slot).
    pub fn shred_key(&mut self, slot: u64, version: Option<u32>) {
        self.ops.push(Op::ShredKey { slot, version });
    }

    /// Appends `other`'s changes after these.
    pub fn extend(&mut self, other: Batch) {
        self.ops.extend(other.ops);
    }

    /// Whether the batch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The changes, in order.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }
}

/// Why storage failed. The request that met it did nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend reported an error.
    #[error("storage backend: {0}")]
    Backend(String),
    /// The store is shutting down.
    #[error("store closed")]
    Closed,
    /// A write's outcome is not known yet (the database's answer was lost):
    /// the store takes no writes until the database says, by itself.
    #[error("a write's outcome is not known yet: no writes until the database answers")]
    Unsettled,
    /// An [`Op::Insert`] found its key taken, or an [`Op::Expect`] found
    /// another value: another writer (another node) changed the data first.
    #[error("changed by another writer")]
    Conflict,
    /// A failed write could not be undone durably: the store takes no more
    /// writes until the vault is restarted.
    #[error("storage failed and a failed write could not be undone: restart the vault")]
    Failed,
}

/// What other nodes changed in a shared store ([`Store::watch`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changes {
    /// These keys (the families nodes cache: not the index or companion
    /// entries).
    Keys(Vec<Vec<u8>>),
    /// Anything: drop every cache (a large change, or this node lost
    /// sight of the others' changes for a while).
    Everything,
}

/// Told of other nodes' changes, off the async workers (it may read the
/// store).
pub type Listener = std::sync::Arc<dyn Fn(&Changes) + Send + Sync>;

/// This node among the nodes that share a store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cluster {
    /// This node's id.
    pub node: String,
    /// The other nodes seen alive lately.
    pub peers: Vec<String>,
    /// Whether the database answered lately.
    pub reachable: bool,
}

/// One key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);
/// Keys and values, in key order.
pub type Entries = Vec<Entry>;

/// A boxed future, so that [`Store`] stays object-safe.
pub use crate::model::journal::BoxFuture;

/// An ordered key-value store with ordered, durable batches of atomic operations.
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// The value at `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// The data keys key slot `slot` holds (none for a slot never written
    /// or shredded).
    fn keys(&self, slot: u64) -> Result<SlotKeys, StoreError>;

    /// The shreds of one key version that a commit asked for and a crash
    /// interrupted: `(slot, version)`. The commit may or may not have
    /// reached the disk: shred the version if the subject's durable record
    /// no longer uses it ([`Batch::shred_key`] again), else forget it
    /// ([`Store::forget_key_shred`]). (Whole-slot shreds, of erasures, the
    /// store finishes itself when it opens.)
    ///
    /// Only a backend whose shreds happen after the commit (sled) has any;
    /// the default has none.
    fn pending_key_shreds(&self) -> Result<Vec<(u64, u32)>, StoreError> {
        Ok(Vec::new())
    }

    /// Drops the interrupted shred of `version` of `slot` (its commit did
    /// not reach the disk).
    fn forget_key_shred(&self, slot: u64, version: u32) -> Result<(), StoreError> {
        let _ = (slot, version);
        Ok(())
    }

    /// Calls `f` with every key slot that holds a key, in slot order
    /// (blocking; for backups and the rewrap and retirement scans).
    fn for_each_key_slot(&self, f: &mut dyn FnMut(u64, &SlotKeys)) -> Result<(), StoreError>;

    /// Up to `limit` entries whose keys start with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8], limit: usize) -> Result<Entries, StoreError>;

    /// Applies `batch`'s operations in order, each atomically, and resolves
    /// once all are durable.
    ///
    /// On error the batch did not happen: what it had applied is put back
    /// and the undo made durable before the error is returned, so that no
    /// read and no later commit (nor a crash after the error) finds any of
    /// it. A backend that cannot make the undo durable stops taking writes
    /// ([`StoreError::Failed`]). (A crash *before* the answer may leave a
    /// prefix of the batch; the engine's layout makes such a prefix
    /// invisible, and a prefix of an erasure is finished at the next start.)
    fn commit(&self, batch: Batch) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Applies `batch`'s operations now, in order, each atomically, without
    /// waiting for the disk and with no undo (bulk loads into a store that
    /// serves nobody yet, such as a restore). Operations applied before
    /// others are never lost while later ones survive a crash (the store's
    /// log is ordered).
    fn apply(&self, batch: Batch) -> Result<(), StoreError>;

    /// Resolves once everything applied before the call is durable (group
    /// commit: concurrent callers share one flush).
    fn durable(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Up to `limit` entries whose key starts with `prefix`, from `start` on
    /// (inclusive), in key order.
    fn scan_from(&self, prefix: &[u8], start: &[u8], limit: usize) -> Result<Entries, StoreError>;

    /// The last entry (highest key) whose key starts with `prefix`.
    fn last_with_prefix(&self, prefix: &[u8]) -> Result<Option<Entry>, StoreError>;

    /// Calls `f` with the key and value of every subject record, in no
    /// particular order (blocking: reads them all; for sweeps and reports).
    fn for_each_subject(&self, f: &mut dyn FnMut(&[u8], &[u8])) -> Result<(), StoreError>;

    /// Calls `f` with every key and value that is not a subject record, in
    /// key order per key family (blocking; for backups). Key slots are not
    /// entries ([`Store::for_each_key_slot`]).
    fn for_each_entry(&self, f: &mut dyn FnMut(&[u8], &[u8])) -> Result<(), StoreError>;

    /// Makes everything committed so far durable, blocking (for shutdown).
    fn flush(&self) -> Result<(), StoreError>;

    /// Bytes the store takes on disk.
    fn size_on_disk(&self) -> Result<u64, StoreError>;

    /// Whether several vault nodes may share this store: their commits
    /// then carry [`Op::Expect`]s and [`Op::Insert`]s where a node's own
    /// locks do not reach, and key slots come from [`Store::reserve_slots`].
    fn shared(&self) -> bool {
        false
    }

    /// `count` key slot numbers no one has had, all at least `floor` (the
    /// slot after the highest one the data names), handed out once across
    /// every node: `None` where one process owns the store (it counts
    /// itself).
    fn reserve_slots(
        &self,
        floor: u64,
        count: u64,
    ) -> Result<Option<std::ops::Range<u64>>, StoreError> {
        let _ = (floor, count);
        Ok(None)
    }

    /// Has `listener` told, within about a second, of what other nodes
    /// change; nothing where one process owns the store.
    fn watch(&self, listener: Listener) {
        let _ = listener;
    }

    /// This node, its peers and whether the database answers (`None`: one
    /// process owns the store).
    fn cluster(&self) -> Option<Cluster> {
        None
    }

    /// Round trips to a database server so far (this node's background
    /// work included); 0 for an embedded store.
    fn round_trips(&self) -> u64 {
        0
    }

    /// Takes or keeps, for `hold`, the lease of cluster-wide job `job`:
    /// whether this node holds it now (always, where one process owns the
    /// store). A node that dies loses its leases when they run out.
    fn lease(
        &self,
        job: &str,
        hold: std::time::Duration,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        let _ = (job, hold);
        Box::pin(async { Ok(true) })
    }

    /// The backend's name, e.g. `sled`.
    fn backend(&self) -> &'static str;

    /// Flushes and stops the store's background work: its last use.
    fn close(&self) -> Result<(), StoreError>;
}
