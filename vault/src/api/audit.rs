//! `vault.v1.AuditService`: query and verify the audit trail (auditors).
//! Every call is itself audited.

use super::requests::ValidQuery;
use super::{Shared, base_event, principal};
use crate::audit::bound;
use crate::error::Error;
use crate::policy::Action;
use std::sync::Arc;
use tonic::{Request, Response, Status};
use vault_proto::v1::audit_service_server::AuditService;
use vault_proto::v1::{
    AuditEvent, ExportChunk, ExportRequest, ExportedEvent, PublicKeyRequest, PublicKeyResponse,
    QueryRequest, VerifyRequest, VerifyResponse,
};

/// The audit service.
#[derive(Debug, Clone)]
pub struct AuditApi {
    shared: Arc<Shared>,
    /// Exports streaming at once: each holds a blocking thread while its
    /// client reads, so an auditor who opens many and reads none cannot tie
    /// up the threads the rest of the vault needs.
    exports: Arc<tokio::sync::Semaphore>,
    /// Queries and verifications running at once (each reads the trail on
    /// a blocking thread; a query holds up to its page in memory).
    reads: Arc<tokio::sync::Semaphore>,
}

/// Most audit exports streaming at once; more answer RESOURCE_EXHAUSTED.
pub const MAX_CONCURRENT_EXPORTS: usize = 4;
/// Most audit queries and verifications running at once; more answer
/// RESOURCE_EXHAUSTED.
pub const MAX_CONCURRENT_READS: usize = 8;

impl AuditApi {
    /// The service over `shared`.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            exports: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_EXPORTS)),
            reads: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_READS)),
        }
    }
}

/// A permit of `pool`, or RESOURCE_EXHAUSTED saying what is busy.
fn permit(
    pool: &Arc<tokio::sync::Semaphore>,
    busy: &'static str,
) -> Result<tokio::sync::OwnedSemaphorePermit, Error> {
    pool.clone()
        .try_acquire_owned()
        .map_err(|_| Error::ResourceExhausted(busy))
}

const EXPORTS_BUSY: &str = "too many audit exports are streaming; try again when one ends";
const READS_BUSY: &str = "too many audit queries are running; try again shortly";

type EventStream = tokio_stream::Iter<std::vec::IntoIter<Result<AuditEvent, Status>>>;
type ChunkStream = tokio_stream::wrappers::ReceiverStream<Result<ExportChunk, Status>>;

/// Events per export chunk, at most…
const EXPORT_CHUNK: usize = 1000;
/// …and about this many bytes of events (each counted with its encoding):
/// with events of at most 256 KiB, a chunk stays far below a client's
/// 4 MiB message limit.
const EXPORT_CHUNK_BYTES: usize = 1 << 20;
/// Chunks read ahead of a slow client: the export's memory is bounded by
/// this many chunks, whatever the trail's length.
const EXPORT_AHEAD: usize = 2;

/// Longest text filter the query's event records as it is; a longer one
/// is recorded as its length and a keyed digest.
pub const VERBATIM_FILTER_BYTES: usize = 128;

/// Streams the events of `range` to `tx`, chunk by chunk, read one at a
/// time from the trail, and ends with the signed checkpoint; stops when the
/// client goes away. A trail that fails its checks ends the stream with an
/// error, before any checkpoint is signed.
fn stream_export(
    shared: &Shared,
    range: &crate::audit::ExportRange,
    tx: &tokio::sync::mpsc::Sender<Result<ExportChunk, Status>>,
) {
    let mut chunk = ExportChunk {
        start_prev_hash: range.prev.to_vec(),
        after_seq: range.after,
        ..Default::default()
    };
    let mut bytes = 0;
    let result = shared.audit.export_each(range, |record, event| {
        bytes += 2 * record.event.len() + record.hash.len();
        chunk.events.push(ExportedEvent {
            event: Some(event),
            encoded: record.event,
            hash: record.hash,
        });
        if chunk.events.len() >= EXPORT_CHUNK || bytes >= EXPORT_CHUNK_BYTES {
            bytes = 0;
            // The first chunk alone says where the export starts.
            let full = std::mem::take(&mut chunk);
            return Ok(tx.blocking_send(Ok(full)).is_ok());
        }
        Ok(true)
    });
    if tx.is_closed() {
        return;
    }
    match result {
        Ok((seq, hash)) => {
            chunk.checkpoint = Some(shared.audit.export_checkpoint(range, seq, &hash));
            let _ = tx.blocking_send(Ok(chunk));
        }
        Err(e) => {
            tracing::error!(error = %e, after_seq = range.after, "audit export stopped");
            let _ = tx.blocking_send(Err(e.into()));
        }
    }
}

