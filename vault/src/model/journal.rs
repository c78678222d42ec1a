//! "This event is durable, then this write is made": the one commit step of
//! every audited change (the write is the store's commit of the change's
//! batch).
//!
//! A change that survives a crash must never lack its audit event, so the
//! event is made durable first and the change written after. If the write
//! then fails, the journal is told, so the trail can say the change named by
//! the event was not made. The audit trail implements [`Journal`]; the
//! engine, the lifecycle and the credential store call [`commit`] and never
//! see the audit trail itself.

use std::future::Future;
use std::pin::Pin;
use vault_proto::v1::AuditEvent;

/// A boxed, sendable future (what a dyn-compatible async method returns).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where audit events go before the changes they describe. `Error` is the
/// error of the layer that uses it (the vault's `crate::error::Error`,
/// which sits above this layer).
pub trait Journal: Send + Sync + std::fmt::Debug {
    /// The error of a journal and of the writes it journals.
    type Error;

    /// Makes `event` durable, or fails (`UNAVAILABLE` once the audit bound
    /// has passed); returns its sequence number.
    fn durable(&self, event: AuditEvent) -> BoxFuture<'_, Result<u64, Self::Error>>;

    /// Notes, as well as it can, that the change of event `seq` was not
    /// made because of `error`.
    fn write_failed(&self, seq: u64, error: &Self::Error);
}

/// A change's audit event and the journal it goes to. The code making the
/// change fills in what it touched (items, detail) before [`commit`].
pub struct Audited<'a, E> {
    /// The journal (the audit trail).
    pub journal: &'a dyn Journal<Error = E>,
    /// The event so far (who, what, why).
    pub event: AuditEvent,
}

impl<E> std::fmt::Debug for Audited<'_, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audited")
            .field("journal", &self.journal)
            .field("event", &self.event.event_type)
            .finish()
    }
}

/// The one commit step: with an event, makes it durable and then runs
/// `write` (reporting a failed write to the journal); without one, just
/// runs `write`. Nothing is written if the event cannot be made durable.
pub async fn commit<T, E>(
    audit: Option<Audited<'_, E>>,
    write: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
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
