//! `vault.v1.PolicyService`: reload (operators) and explain (operators,
//! auditors).

use super::{Shared, Violations, at_most, at_most_items, base_event, principal};
use crate::auth::credentials::check_role;
use crate::auth::{AuthMethod, Principal};
use crate::error::Error;
use crate::policy::{Action, SubjectContext};
use std::sync::Arc;
use tonic::{Request, Response, Status};
use vault_proto::v1::policy_service_server::PolicyService;
use vault_proto::v1::{
    ExplainRequest, ExplainResponse, ExplainedDecision, ReloadPolicyRequest, ReloadPolicyResponse,
};

/// Longest principal name an explain asks about, in bytes.
pub const MAX_PRINCIPAL: usize = 128;
/// Longest field or purpose name an explain asks about, in bytes.
pub const MAX_WORD: usize = 64;
/// Most consented purposes an explain assumes.
pub const MAX_CONSENTED: usize = 64;
/// Most actions one explain asks about.
pub const MAX_ACTIONS: usize = 32;

/// The policy service.
#[derive(Debug, Clone)]
pub struct PolicyApi {
    shared: Arc<Shared>,
}

impl PolicyApi {
    /// The service over `shared`.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// The principal called `name` as the vault knows it: a configured
    /// certificate principal, else the newest valid bearer token of that name.
    fn known_principal(&self, name: &str) -> Option<Principal> {
        if let Some(role) = self.shared.mtls_principals.get(name) {
            return Some(Principal {
                name: Arc::from(name),
                role: Arc::from(role.as_str()),
                method: AuthMethod::Mtls,
                credential_id: None,
                data_capable: true,
            });
        }
        let auth = &self.shared.auth;
        auth.credentials()
            .newest_valid(name, auth.now())
            .map(|p| Principal::clone(&p))
    }
}

/// The answer to an explain of `principal`'s field `actions` (shared by the
/// RPC and `vaultctl policy explain --dir`).
pub fn explain_response(
    policy: &crate::policy::PolicyEngine,
    principal: &Principal,
    field: &crate::schema::FieldDef,
    purpose: &str,
    ctx: &SubjectContext,
    actions: &[Action],
) -> ExplainResponse {
    let (reveal, explained) = policy.explain_field(principal, field, purpose, ctx, actions);
    ExplainResponse {
        principal: principal.name.to_string(),
        role: principal.role.to_string(),
        disclosure: reveal.disclosure() as i32,
        grant: None,
        decisions: explained
            .into_iter()
            .map(|e| ExplainedDecision {
                action: e.action.name().to_owned(),
                allowed: e.allowed,
                policies: e.policies,
                errors: e.errors,
            })
            .collect(),
    }
}

/// The token life a grant is explained for when none is given: an hour.
pub const DEFAULT_EXPLAINED_TTL_SECS: u64 = 3600;

/// How the grant of `role` is decided for `principal`: whether it is a
/// data role (and why), and the request_grant and approve_grant decisions
/// (shared by the Explain RPC and `vaultctl policy explain --dir --grant`).
pub fn explain_grant_response(
    policy: &crate::policy::PolicyEngine,
    principal: &Principal,
    role: &str,
    ttl_seconds: u64,
) -> ExplainResponse {
    // The grantee's name is unknown here: a permit for one named principal
    // is not counted (it makes that name's grants data grants).
    let data = policy.data_role(role, "");
    let ask = crate::policy::GrantAsk {
        role,
        data_role: data.data,
        ttl_seconds,
    };
    let decision = |action| {
        let e = policy.explain_grant(principal, action, ask);
        ExplainedDecision {
            action: e.action.name().to_owned(),
            allowed: e.allowed,
            policies: e.policies,
            errors: e.errors,
        }
    };
    ExplainResponse {
        principal: principal.name.to_string(),
        role: principal.role.to_string(),
        disclosure: 0,
        decisions: Vec::new(),
        grant: Some(vault_proto::v1::GrantExplained {
            role: role.to_owned(),
            data_role: data.data,
            because: data.because,
            request: Some(decision(Action::RequestGrant)),
            approve: Some(decision(Action::ApproveGrant)),
        }),
    }
}

/// Reloads the policies, logging the outcome; shared by the RPC and SIGHUP.
pub fn reload(
    policy: &crate::policy::PolicyEngine,
    by: &str,
) -> Result<crate::policy::LoadSummary, crate::policy::PolicyError> {
    match policy.reload() {
        Ok(summary) => {
            tracing::info!(by, policies = summary.policies, "access policy reloaded");
            Ok(summary)
        }
        Err(e) => {
            tracing::error!(by, error = %e, "access policy reload failed; the running policy stays");
            Err(e)
        }
    }
}

