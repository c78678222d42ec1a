//! `vault.v1.PolicyService`: reload (operators) and explain (operators,
//! auditors).

use super::requests::{ExplainAsk, ValidExplain};
use super::{Shared, base_event, principal};
use crate::error::Error;
use crate::model::{AuthMethod, Principal};
use crate::policy::explain::{explain_grant_response, explain_response};
use crate::policy::{Action, SubjectContext};
use std::sync::Arc;
use tonic::{Request, Response, Status};
use vault_proto::v1::policy_service_server::PolicyService;
use vault_proto::v1::{ExplainRequest, ExplainResponse, ReloadPolicyRequest, ReloadPolicyResponse};

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

/// Tells the other nodes of a shared store that this node reloaded its
/// policy, so that they reload theirs (each from its own `policy_dir`)
/// within a second. Nothing where one process owns the store.
pub async fn announce_reload(shared: &Shared) {
    let store = shared.engine.store();
    if !store.shared() {
        return;
    }
    let mut b = crate::store::Batch::new();
    let at = shared.engine.clock().now_micros();
    b.put(
        crate::store::keys::POLICY_RELOADED,
        at.to_be_bytes().to_vec(),
    );
    if let Err(e) = store.commit(b).await {
        tracing::error!(error = %e, "could not tell the other nodes of the policy reload: reload theirs (SIGHUP)");
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
            if result.is_ok() {
                announce_reload(&self.shared).await;
            }
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
            let schema = self.shared.engine.schema().clone();
            let ValidExplain { principal, ask } =
                ValidExplain::parse(request.into_inner(), &schema, |name| {
                    self.known_principal(name)
                })?;
            Ok(Response::new(match ask {
                ExplainAsk::Grant { role, ttl_seconds } => {
                    explain_grant_response(&self.shared.policy, &principal, &role, ttl_seconds)
                }
                ExplainAsk::Field {
                    field,
                    purpose,
                    consented,
                    restricted,
                    actions,
                } => {
                    let ctx = SubjectContext::new(
                        &schema,
                        consented.iter().map(String::as_str),
                        restricted,
                        "",
                    );
                    explain_response(
                        &self.shared.policy,
                        &principal,
                        &field,
                        &purpose,
                        &ctx,
                        &actions,
                    )
                }
            }))
        }
        .await;
        Ok(self.shared.conclude(ev, r, true).await?)
    }
}
