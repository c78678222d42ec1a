//! `vault.v1.SubjectService`: consent, erasure with a signed receipt,
//! restriction and legal holds.

use super::requests::{SubjectReason, ValidLegalHold, ValidLink, ValidSetConsent};
use super::{Shared, base_event, principal};
use crate::error::Error;
use crate::policy::Action;
use prost::Message;
use std::sync::Arc;
use tonic::{Request, Response, Status};
use vault_proto::v1::subject_service_server::SubjectService;
use vault_proto::v1::{
    AuditItem, EraseRequest, EraseResponse, ErasureReceipt, LinkCompanionRequest,
    LinkCompanionResponse, RestrictRequest, RestrictResponse, SetConsentRequest,
    SetConsentResponse, SetLegalHoldRequest, SetLegalHoldResponse, SubjectExportRequest,
    SubjectExportResponse,
};

/// The subject service.
#[derive(Debug, Clone)]
pub struct SubjectApi {
    shared: Arc<Shared>,
}

impl SubjectApi {
    /// The service over `shared`.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

#[tonic::async_trait]
impl SubjectService for SubjectApi {
    async fn set_consent(
        &self,
        request: Request<SetConsentRequest>,
    ) -> Result<Response<SetConsentResponse>, Status> {
        let who = principal(&request)?;
        let mut ev = base_event(&request, Some(&who));
        ev.event_type = "request".into();
        let r: Result<_, Error> = async {
            self.shared.require(&who, Action::SetConsent)?;
            let req = request.into_inner();
            let ValidSetConsent {
                subject,
                grant,
                withdraw,
                policy_version,
            } = ValidSetConsent::parse(&req, self.shared.engine.schema())?;
            ev.action = "set_consent".into();
            ev.subject_id = subject.as_str().to_owned();
            let names = |l: &[crate::model::Purpose]| {
                l.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(",")
            };
            ev.detail = format!("granted [{}] withdrawn [{}]", names(&grant), names(&withdraw));
            let (purposes, policy_version) = self
                .shared
                .engine
                .set_consent(
                    &subject,
                    &grant,
                    &withdraw,
                    &policy_version,
                    Some(self.shared.audited(&ev)),
                )
                .await?;
            tracing::info!(by = %who.name, subject = subject.as_str(), granted = grant.len(), withdrawn = withdraw.len(), "consent changed");
            Ok(Response::new(SetConsentResponse {
                purposes,
                policy_version,
            }))
        }
        .await;
        Ok(self.shared.conclude_written(ev, r).await?)
    }

    async fn erase(
        &self,
        request: Request<EraseRequest>,
    ) -> Result<Response<EraseResponse>, Status> {
        let who = principal(&request)?;
        let mut ev = base_event(&request, Some(&who));
        let r: Result<_, Error> = async {
            self.shared.require(&who, Action::Erase)?;
            let req = request.into_inner();
            let SubjectReason { subject, reason } = SubjectReason::parse(&req.subject_id, &req.reason)?;
            ev.action = "erase".into();
            ev.subject_id = subject.as_str().to_owned();
            ev.detail = format!("reason: {reason}");
            let body = self
                .shared
                .engine
                .erase(&subject, &reason, Some(self.shared.audited(&ev)))
                .await?;
            tracing::info!(by = %who.name, subject = subject.as_str(), fields = body.fields, tokens = body.tokens, "subject erased");
            let body = body.encode_to_vec();
            let signature = self
                .shared
                .engine
                .keyring()
                .checkpoint()
                .sign(&vault_proto::receipt::erasure_message(&body));
            Ok(Response::new(EraseResponse {
                receipt: Some(ErasureReceipt { body, signature }),
            }))
        }
        .await;
        Ok(self.shared.conclude_written(ev, r).await?)
    }

    async fn restrict(
        &self,
        request: Request<RestrictRequest>,
    ) -> Result<Response<RestrictResponse>, Status> {
        let who = principal(&request)?;
        let mut ev = base_event(&request, Some(&who));
        let r: Result<_, Error> = async {
            self.shared.require(&who, Action::Restrict)?;
            let req = request.into_inner();
            let SubjectReason { subject, reason } = SubjectReason::parse(&req.subject_id, &req.reason)?;
            ev.action = if req.restrict { "restrict" } else { "lift_restriction" }.into();
            ev.subject_id = subject.as_str().to_owned();
            ev.detail = format!("reason: {reason}");
            let restricted = self
                .shared
                .engine
                .set_restricted(&subject, req.restrict, Some(self.shared.audited(&ev)))
                .await?;
            tracing::info!(by = %who.name, subject = subject.as_str(), restricted, "restriction changed");
            Ok(Response::new(RestrictResponse { restricted }))
        }
        .await;
        Ok(self.shared.conclude_written(ev, r).await?)
    }