#[tonic::async_trait]
impl AuditService for AuditApi {
    type QueryStream = EventStream;
    type ExportStream = ChunkStream;

    async fn export(
        &self,
        request: Request<ExportRequest>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        let who = principal(&request)?;
        let mut ev = base_event(&request, Some(&who));
        ev.event_type = "audit_export".into();
        ev.action = "export_audit".into();
        let after = request.get_ref().after_seq;
        let r: Result<_, Error> = async {
            self.shared.require(&who, Action::ExportAudit)?;
            let streaming = permit(&self.exports, EXPORTS_BUSY)?;
            let shared = self.shared.clone();
            let range = tokio::task::spawn_blocking(move || shared.audit.export_range(after))
                .await
                .map_err(|e| Error::task("audit export task", e))??;
            Ok((range, streaming))
        }
        .await;
        if let Ok((range, _)) = &r {
            ev.detail = format!(
                "after_seq {} through {} events {}",
                range.after,
                range.through,
                range.through - range.after
            );
        }
        // The export is itself an event, durable before the export leaves.
        let (range, streaming) = self.shared.conclude(ev, r, true).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(EXPORT_AHEAD);
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            stream_export(&shared, &range, &tx);
            drop(streaming);
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }

    async fn public_key(
        &self,
        request: Request<PublicKeyRequest>,
    ) -> Result<Response<PublicKeyResponse>, Status> {
        let who = principal(&request)?;
        let mut ev = base_event(&request, Some(&who));
        ev.event_type = "audit_public_key".into();
        let r: Result<_, Error> = async {
            self.shared.require(&who, Action::VerifyAudit)?;
            Ok(PublicKeyResponse {
                ed25519: self.shared.audit.public_key(),
            })
        }
        .await;
        Ok(Response::new(self.shared.conclude(ev, r, true).await?))
    }

    async fn query(
        &self,
        request: Request<QueryRequest>,
    ) -> Result<Response<Self::QueryStream>, Status> {
        let who = principal(&request)?;
        let mut ev = base_event(&request, Some(&who));
        ev.event_type = "audit_query".into();
        ev.action = "read_audit".into();
        let q = request.into_inner();
        // What the caller asked for, never more than a short filter as it
        // is: a long one is its length and a keyed digest.
        let key = self.shared.engine.keyring().audit();
        ev.detail = format!("after_seq {} limit {}", q.after_seq, q.limit);
        for (name, value, _) in ValidQuery::filters(&q) {
            ev.detail.push_str(&format!(
                " {name} {}",
                bound::quote(key, value, VERBATIM_FILTER_BYTES)
            ));
        }
        let q = ValidQuery::parse(q);
        let r: Result<_, Error> = async {
            self.shared.require(&who, Action::ReadAudit)?;
            let ValidQuery(q) = q?;
            let _reading = permit(&self.reads, READS_BUSY)?;
            let shared = self.shared.clone();
            tokio::task::spawn_blocking(move || shared.audit.query(&q))
                .await
                .map_err(|e| Error::task("audit query task", e))?
        }
        .await;
        // The read is durable in the trail before any event leaves.
        let events = self.shared.conclude(ev, r, true).await?;
        let items: Vec<Result<AuditEvent, Status>> = events.into_iter().map(Ok).collect();
        Ok(Response::new(tokio_stream::iter(items)))
    }

    async fn verify(
        &self,
        request: Request<VerifyRequest>,
    ) -> Result<Response<VerifyResponse>, Status> {
        let who = principal(&request)?;
        let mut ev = base_event(&request, Some(&who));
        ev.event_type = "audit_verify".into();
        ev.action = "verify_audit".into();
        let r: Result<_, Error> = async {
            self.shared.require(&who, Action::VerifyAudit)?;
            let _reading = permit(&self.reads, READS_BUSY)?;
            let shared = self.shared.clone();
            let v = tokio::task::spawn_blocking(move || shared.audit.verify())
                .await
                .map_err(|e| Error::task("audit verify task", e))??;
            Ok(VerifyResponse {
                good: v.good,
                ok: v.first_bad.is_none(),
                first_bad_seq: v.first_bad.map_or(0, |b| b.0),
                problem: v.first_bad.map(|b| b.1.to_owned()).unwrap_or_default(),
            })
        }
        .await;
        if let Ok(v) = &r {
            ev.detail = format!("good {} first_bad {}", v.good, v.first_bad_seq);
        }
        Ok(Response::new(self.shared.conclude(ev, r, true).await?))
    }
}
