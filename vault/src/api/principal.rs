//! `vault.v1.PrincipalService`: bearer tokens, their grants, and "who am I".
//!
//! Separation of duties: who may ask for a role's token, and who may approve
//! it, is the Cedar policy's (`request_grant`, `approve_grant` on the role);
//! that a data role needs two principals is the vault's own rule, which no
//! policy can loosen: see [`PolicyEngine::data_role`](crate::policy::PolicyEngine::data_role).

use super::requests::{ValidApprove, ValidCreate, ValidReject, ValidRevoke};
use super::{Shared, base_event, principal};
use crate::auth::credentials::{CredentialRecord, Issue, VIA_DUAL_CONTROL, VIA_SINGLE};
use crate::error::Error;
use crate::model::Principal;
use crate::policy::{Action, GrantAsk};
use std::sync::Arc;
use tonic::{Request, Response, Status};
use vault_proto::v1::principal_service_server::PrincipalService;
use vault_proto::v1::{
    ApproveGrantRequest, ApproveGrantResponse, CreatePrincipalRequest, CreatePrincipalResponse,
    ListPrincipalsRequest, ListPrincipalsResponse, PrincipalInfo, RejectGrantRequest,
    RejectGrantResponse, RevokePrincipalRequest, RevokePrincipalResponse, WhoAmIRequest,
    WhoAmIResponse,
};

/// Most grants one requester may have waiting for approval at once.
pub const MAX_PENDING_PER_REQUESTER: usize = 64;

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

    /// Whether the policy allows `who` the grant action `action` on
    /// `grant`; logs a refusal.
    fn require_grant(
        &self,
        who: &Principal,
        action: Action,
        grant: GrantAsk<'_>,
    ) -> Result<(), Error> {
        if self.shared.policy.explain_grant(who, action, grant).allowed {
            Ok(())
        } else {
            tracing::info!(principal = %who.name, role = %who.role, action = action.name(), granted = grant.role, "grant denied");
            Err(Error::PermissionDenied)
        }
    }

    /// The pending-or-past grant `id`, and whether its role is a data role
    /// now. An id that names no grant answers NOT_FOUND to a principal the
    /// policy lets approve grants, and PERMISSION_DENIED to anyone else, so
    /// grant ids are no oracle.
    fn find_grant(
        &self,
        who: &Principal,
        id: &str,
    ) -> Result<(Arc<CredentialRecord>, bool), Error> {
        let Some(grant) = self.shared.auth.credentials().get(id).filter(|r| r.dual()) else {
            let any = GrantAsk {
                role: "",
                data_role: true,
                ttl_seconds: 0,
            };
            self.require_grant(who, Action::ApproveGrant, any)?;
            return Err(Error::NotFound("grant"));
        };
        let data = self.shared.policy.data_role(&grant.role, &grant.name).data;
        Ok((grant, data))
    }

    /// Whether the policy lets `who` approve (or reject) `grant`.
    fn require_approver(
        &self,
        who: &Principal,
        grant: &CredentialRecord,
        data: bool,
    ) -> Result<(), Error> {
        let ask = GrantAsk {
            role: &grant.role,
            data_role: data,
            ttl_seconds: grant.ttl_secs,
        };
        self.require_grant(who, Action::ApproveGrant, ask)
    }
}

