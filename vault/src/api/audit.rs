//! `vault.v1.AuditService`: query and verify the audit trail (auditors).
//! Every call is itself audited.

use super::{Shared, base_event, principal};
use crate::error::Error;
use crate::policy::Action;
use std::sync::Arc;
use tonic::{Request, Response, Status};
use vault_proto::v1::audit_service_server::AuditService;
use vault_proto::v1::{AuditEvent, QueryRequest, VerifyRequest, VerifyResponse};

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

#[tonic::async_trait]
impl AuditService for AuditApi {
    type QueryStream = EventStream;

    async fn query(
        &self,
        request: Request<QueryRequest>,
    ) -> Result<Response<Self::QueryStream>, Status> {
        let who = principal(&request)?;
        let mut ev = base_event(&request, Some(&who));
        ev.event_type = "audit_query".into();
        ev.action = "read_audit".into();
        let q = request.into_inner();
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
        let r: Result<_, Error> = async {
            self.shared.require(&who, Action::ReadAudit)?;
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
