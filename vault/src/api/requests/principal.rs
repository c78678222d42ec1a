//! PrincipalService requests: Create, Approve, Reject, Revoke.

use super::{Checked, Violations, note};
use crate::auth::credentials::{check_name, check_role};
use crate::error::Error;
use std::collections::HashMap;
use vault_proto::v1::{
    ApproveGrantRequest, CreatePrincipalRequest, RejectGrantRequest, RevokePrincipalRequest,
};

/// Longest credential or grant id accepted, in bytes (ids are 16).
pub const MAX_ID: usize = 64;

/// Shortest bearer-token life, in seconds.
pub const MIN_TTL_SECS: u64 = 60;

/// The id of a grant, checked.
fn grant_id(v: &mut Violations, id: String) -> Checked<String> {
    if id.is_empty() || id.len() > MAX_ID {
        Err(v.add("id", "a grant id (1 to 64 characters) is required"))
    } else {
        Ok(id)
    }
}

/// A CreatePrincipal: a bearer token (or a grant to approve) for `name`
/// with `role`, living `ttl_seconds`.
#[derive(Debug)]
pub(crate) struct ValidCreate {
    pub name: String,
    pub role: String,
    pub ttl_seconds: u64,
}

impl ValidCreate {
    /// `req` checked: a token lives at most `max_ttl` seconds, and no token
    /// takes the name of one of `mtls_principals`.
    pub(crate) fn parse(
        req: CreatePrincipalRequest,
        max_ttl: u64,
        mtls_principals: &HashMap<String, String>,
    ) -> Result<Self, Error> {
        let mut v = Violations::default();
        let name = v.check("name", check_name(&req.name));
        let role = v.check("role", check_role(&req.role));
        if !(MIN_TTL_SECS..=max_ttl).contains(&req.ttl_seconds) {
            v.add(
                "ttl_seconds",
                format!("must be {MIN_TTL_SECS} to {max_ttl} seconds"),
            );
        }
        if mtls_principals.contains_key(&req.name) {
            // One name, one principal: a token must not pass for (or
            // stand in the way of) a client certificate's principal.
            v.add(
                "name",
                "is a client certificate's principal (mtls_principals)",
            );
        }
        v.finish(|| {
            name?;
            role?;
            Ok(Self {
                name: req.name,
                role: req.role,
                ttl_seconds: req.ttl_seconds,
            })
        })
    }
}

/// An ApproveGrant: the grant's id, and the name and role the approver
/// believes it is for.
#[derive(Debug)]
pub(crate) struct ValidApprove {
    pub id: String,
    pub name: String,
    pub role: String,
}

impl ValidApprove {
    pub(crate) fn parse(req: ApproveGrantRequest) -> Result<Self, Error> {
        let mut v = Violations::default();
        let id = grant_id(&mut v, req.id);
        let name = v.check("name", check_name(&req.name));
        let role = v.check("role", check_role(&req.role));
        v.finish(|| {
            name?;
            role?;
            Ok(Self {
                id: id?,
                name: req.name,
                role: req.role,
            })
        })
    }
}

/// A RejectGrant: the grant's id and why.
#[derive(Debug)]
pub(crate) struct ValidReject {
    pub id: String,
    pub reason: String,
}

impl ValidReject {
    pub(crate) fn parse(req: RejectGrantRequest) -> Result<Self, Error> {
        let mut v = Violations::default();
        let id = grant_id(&mut v, req.id);
        let reason = note(&mut v, "reason", &req.reason);
        v.finish(|| {
            Ok(Self {
                id: id?,
                reason: reason?,
            })
        })
    }
}

/// A RevokePrincipal: the credential's id.
#[derive(Debug)]
pub(crate) struct ValidRevoke {
    pub id: String,
}

impl ValidRevoke {
    pub(crate) fn parse(req: RevokePrincipalRequest) -> Result<Self, Error> {
        let mut v = Violations::default();
        let id = if req.id.is_empty() || req.id.len() > MAX_ID {
            Err(v.add("id", "a credential id (1 to 64 characters) is required"))
        } else {
            Ok(req.id)
        };
        v.finish(|| Ok(Self { id: id? }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::paths;
    use super::*;

    #[test]
    fn create_approve_reject_revoke() {
        let mtls = HashMap::from([("gateway".to_owned(), "service".to_owned())]);
        let create = |name: &str, role: &str, ttl_seconds| CreatePrincipalRequest {
            name: name.into(),
            role: role.into(),
            ttl_seconds,
        };
        assert_eq!(
            paths(ValidCreate::parse(create("a b", "Role", 10), 3600, &mtls)),
            ["name", "role", "ttl_seconds"]
        );
        assert_eq!(
            paths(ValidCreate::parse(
                create("gateway", "support", 60),
                3600,
                &mtls
            )),
            ["name"]
        );
        assert!(ValidCreate::parse(create("ann", "support", 3600), 3600, &mtls).is_ok());
        let approve = ApproveGrantRequest {
            id: "x".repeat(MAX_ID + 1),
            name: "ann".into(),
            role: String::new(),
        };
        assert_eq!(paths(ValidApprove::parse(approve)), ["id", "role"]);
        let reject = RejectGrantRequest {
            id: String::new(),
            reason: "\u{7}".into(),
        };
        assert_eq!(paths(ValidReject::parse(reject)), ["id", "reason"]);
        let revoke = RevokePrincipalRequest { id: String::new() };
        assert_eq!(paths(ValidRevoke::parse(revoke)), ["id"]);
    }
}