fn info_at(r: &CredentialRecord, now: i64) -> PrincipalInfo {
    PrincipalInfo {
        id: r.id.clone(),
        name: r.name.clone(),
        role: r.role.clone(),
        created_at: r.created_at,
        expires_at: r.expires_at,
        revoked_at: r.revoked_at,
        created_by: r.created_by.clone(),
        state: r.state(now).to_owned(),
        granted_via: if r.granted_via.is_empty() {
            crate::auth::credentials::VIA_SINGLE.to_owned()
        } else {
            r.granted_via.clone()
        },
        approved_by: r.approved_by.clone(),
        approved_at: r.approved_at,
        approval_deadline: r.approval_deadline,
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
            let req = ValidCreate::parse(
                request.into_inner(),
                self.shared.max_token_ttl_secs,
                &self.shared.mtls_principals,
            )?;
            let data = self.shared.policy.data_role(&req.role, &req.name);
            let grant = GrantAsk {
                role: &req.role,
                data_role: data.data,
                ttl_seconds: req.ttl_seconds,
            };
            self.require_grant(&who, Action::RequestGrant, grant)?;
            if data.data && *who.name == *req.name {
                tracing::info!(principal = %who.name, granted = %req.role, "grant denied: a data role asked for oneself");
                return Err(Error::PermissionDenied);
            }
            let auth = &self.shared.auth;
            let credentials = auth.credentials();
            if data.data && credentials.pending_by(&who.name, auth.now()) >= MAX_PENDING_PER_REQUESTER {
                return Err(Error::ResourceExhausted(
                    "too many grants of this requester wait for approval",
                ));
            }
            let issue = Issue {
                name: &req.name,
                role: &req.role,
                ttl_secs: req.ttl_seconds,
                created_by: &who.name,
                via: if data.data { VIA_DUAL_CONTROL } else { VIA_SINGLE },
            };
            let (record, token) = credentials
                .issue(&issue, auth.now(), Some(self.shared.audited(&ev)))
                .await?;
            if data.data {
                tracing::info!(by = %who.name, id = %record.id, name = %record.name, role = %record.role, "grant requested; waits for a second principal");
            } else {
                tracing::info!(by = %who.name, id = %record.id, name = %record.name, role = %record.role, "bearer token issued");
            }
            Ok(Response::new(CreatePrincipalResponse {
                principal: Some(info_at(&record, auth.now())),
                token: token.expose().to_owned(),
                pending: data.data,
                approval_deadline: record.approval_deadline,
            }))
        }
        .await;
        Ok(self.shared.conclude_written(ev, r).await?)
    }

    async fn approve(
        &self,
        request: Request<ApproveGrantRequest>,
    ) -> Result<Response<ApproveGrantResponse>, Status> {
        let who = principal(&request)?;
        let mut ev = base_event(&request, Some(&who));
        ev.event_type = "principal_approve".into();
        ev.action = Action::ApproveGrant.name().into();
        let r: Result<_, Error> = async {
            let req = ValidApprove::parse(request.into_inner())?;
            let auth = &self.shared.auth;
            let now = auth.now();
            let (grant, data) = self.find_grant(&who, &req.id)?;
            self.require_approver(&who, &grant, data)?;
            if grant.name != req.name || grant.role != req.role {
                tracing::info!(principal = %who.name, id = %grant.id, "approval refused: the grant is for another name or role than the approver said");
                return Err(Error::FailedPrecondition(
                    "the grant is not for this name and role: ask the requester which grant it is",
                ));
            }
            if *who.name == *grant.created_by || *who.name == *grant.name {
                tracing::info!(principal = %who.name, id = %grant.id, "approval denied: the approver is the requester or the grantee");
                return Err(Error::PermissionDenied);
            }
            if !who.data_capable {
                tracing::info!(principal = %who.name, id = %grant.id, "approval denied: the approver's own role was granted by one principal");
                return Err(Error::PermissionDenied);
            }
            let (record, part) = auth
                .credentials()
                .approve(&req.id, &who.name, now, Some(self.shared.audited(&ev)))
                .await?;
            tracing::info!(by = %who.name, id = %record.id, name = %record.name, role = %record.role, requested_by = %record.created_by, "grant approved");
            Ok(Response::new(ApproveGrantResponse {
                principal: Some(info_at(&record, now)),
                token_part: part.expose().to_owned(),
            }))
        }
        .await;
        Ok(self.shared.conclude_written(ev, r).await?)
    }

    async fn reject(
        &self,
        request: Request<RejectGrantRequest>,
    ) -> Result<Response<RejectGrantResponse>, Status> {
        let who = principal(&request)?;
        let mut ev = base_event(&request, Some(&who));
        ev.event_type = "principal_reject".into();
        ev.action = Action::ApproveGrant.name().into();
        let r: Result<_, Error> = async {
            let req = ValidReject::parse(request.into_inner())?;
            let auth = &self.shared.auth;
            let now = auth.now();
            let (grant, data) = self.find_grant(&who, &req.id)?;
            // The requester may withdraw its own request; an approver may
            // reject any it could approve.
            if *grant.created_by == *who.name {
                ev.action = Action::RequestGrant.name().into();
            } else {
                self.require_approver(&who, &grant, data)?;
            }
            let record = auth
                .credentials()
                .reject(&req.id, &req.reason, now, Some(self.shared.audited(&ev)))
                .await?;
            tracing::info!(by = %who.name, id = %record.id, "grant rejected");
            Ok(Response::new(RejectGrantResponse {
                principal: Some(info_at(&record, now)),
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
            let now = self.shared.auth.now();
            Ok(Response::new(ListPrincipalsResponse {
                principals: self
                    .shared
                    .auth
                    .credentials()
                    .list()
                    .iter()
                    .map(|r| info_at(r, now))
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
            let req = ValidRevoke::parse(request.into_inner())?;
            let auth = &self.shared.auth;
            let record = auth
                .credentials()
                .revoke(&req.id, auth.now(), Some(self.shared.audited(&ev)))
                .await?;
            tracing::info!(by = %who.name, id = %record.id, name = %record.name, "bearer token revoked");
            Ok(Response::new(RevokePrincipalResponse {
                principal: Some(info_at(&record, auth.now())),
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
