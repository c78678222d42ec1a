//! `vault.v1.AuditService`: query and verify the audit trail (auditors).
//! Every call is itself audited.

use super::{Shared, Violations, at_most, base_event, principal};
use crate::error::Error;
use crate::policy::Action;
use prost::Message;
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
}

impl AuditApi {
    /// The service over `shared`.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

type EventStream = tokio_stream::Iter<std::vec::IntoIter<Result<AuditEvent, Status>>>;
type ChunkStream = tokio_stream::Iter<std::vec::IntoIter<Result<ExportChunk, Status>>>;

/// Longest principal or subject filter of a query, in bytes (names and
/// subject ids are at most 128).
pub const MAX_NAME_FILTER: usize = 128;

/// Longest role, field, action, outcome or event type filter, in bytes
/// (all at most 64).
pub const MAX_WORD_FILTER: usize = 64;

/// Events per export chunk.
const EXPORT_CHUNK: usize = 1000;

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
            let shared = self.shared.clone();
            tokio::task::spawn_blocking(move || shared.audit.export(after))
                .await
                .map_err(|e| Error::Internal(format!("audit export task: {e}")))?
        }
        .await;
        if let Ok((start, _, records)) = &r {
            ev.detail = format!("after_seq {start} events {}", records.len());
        }
        // The export is itself an event, durable before the export leaves.
        let (after, prev, records) = self.shared.conclude(ev, r, true).await?;
        let mut last = (after, prev.to_vec());
        let mut chunks = Vec::new();
        let mut first = true;
        let mut events = Vec::new();
        for (seq, rec) in records {
            let event = AuditEvent::decode(rec.event.as_slice()).map_err(|_| Error::Integrity)?;
            last = (seq, rec.hash.clone());
            events.push(ExportedEvent {
                event: Some(event),
                encoded: rec.event,
                hash: rec.hash,
            });
            if events.len() == EXPORT_CHUNK {
                chunks.push(ExportChunk {
                    start_prev_hash: if first { prev.to_vec() } else { Vec::new() },
                    events: std::mem::take(&mut events),
                    checkpoint: None,
                    after_seq: if first { after } else { 0 },
                });
                first = false;
            }
        }
        chunks.push(ExportChunk {
            start_prev_hash: if first { prev.to_vec() } else { Vec::new() },
            after_seq: if first { after } else { 0 },
            events,
            checkpoint: Some(self.shared.audit.checkpoint(last.0, &last.1)),
        });
        Ok(Response::new(tokio_stream::iter(
            chunks.into_iter().map(Ok).collect::<Vec<_>>(),
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
        // Every filter is bounded before it is written down or used: one
        // longer than anything the trail holds could match nothing.
        let mut v = Violations::default();
        for (at, text, max) in [
            ("principal", &q.principal, MAX_NAME_FILTER),
            ("role", &q.role, MAX_WORD_FILTER),
            ("subject_id", &q.subject_id, MAX_NAME_FILTER),
            ("field", &q.field, MAX_WORD_FILTER),
            ("action", &q.action, MAX_WORD_FILTER),
            ("outcome", &q.outcome, MAX_WORD_FILTER),
            ("event_type", &q.event_type, MAX_WORD_FILTER),
        ] {
            at_most(&mut v, at, text, max);
        }
        let checked = v.finish();
        if checked.is_ok() {
            ev.detail = format!(
                "after_seq {} limit {} principal {:?} role {:?} subject {:?} field {:?} action {:?} outcome {:?} event_type {:?}",
                q.after_seq,
                q.limit,
                q.principal,
                q.role,
                q.subject_id,
                q.field,
                q.action,
                q.outcome,
                q.event_type
            );
        }
        let r: Result<_, Error> = async {
            self.shared.require(&who, Action::ReadAudit)?;
            checked?;
            let shared = self.shared.clone();
            tokio::task::spawn_blocking(move || shared.audit.query(&q))
                .await
                .map_err(|e| Error::Internal(format!("audit query task: {e}")))?
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
            let shared = self.shared.clone();
            let v = tokio::task::spawn_blocking(move || shared.audit.verify())
                .await
                .map_err(|e| Error::Internal(format!("audit verify task: {e}")))??;
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
