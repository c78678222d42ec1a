//! `vault.v1.SubjectService`: consent now; the other subject rights come
//! with the lifecycle work.

use super::{Shared, Violations, base_event, declared_purpose, principal};
use crate::engine::types::{PolicyVersion, SubjectId};
use crate::error::Error;
use crate::policy::Action;
use std::sync::Arc;
use tonic::{Request, Response, Status};
use vault_proto::v1::subject_service_server::SubjectService;
use vault_proto::v1::{SetConsentRequest, SetConsentResponse};

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
            let schema = self.shared.engine.schema().clone();
            let mut v = Violations::default();
            let subject = v.check("subject_id", SubjectId::parse(&req.subject_id));
            if req.grant.is_empty() && req.withdraw.is_empty() {
                v.add("grant", "grant or withdraw at least one purpose");
            }
            let mut list = |name: &str, items: &[String]| {
                if items.len() > 128 {
                    v.add(name, "more than 128 purposes");
                    return Vec::new();
                }
                items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, p)| declared_purpose(&mut v, &format!("{name}[{i}]"), &schema, p))
                    .collect::<Vec<_>>()
            };
            let grant = list("grant", &req.grant);
            let withdraw = list("withdraw", &req.withdraw);
            if let Some(p) = grant.iter().find(|p| withdraw.contains(p)) {
                v.add(
                    "withdraw",
                    format!("purpose {} is both granted and withdrawn", p.as_str()),
                );
            }
            let policy_version = v.check("policy_version", PolicyVersion::parse(&req.policy_version));
            v.finish()?;
            let (Some(subject), Some(policy_version)) = (subject, policy_version) else {
                return Err(Error::Internal("validated input missing".into()));
            };
            ev.action = "set_consent".into();
            ev.subject_id = subject.as_str().to_owned();
            let names = |l: &[crate::engine::types::Purpose]| {
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
}