    async fn set_legal_hold(
        &self,
        request: Request<SetLegalHoldRequest>,
    ) -> Result<Response<SetLegalHoldResponse>, Status> {
        let who = principal(&request)?;
        let mut ev = base_event(&request, Some(&who));
        let r: Result<_, Error> = async {
            self.shared.require(&who, Action::LegalHold)?;
            let req = request.into_inner();
            let ValidLegalHold {
                subject,
                hold,
                case_id,
                reason,
            } = ValidLegalHold::parse(&req)?;
            ev.action = if hold { "legal_hold" } else { "release_legal_hold" }.into();
            ev.subject_id = subject.as_str().to_owned();
            ev.detail = format!("case: {case_id}; reason: {reason}");
            let case_id = self
                .shared
                .engine
                .set_legal_hold(
                    &subject,
                    hold,
                    &case_id,
                    &reason,
                    Some(self.shared.audited(&ev)),
                )
                .await?;
            tracing::info!(by = %who.name, subject = subject.as_str(), held = hold, "legal hold changed");
            Ok(Response::new(SetLegalHoldResponse {
                held: hold,
                case_id,
            }))
        }
        .await;
        Ok(self.shared.conclude_written(ev, r).await?)
    }

    async fn export(
        &self,
        request: Request<SubjectExportRequest>,
    ) -> Result<Response<SubjectExportResponse>, Status> {
        let who = principal(&request)?;
        let mut ev = base_event(&request, Some(&who));
        let r: Result<_, Error> = async {
            self.shared.require(&who, Action::Export)?;
            let req = request.into_inner();
            let SubjectReason { subject, reason } = SubjectReason::parse(&req.subject_id, &req.reason)?;
            ev.action = "export".into();
            ev.subject_id = subject.as_str().to_owned();
            ev.detail = format!("reason: {reason}");
            let data = self.shared.engine.export_subject(&subject)?;
            let audit = self.shared.audit.clone();
            let sid = subject.as_str().to_owned();
            let history = tokio::task::spawn_blocking(move || {
                audit.subject_history(&sid, super::export::MAX_HISTORY)
            })
            .await
            .map_err(|e| Error::task("export task", e))??;
            let now = self.shared.engine.clock().now();
            let doc = super::export::document(
                self.shared.engine.schema(),
                subject.as_str(),
                &data,
                &history,
                now,
            );
            ev.items = data
                .values
                .iter()
                .map(|v| AuditItem {
                    field: v.entry.field.clone(),
                    token: v.entry.token.clone(),
                    // In the document, or only its state (expired, a CVV).
                    disclosure: if v.value.is_some() { "EXPORTED" } else { "WITHHELD" }
                        .to_owned(),
                    subject_id: String::new(),
                })
                .collect();
            let json = super::export::into_json(doc)
                .map_err(|e| Error::json("export document", e))?;
            tracing::info!(by = %who.name, subject = subject.as_str(), fields = data.values.len(), "subject exported");
            Ok(Response::new(SubjectExportResponse { json }))
        }
        .await;
        // A read: its event is durable before the document leaves.
        Ok(self.shared.conclude(ev, r, true).await?)
    }

    async fn link_companion(
        &self,
        request: Request<LinkCompanionRequest>,
    ) -> Result<Response<LinkCompanionResponse>, Status> {
        let who = principal(&request)?;
        let mut ev = base_event(&request, Some(&who));
        let r: Result<_, Error> = async {
            self.shared.require(&who, Action::LinkCompanion)?;
            let req = request.into_inner();
            let ValidLink {
                companion,
                holder,
                attestation,
            } = ValidLink::parse(&req)?;
            ev.action = if holder.is_some() { "link_companion" } else { "unlink_companion" }.into();
            ev.subject_id = companion.as_str().to_owned();
            ev.detail = match &holder {
                Some(h) => format!("holder: {}; attestation: {attestation}", h.as_str()),
                None => String::new(),
            };
            let linked = self
                .shared
                .engine
                .link_companion(
                    &companion,
                    holder.as_ref(),
                    &attestation,
                    Some(self.shared.audited(&ev)),
                )
                .await?;
            tracing::info!(by = %who.name, companion = companion.as_str(), linked = !linked.is_empty(), "companion link changed");
            Ok(Response::new(LinkCompanionResponse { holder_id: linked }))
        }
        .await;
        Ok(self.shared.conclude_written(ev, r).await?)
    }
}
