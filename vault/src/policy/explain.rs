//! Explanations of decisions as the wire states them (`ExplainResponse`):
//! pure functions over the policy engine, shared by the Explain RPC and
//! `vaultctl policy explain --dir` (which links this layer, never the API).

use super::{Action, GrantAsk, PolicyEngine, Principal, SubjectContext};
use crate::schema::FieldDef;
use vault_proto::v1::{ExplainResponse, ExplainedDecision, GrantExplained};

/// The token life a grant is explained for when none is given: an hour.
pub const DEFAULT_EXPLAINED_TTL_SECS: u64 = 3600;

/// The answer to an explain of `principal`'s field `actions` (shared by the
/// RPC and `vaultctl policy explain --dir`).
pub fn explain_response(
    policy: &PolicyEngine,
    principal: &Principal,
    field: &FieldDef,
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

/// How the grant of `role` is decided for `principal`: whether it is a
/// data role (and why), and the request_grant and approve_grant decisions
/// (shared by the Explain RPC and `vaultctl policy explain --dir --grant`).
pub fn explain_grant_response(
    policy: &PolicyEngine,
    principal: &Principal,
    role: &str,
    ttl_seconds: u64,
) -> ExplainResponse {
    // The grantee's name is unknown here: a permit for one named principal
    // is not counted (it makes that name's grants data grants).
    let data = policy.data_role(role, "");
    let ask = GrantAsk {
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
        grant: Some(GrantExplained {
            role: role.to_owned(),
            data_role: data.data,
            because: data.because,
            request: Some(decision(Action::RequestGrant)),
            approve: Some(decision(Action::ApproveGrant)),
        }),
    }
}
