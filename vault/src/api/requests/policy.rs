//! PolicyService requests: Explain.

use super::{Violations, all, at_most, at_most_items};
use crate::auth::credentials::check_role;
use crate::error::Error;
use crate::model::{AuthMethod, Principal};
use crate::policy::Action;
use crate::schema::{FieldDef, Schema};
use std::sync::Arc;
use vault_proto::v1::ExplainRequest;

/// Longest principal name an explain asks about, in bytes.
pub const MAX_PRINCIPAL: usize = 128;
/// Longest field or purpose name an explain asks about, in bytes.
pub const MAX_WORD: usize = 64;
/// Most consented purposes an explain assumes.
pub const MAX_CONSENTED: usize = 64;
/// Most actions one explain asks about.
pub const MAX_ACTIONS: usize = 32;

/// An Explain: whom it is about, and what.
#[derive(Debug)]
pub(crate) struct ValidExplain {
    pub principal: Principal,
    pub ask: ExplainAsk,
}

/// What an Explain asks about.
#[derive(Debug)]
pub(crate) enum ExplainAsk {
    /// How a grant of `role` for `ttl_seconds` would be decided.
    Grant { role: String, ttl_seconds: u64 },
    /// The decisions of `actions` on a declared field, for `purpose` (may
    /// be empty), in a subject context of `consented` (declared purposes)
    /// and `restricted`.
    Field {
        field: Arc<FieldDef>,
        purpose: String,
        consented: Vec<String>,
        restricted: bool,
        actions: Vec<Action>,
    },
}

impl ValidExplain {
    /// `req` checked against `schema`; `known` finds the principal a name
    /// stands for.
    pub(crate) fn parse(
        req: ExplainRequest,
        schema: &Schema,
        known: impl FnOnce(&str) -> Option<Principal>,
    ) -> Result<Self, Error> {
        // Bounded before anything is looked up: names are at most 128
        // bytes, fields and purposes 64; the lists as long as any real one.
        let mut v = Violations::default();
        let bounded = all([
            at_most(&mut v, "principal", &req.principal, MAX_PRINCIPAL),
            at_most(&mut v, "field", &req.field, MAX_WORD),
            at_most(&mut v, "purpose", &req.purpose, MAX_WORD),
            at_most_items(&mut v, "consented", &req.consented, MAX_CONSENTED),
            at_most_items(&mut v, "actions", &req.actions, MAX_ACTIONS),
        ]);
        v.finish(|| bounded)?;
        let mut v = Violations::default();
        let principal = if !req.principal.is_empty() {
            known(&req.principal).ok_or_else(|| {
                v.add(
                    "principal",
                    "no configured certificate principal or valid bearer token has this name",
                )
            })
        } else if !req.role.is_empty() {
            v.check("role", check_role(&req.role)).map(|()| Principal {
                name: Arc::from("(any principal)"),
                role: Arc::from(req.role.as_str()),
                method: AuthMethod::Bearer,
                credential_id: None,
                data_capable: true,
            })
        } else {
            Err(v.add("principal", "a principal or a role is required"))
        };
        if !req.grant_role.is_empty() {
            let role = v.check("grant_role", check_role(&req.grant_role));
            let ttl_seconds = match req.grant_ttl_seconds {
                0 => crate::policy::explain::DEFAULT_EXPLAINED_TTL_SECS,
                t => t,
            };
            return v.finish(|| {
                role?;
                Ok(Self {
                    principal: principal?,
                    ask: ExplainAsk::Grant {
                        role: req.grant_role,
                        ttl_seconds,
                    },
                })
            });
        }
        let field = schema
            .field(&req.field)
            .cloned()
            .ok_or_else(|| v.add("field", "unknown field (not declared in the schema)"));
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
                None => {
                    v.add(format!("actions[{i}]"), "not a field action");
                }
            }
        }
        if actions.is_empty() {
            actions = Action::ON_FIELD.to_vec();
        }
        v.finish(|| {
            Ok(Self {
                principal: principal?,
                ask: ExplainAsk::Field {
                    field: field?,
                    purpose: req.purpose,
                    consented: req.consented,
                    restricted: req.restricted,
                    actions,
                },
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::paths;
    use super::*;

    fn nobody(_: &str) -> Option<Principal> {
        None
    }

    #[test]
    fn bounds_are_checked_before_anything_is_looked_up() {
        let schema = Schema::default_schema(4096).unwrap();
        // Only the bounds are reported: the unknown field is not looked up.
        let req = ExplainRequest {
            principal: "p".repeat(MAX_PRINCIPAL + 1),
            field: "nope".into(),
            actions: vec![String::new(); MAX_ACTIONS + 1],
            ..Default::default()
        };
        assert_eq!(
            paths(ValidExplain::parse(req, &schema, nobody)),
            ["principal", "actions"]
        );
        let req = ExplainRequest {
            principal: "ghost".into(),
            field: "nope".into(),
            purpose: "nope".into(),
            consented: vec!["booking".into(), "nope".into()],
            actions: vec!["reveal_plain".into(), "seal".into()],
            ..Default::default()
        };
        assert_eq!(
            paths(ValidExplain::parse(req, &schema, nobody)),
            [
                "principal",
                "field",
                "purpose",
                "consented[1]",
                "actions[1]"
            ]
        );
    }

    #[test]
    fn a_role_stands_for_any_principal_and_a_grant_gets_a_default_life() {
        let schema = Schema::default_schema(4096).unwrap();
        let req = ExplainRequest {
            role: "support".into(),
            grant_role: "dpo".into(),
            ..Default::default()
        };
        let Ok(e) = ValidExplain::parse(req, &schema, nobody) else {
            panic!("invalid");
        };
        assert_eq!(&*e.principal.role, "support");
        assert!(matches!(
            e.ask,
            ExplainAsk::Grant { ref role, ttl_seconds } if role == "dpo"
                && ttl_seconds == crate::policy::explain::DEFAULT_EXPLAINED_TTL_SECS
        ));
        let req = ExplainRequest {
            role: "support".into(),
            field: "email".into(),
            ..Default::default()
        };
        let Ok(e) = ValidExplain::parse(req, &schema, nobody) else {
            panic!("invalid");
        };
        assert!(matches!(
            e.ask,
            ExplainAsk::Field { ref actions, .. } if actions.as_slice() == Action::ON_FIELD
        ));
    }
}
