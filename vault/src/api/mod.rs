//! The gRPC services: authenticate (an interceptor, before the message is
//! even decoded into a handler) → validate → decide (the Cedar policy) →
//! engine → encode. Also `grpc.health.v1` and gRPC reflection (`v1` and
//! `v1alpha`), which need no credentials.

mod policy;
mod principal;
mod subject;
mod system;
mod token;

pub use policy::{PolicyApi, reload as reload_policy};
pub use principal::PrincipalApi;
pub use subject::SubjectApi;
pub use system::SystemApi;
pub use token::TokenApi;

use crate::auth::{Authenticator, Principal};
use crate::engine::Engine;
use crate::engine::types::Purpose;
use crate::error::{Error, Violation};
use crate::policy::{Action, PolicyEngine};
use crate::schema::Schema;
use std::sync::Arc;
use std::time::Instant;
use tonic::{Request, Status};

/// State shared by the services.
#[derive(Debug)]
pub struct Shared {
    /// The core.
    pub engine: Arc<Engine>,
    /// Who is calling.
    pub auth: Arc<Authenticator>,
    /// What they may do.
    pub policy: Arc<PolicyEngine>,
    /// Request limits.
    pub limits: crate::config::Limits,
    /// Longest bearer-token life, in seconds.
    pub max_token_ttl_secs: u64,
    /// Certificate principal → role, for explaining decisions.
    pub mtls_principals: std::collections::HashMap<String, String>,
    /// When serving started.
    pub started: Instant,
}

impl Shared {
    /// Fails with `PERMISSION_DENIED` unless `principal` may do `action`.
    pub(crate) fn require(&self, principal: &Principal, action: Action) -> Result<(), Error> {
        if self.policy.allows(principal, action) {
            Ok(())
        } else {
            tracing::info!(principal = %principal.name, role = %principal.role, action = action.name(), "denied");
            Err(Error::PermissionDenied)
        }
    }
}

/// The principal the interceptor put on `request`.
pub(crate) fn principal<T>(request: &Request<T>) -> Result<Arc<Principal>, Error> {
    request
        .extensions()
        .get::<Arc<Principal>>()
        .cloned()
        .ok_or(Error::Unauthenticated("no credentials"))
}

/// Authenticates every request of the vault's own services and attaches
/// the [`Principal`]; refuses the rest with `UNAUTHENTICATED`.
#[derive(Debug, Clone)]
pub struct AuthInterceptor(pub Arc<Authenticator>);

impl tonic::service::Interceptor for AuthInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let principal = self.0.authenticate(&request)?;
        request.extensions_mut().insert(principal);
        Ok(request)
    }
}

/// A declared purpose: required, well-formed, and declared in the schema.
pub(crate) fn declared_purpose(
    v: &mut Violations,
    at: &str,
    schema: &Schema,
    text: &str,
) -> Option<Purpose> {
    if text.is_empty() {
        v.add(at, "a purpose is required");
        return None;
    }
    let p = v.check(at, Purpose::parse(text))?;
    if schema.purpose(p.as_str()).is_none() {
        v.add(at, "unknown purpose (not declared in the schema)");
        return None;
    }
    Some(p)
}

/// Collects the violations of one request, then fails with all of them.
#[derive(Debug, Default)]
pub(crate) struct Violations(Vec<Violation>);

impl Violations {
    pub(crate) fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(Violation::new(field, description));
    }

    /// Records the error of `r` at `field`, returning its value if any.
    pub(crate) fn check<T>(
        &mut self,
        field: impl Into<String>,
        r: Result<T, &'static str>,
    ) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.add(field, e);
                None
            }
        }
    }

    pub(crate) fn finish(self) -> Result<(), Error> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidArgument(self.0))
        }
    }
}
