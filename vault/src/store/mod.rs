//! Storage: the [`Store`] trait, and its embedded implementation on sled.
//!
//! A store is an ordered key-value map with atomic, durable batches. The
//! engine lays its records out in it by key prefix (see [`keys`]). A
//! [`Store::commit`] returns only once its batch is on disk; concurrent commits
//! share one flush (group commit), so durable writes cost a fraction of an
//! fsync each.

pub mod keys;
pub mod sled;

use std::future::Future;
use std::pin::Pin;

/// One change in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Set `key` to `value`.
    Put(Vec<u8>, Vec<u8>),
    /// Remove `key`.
    Delete(Vec<u8>),
}

/// Changes applied together, all or nothing.
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
}

impl From<StoreError> for crate::error::Error {
    fn from(e: StoreError) -> Self {
        crate::error::Error::Unavailable(e.to_string())
    }
}

/// A boxed future, so that [`Store`] stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An ordered key-value store with atomic, durable batches.
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// The value at `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Up to `limit` entries whose keys start with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError>;

    /// Applies `batch` atomically and resolves once it is durable. On error
    /// nothing of the batch is visible.
    fn commit(&self, batch: Batch) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Makes everything committed so far durable, blocking (for shutdown).
    fn flush(&self) -> Result<(), StoreError>;

    /// Bytes the store takes on disk.
    fn size_on_disk(&self) -> Result<u64, StoreError>;

    /// The backend's name, e.g. `sled`.
    fn backend(&self) -> &'static str;
}
