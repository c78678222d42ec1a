//! "This event is durable, then this batch is written": the one commit step
//! of every audited change.
//!
//! A change that survives a crash must never lack its audit event, so the
//! event is made durable first and the change written after. If the write
//! then fails, the journal is told, so the trail can say the change named by
//! the event was not made. The audit trail implements [`Journal`]; the
//! engine, the lifecycle and the credential store call [`commit`] and never
//! see the audit trail itself.

use crate::error::{Error, Result};
use std::future::Future;
use std::pin::Pin;
use vault_proto::v1::AuditEvent;

/// A boxed, sendable future (what a dyn-compatible async method returns).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where audit events go before the changes they describe.
pub trait Journal: Send + Sync + std::fmt::Debug {
    /// Makes `event` durable, or fails (`UNAVAILABLE` once the audit bound
    /// has passed); returns its sequence number.
    fn durable(&self, event: AuditEvent) -> BoxFuture<'_, Result<u64>>;

    /// Notes, as well as it can, that the change of event `seq` was not
    /// made because of `error`.
    fn write_failed(&self, seq: u64, error: &Error);
}

/// A change's audit event and the journal it goes to. The code making the
/// change fills in what it touched (items, detail) before [`commit`].
#[derive(Debug)]
pub struct Audited<'a> {
    /// The journal (the audit trail).
    pub journal: &'a dyn Journal,
    /// The event so far (who, what, why).
    pub event: AuditEvent,
}

/// The one commit step: with an event, makes it durable and then runs
/// `write` (reporting a failed write to the journal); without one, just
/// runs `write`. Nothing is written if the event cannot be made durable.
pub async fn commit<T>(
    audit: Option<Audited<'_>>,
    write: impl Future<Output = Result<T>>,
) -> Result<T> {
    let Some(Audited { journal, event }) = audit else {
        return write.await;
    };
    let seq = journal.durable(event).await?;
    match write.await {
        Ok(v) => Ok(v),
        Err(e) => {
            journal.write_failed(seq, &e);
            Err(e)
        }
    }
}