#[tonic::async_trait]
impl PolicyService for PolicyApi {
    async fn reload(
        &self,
        request: Request<ReloadPolicyRequest>,
    ) -> Result<Response<ReloadPolicyResponse>, Status> {
        let who = principal(&request)?;
        let mut ev = base_event(&request, Some(&who));
        ev.event_type = "policy_reload".into();
        let r: Result<_, Error> = async {
            self.shared.require(&who, Action::ReloadPolicy)?;
            let policy = self.shared.policy.clone();
            let name = who.name.to_string();
            let result = tokio::task::spawn_blocking(move || reload(&policy, &name))
                .await
                .map_err(|e| Error::task("reload task", e))?;
            match result {
                Ok(summary) => Ok(Response::new(ReloadPolicyResponse {
                    policies: u32::try_from(summary.policies).unwrap_or(u32::MAX),
                    files: summary.files,
                })),
                Err(e) => Err(Error::InvalidArgument(
                    e.problems
                        .into_iter()
                        .map(|p| crate::error::Violation::new("policy", p))
                        .collect(),
                )),
            }
        }
        .await;
        Ok(self.shared.conclude(ev, r, true).await?)
    }

    async fn explain(
        &self,
        request: Request<ExplainRequest>,
    ) -> Result<Response<ExplainResponse>, Status> {
        let who = principal(&request)?;
        let mut ev = base_event(&request, Some(&who));
        ev.event_type = "policy_explain".into();
        let r: Result<_, Error> = async {
            self.shared.require(&who, Action::ExplainPolicy)?;
            let req = request.into_inner();
            let schema = self.shared.engine.schema().clone();
            let mut v = Violations::default();
            // Bounded before anything is looked up: names are at most 128
            // bytes, fields and purposes 64; the lists as long as any real one.
            let bounded = at_most(&mut v, "principal", &req.principal, MAX_PRINCIPAL)
                & at_most(&mut v, "field", &req.field, MAX_WORD)
                & at_most(&mut v, "purpose", &req.purpose, MAX_WORD)
                & at_most_items(&mut v, "consented", &req.consented, MAX_CONSENTED)
                & at_most_items(&mut v, "actions", &req.actions, MAX_ACTIONS);
            if !bounded {
                return Err(Error::InvalidArgument(v.0));
            }
            let subject = if !req.principal.is_empty() {
                let p = self.known_principal(&req.principal);
                if p.is_none() {
                    v.add(
                        "principal",
                        "no configured certificate principal or valid bearer token has this name",
                    );
                }
                p
            } else if !req.role.is_empty() {
                v.check("role", check_role(&req.role)).map(|()| Principal {
                    name: Arc::from("(any principal)"),
                    role: Arc::from(req.role.as_str()),
                    method: AuthMethod::Bearer,
                    credential_id: None,
                    data_capable: true,
                })
            } else {
                v.add("principal", "a principal or a role is required");
                None
            };
            if !req.grant_role.is_empty() {
                v.check("grant_role", check_role(&req.grant_role));
                v.finish()?;
                let Some(subject) = subject else {
                    return Err(Error::invalid(
                        "principal",
                        "a principal or a role is required",
                    ));
                };
                let ttl = match req.grant_ttl_seconds {
                    0 => DEFAULT_EXPLAINED_TTL_SECS,
                    t => t,
                };
                return Ok(Response::new(explain_grant_response(
                    &self.shared.policy,
                    &subject,
                    &req.grant_role,
                    ttl,
                )));
            }
            let field = schema.field(&req.field).cloned();
            if field.is_none() {
                v.add("field", "unknown field (not declared in the schema)");
            }
            if !req.purpose.is_empty() && schema.purpose(&req.purpose).is_none() {
                v.add("purpose", "unknown purpose (not declared in the schema)");
            }
            for (i, p) in req.consented.iter().enumerate() {
                if schema.purpose(p).is_none() {
                    v.add(
                        format!("consented[{i}]"),
                        "unknown purpose (not declared in the schema)",
                    );
                }
            }
            let mut actions = Vec::new();
            for (i, a) in req.actions.iter().enumerate() {
                match Action::parse(a).filter(|a| a.on_field()) {
                    Some(a) => actions.push(a),
                    None => v.add(format!("actions[{i}]"), "not a field action"),
                }
            }
            if actions.is_empty() {
                actions = Action::ON_FIELD.to_vec();
            }
            v.finish()?;
            let (Some(subject), Some(field)) = (subject, field) else {
                return Err(Error::state("validated input missing"));
            };
            let ctx = SubjectContext::new(
                &schema,
                req.consented.iter().map(String::as_str),
                req.restricted,
                "",
            );
            Ok(Response::new(explain_response(
                &self.shared.policy,
                &subject,
                &field,
                &req.purpose,
                &ctx,
                &actions,
            )))
        }
        .await;
        Ok(self.shared.conclude(ev, r, true).await?)
    }
}
