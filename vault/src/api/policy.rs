//! `vault.v1.PolicyService`: reload (operators) and explain (operators,
//! auditors).

use super::{Shared, Violations, base_event, principal};
use crate::auth::credentials::check_role;
use crate::auth::{AuthMethod, Principal};
use crate::error::Error;
use crate::policy::{Action, Reveal, SubjectContext};
use std::sync::Arc;
use tonic::{Request, Response, Status};
use vault_proto::v1::policy_service_server::PolicyService;
use vault_proto::v1::{
    Disclosure, ExplainRequest, ExplainResponse, ExplainedDecision, ReloadPolicyRequest,
    ReloadPolicyResponse,
};

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
            });
        }
        let now = self.shared.auth.now();
        self.shared
            .auth
            .credentials()
            .list()
            .into_iter()
            .rev()
            .find(|r| r.name == name && r.revoked_at == 0 && r.expires_at > now)
            .map(|r| Principal {
                name: Arc::from(r.name.as_str()),
                role: Arc::from(r.role.as_str()),
                method: AuthMethod::Bearer,
                credential_id: Some(Arc::from(r.id.as_str())),
            })
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
                .map_err(|e| Error::Internal(format!("reload task: {e}")))?;
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
                })
            } else {
                v.add("principal", "a principal or a role is required");
                None
            };
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
                actions = vec![
                    Action::Tokenize,
                    Action::RevealPlain,
                    Action::RevealMasked,
                    Action::Lookup,
                    Action::Update,
                ];
            }
            v.finish()?;
            let (Some(subject), Some(field)) = (subject, field) else {
                return Err(Error::Internal("validated input missing".into()));
            };
            let ctx = SubjectContext::new(
                &schema,
                req.consented.iter().map(String::as_str),
                req.restricted,
                "",
            );
            let policy = &self.shared.policy;
            let decisions = actions
                .iter()
                .map(|&a| {
                    let purpose = if a == Action::Tokenize {
                        ""
                    } else {
                        req.purpose.as_str()
                    };
                    let e = policy.explain(&subject, a, Some((&field, purpose, &ctx)));
                    ExplainedDecision {
                        action: a.name().to_owned(),
                        allowed: e.allowed,
                        policies: e.policies,
                        errors: e.errors,
                    }
                })
                .collect();
            let disclosure = match policy.reveal(&subject, &field, &req.purpose, &ctx) {
                Reveal::Plain => Disclosure::Plain,
                Reveal::Masked => Disclosure::Masked,
                Reveal::Denied => Disclosure::Denied,
            };
            Ok(Response::new(ExplainResponse {
                principal: subject.name.to_string(),
                role: subject.role.to_string(),
                disclosure: disclosure as i32,
                decisions,
            }))
        }
        .await;
        Ok(self.shared.conclude(ev, r, true).await?)
    }
}
