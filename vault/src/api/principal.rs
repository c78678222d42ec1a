//! `vault.v1.PrincipalService`: bearer tokens (operators) and "who am I".

use super::{Shared, Violations, base_event, principal};
use crate::auth::credentials::{CredentialRecord, check_name, check_role};
use crate::error::Error;
use crate::policy::Action;
use std::sync::Arc;
use tonic::{Request, Response, Status};
use vault_proto::v1::principal_service_server::PrincipalService;
use vault_proto::v1::{
    CreatePrincipalRequest, CreatePrincipalResponse, ListPrincipalsRequest, ListPrincipalsResponse,
    PrincipalInfo, RevokePrincipalRequest, RevokePrincipalResponse, WhoAmIRequest, WhoAmIResponse,
};

/// Shortest bearer-token life, in seconds.
const MIN_TTL_SECS: u64 = 60;

/// The principal service.
#[derive(Debug, Clone)]
pub struct PrincipalApi {
    shared: Arc<Shared>,
}

impl PrincipalApi {
    /// The service over `shared`.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

fn info(r: &CredentialRecord) -> PrincipalInfo {
    PrincipalInfo {
        id: r.id.clone(),
        name: r.name.clone(),
        role: r.role.clone(),
        created_at: r.created_at,
        expires_at: r.expires_at,
        revoked_at: r.revoked_at,
        created_by: r.created_by.clone(),
    }
}

#[tonic::async_trait]
impl PrincipalService for PrincipalApi {
    async fn create(
        &self,
        request: Request<CreatePrincipalRequest>,
    ) -> Result<Response<CreatePrincipalResponse>, Status> {
        let who = principal(&request)?;
        let mut ev = base_event(&request, Some(&who));
        ev.event_type = "principal_create".into();
        let r: Result<_, Error> = async {
            self.shared.require(&who, Action::ManagePrincipals)?;
            let req = request.into_inner();
            let mut v = Violations::default();
            v.check("name", check_name(&req.name));
            v.check("role", check_role(&req.role));
            let max = self.shared.max_token_ttl_secs;
            if !(MIN_TTL_SECS..=max).contains(&req.ttl_seconds) {
                v.add(
                    "ttl_seconds",
                    format!("must be {MIN_TTL_SECS} to {max} seconds"),
                );
            }
            v.finish()?;
            let auth = &self.shared.auth;
            let (record, token) = auth
                .credentials()
                .create(
                    &req.name,
                    &req.role,
                    req.ttl_seconds,
                    &who.name,
                    auth.now(),
                    Some(self.shared.audited(&ev)),
                )
                .await?;
            tracing::info!(by = %who.name, id = %record.id, name = %record.name, role = %record.role, "bearer token issued");
            Ok(Response::new(CreatePrincipalResponse {
                principal: Some(info(&record)),
                token: token.expose().to_owned(),
            }))
        }
        .await;
        Ok(self.shared.conclude_written(ev, r).await?)
    }

    async fn list(
        &self,
        request: Request<ListPrincipalsRequest>,
    ) -> Result<Response<ListPrincipalsResponse>, Status> {
        let who = principal(&request)?;
        let mut ev = base_event(&request, Some(&who));
        ev.event_type = "principal_list".into();
        let r: Result<_, Error> = async {
            self.shared.require(&who, Action::ManagePrincipals)?;
            Ok(Response::new(ListPrincipalsResponse {
                principals: self
                    .shared
                    .auth
                    .credentials()
                    .list()
                    .iter()
                    .map(|r| info(r))
                    .collect(),
            }))
        }
        .await;
        Ok(self.shared.conclude(ev, r, true).await?)
    }

    async fn revoke(
        &self,
        request: Request<RevokePrincipalRequest>,
    ) -> Result<Response<RevokePrincipalResponse>, Status> {
        let who = principal(&request)?;
        let mut ev = base_event(&request, Some(&who));
        ev.event_type = "principal_revoke".into();
        let r: Result<_, Error> = async {
            self.shared.require(&who, Action::ManagePrincipals)?;
            let req = request.into_inner();
            if req.id.is_empty() || req.id.len() > 64 {
                return Err(Error::invalid("id", "a credential id is required"));
            }
            let auth = &self.shared.auth;
            let record = auth
                .credentials()
                .revoke(&req.id, auth.now(), Some(self.shared.audited(&ev)))
                .await?;
            tracing::info!(by = %who.name, id = %record.id, name = %record.name, "bearer token revoked");
            Ok(Response::new(RevokePrincipalResponse {
                principal: Some(info(&record)),
            }))
        }
        .await;
        Ok(self.shared.conclude_written(ev, r).await?)
    }

    async fn who_am_i(
        &self,
        request: Request<WhoAmIRequest>,
    ) -> Result<Response<WhoAmIResponse>, Status> {
        let who = principal(&request)?;
        let mut ev = base_event(&request, Some(&who));
        ev.event_type = "request".into();
        let r: Result<_, Error> = async {
            Ok(Response::new(WhoAmIResponse {
                name: who.name.to_string(),
                role: who.role.to_string(),
                auth: who.method.name().to_owned(),
            }))
        }
        .await;
        Ok(self.shared.conclude(ev, r, true).await?)
    }
}
