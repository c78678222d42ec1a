//! The gRPC services: authenticate (an interceptor, before the message is
//! even decoded into a handler) → validate (`requests`: each request parsed
//! into a validated struct, every violation reported at once) → decide (the
//! Cedar policy) → engine → encode. Also `grpc.health.v1` and gRPC reflection (`v1` and
//! `v1alpha`), which need no credentials.

mod audit;
mod export;
pub mod frames;
mod policy;
mod principal;
mod requests;
mod subject;
mod system;
mod token;

pub use audit::{AuditApi, MAX_CONCURRENT_EXPORTS, MAX_CONCURRENT_READS};
pub use policy::{PolicyApi, announce_reload as announce_policy_reload, reload as reload_policy};
pub use principal::PrincipalApi;
pub use subject::SubjectApi;
pub use system::SystemApi;
pub use token::TokenApi;

use crate::audit::{AuditEvent, AuditLog};
use crate::auth::Authenticator;
use crate::engine::Engine;
use crate::error::Error;
use crate::model::Principal;
use crate::policy::{Action, PolicyEngine};
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
    /// Where every access is written down.
    pub audit: Arc<AuditLog>,
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
    /// Notified when an operator seals the vault.
    pub seal: Arc<tokio::sync::Notify>,
    /// Whether the vault was unsealed from shares (and so can be sealed).
    pub sealable: bool,
}

impl Shared {
    /// Takes what another node changed in the shared store
    /// ([`crate::store::Store::watch`]): the engine's caches, the
    /// credentials, the policy.
    pub fn on_changes(&self, changes: &crate::store::Changes) {
        use crate::store::{Changes, keys};
        self.engine.forget_changed(changes);
        let credentials = self.auth.credentials();
        match changes {
            Changes::Everything => credentials.refresh_all(),
            Changes::Keys(changed) => {
                for key in changed {
                    if let Some(id) = key
                        .strip_prefix(keys::CREDENTIAL_PREFIX)
                        .and_then(|s| std::str::from_utf8(s).ok())
                    {
                        credentials.refresh(id);
                    } else if key == keys::POLICY_RELOADED {
                        let _ = policy::reload(&self.policy, "another node");
                    }
                }
            }
        }
    }

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

/// The gRPC method of a request (`/vault.v1.TokenService/Detokenize`), put
/// on every request by [`RpcPathLayer`] for the audit trail.
#[derive(Debug, Clone)]
pub struct RpcPath(pub Arc<str>);

/// A tower layer that records each request's path as an [`RpcPath`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcPathLayer;

impl<S> tower::Layer<S> for RpcPathLayer {
    type Service = RpcPathService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RpcPathService(inner)
    }
}

/// See [`RpcPathLayer`].
#[derive(Debug, Clone)]
pub struct RpcPathService<S>(S);

impl<S, B> tower::Service<http::Request<B>> for RpcPathService<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let path = RpcPath(Arc::from(req.uri().path()));
        req.extensions_mut().insert(path);
        self.0.call(req)
    }
}

/// The caller's request id (`x-request-id`, 1 to 64 characters of
/// `[A-Za-z0-9._:-]`), or a new one (see [`generated_request_id`]).
fn request_id<T>(request: &Request<T>) -> String {
    if let Some(id) = request
        .metadata()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
        })
    {
        return id.to_owned();
    }
    generated_request_id()
}

/// A request id unique to this vault: a random prefix per process and a
/// counter (no system call per request).
fn generated_request_id() -> String {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let prefix = PREFIX.get_or_init(|| {
        crate::crypto::random_array::<6>()
            .map(|b| b.iter().map(|x| format!("{x:02x}")).collect())
            .unwrap_or_default()
    });
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{n:x}")
}

/// The audit event of `request` so far: who, from where, which RPC.
pub(crate) fn base_event<T>(request: &Request<T>, principal: Option<&Principal>) -> AuditEvent {
    AuditEvent {
        event_type: "request".into(),
        principal: principal.map(|p| p.name.to_string()).unwrap_or_default(),
        role: principal.map(|p| p.role.to_string()).unwrap_or_default(),
        auth: principal.map_or("none", |p| p.method.name()).into(),
        peer: request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_default(),
        request_id: request_id(request),
        rpc: request
            .extensions()
            .get::<RpcPath>()
            .map(|p| p.0.to_string())
            .unwrap_or_default(),
        ..Default::default()
    }
}

impl Shared {
    /// Writes the event of a finished request. A success is recorded and,
    /// for reads, made durable before the reply leaves (`durable`): if that
    /// fails the request fails `UNAVAILABLE` and discloses nothing. A
    /// failure is recorded without waiting (nothing was disclosed); if even
    /// that fails, the log says so and the original error stands.
    pub(crate) async fn conclude<R>(
        &self,
        mut ev: AuditEvent,
        r: Result<R, Error>,
        durable: bool,
    ) -> Result<R, Error> {
        match r {
            Ok(v) => {
                ev.outcome = "ok".into();
                if durable {
                    self.audit.record(vec![ev]).await?;
                } else {
                    self.audit.append(vec![ev])?;
                }
                Ok(v)
            }
            Err(e) => {
                let outcome = e.audit_outcome();
                ev.outcome = outcome.name.into();
                ev.status_code = outcome.code as i32;
                ev.detail = outcome.detail;
                if let Err(a) = self.audit.append(vec![ev]) {
                    tracing::error!(error = %a, "could not write the audit event of a failed request");
                }
                Err(e)
            }
        }
    }
}

impl Shared {
    /// Like [`Shared::conclude`] for writes whose success event was made
    /// durable before the data (see [`Shared::audited`]): only a failure is
    /// written here.
    pub(crate) async fn conclude_written<R>(
        &self,
        ev: AuditEvent,
        r: Result<R, Error>,
    ) -> Result<R, Error> {
        match r {
            Ok(v) => Ok(v),
            Err(e) => self.conclude(ev, Err(e), false).await,
        }
    }

    /// `ev` as the engine should write it with a write's data.
    pub(crate) fn audited<'a>(&'a self, ev: &AuditEvent) -> crate::error::Audited<'a> {
        let mut event = ev.clone();
        event.outcome = "ok".into();
        crate::error::Audited {
            journal: self.audit.as_ref(),
            event,
        }
    }
}

/// Runs the retention sweeper once and writes a `retention_sweep` event
/// with what it shredded (counts only), whether asked by a caller or by the
/// background task.
pub async fn run_sweep(shared: &Shared) -> Result<crate::engine::SweepStats, Error> {
    let started = std::time::Instant::now();
    let result = shared.engine.sweep().await;
    let detail = result.as_ref().map(|s| {
        format!(
            "subjects={} fields={} held={} ms={}",
            s.subjects,
            s.fields,
            s.held,
            started.elapsed().as_millis()
        )
    });
    record_outcome(shared, "retention_sweep", detail).await;
    result
}

/// Writes the system event `kind` of background work that ended with
/// `detail` (counts, never values) or an error; if the trail refuses it,
/// the log says so.
async fn record_outcome(shared: &Shared, kind: &str, detail: Result<String, &Error>) {
    let (outcome, detail) = match detail {
        Ok(d) => ("ok", d),
        Err(e) => ("error", e.to_string()),
    };
    let ev = crate::audit::system_event(kind, outcome, detail);
    if let Err(e) = shared.audit.record(vec![ev]).await {
        tracing::error!(error = %e, kind, "could not write the audit event of background work");
    }
}

/// Rewraps every DEK under the active KEK (after a rotation, or resuming
/// one at start) and writes a `kek_rewrap` event with what it did (counts
/// only). Nothing if a rewrap is already running.
pub async fn run_rewrap(shared: &Shared) -> Result<Option<crate::engine::RewrapStats>, Error> {
    let started = std::time::Instant::now();
    let version = shared.engine.keyring().active_kek_version();
    let result = shared.engine.rewrap_all().await;
    let detail = match &result {
        Ok(None) => return Ok(None),
        Ok(Some(s)) => Ok(format!(
            "kek_version={version} subjects={} deks={} ms={}",
            s.subjects,
            s.deks,
            started.elapsed().as_millis()
        )),
        Err(e) => Err(e),
    };
    record_outcome(shared, "kek_rewrap", detail).await;
    result
}

/// How long the rewrap's lease lasts, on a shared store: renewed every
/// [`REWRAP_CHECK`] while the rewrap is pending, so a node that dies during
/// one leaves it to another within this time and a check.
pub const REWRAP_LEASE: std::time::Duration = std::time::Duration::from_secs(15);

/// How often the nodes of a shared store check for a pending rewrap.
pub const REWRAP_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs [`run_rewrap`] in the background, logging how it ended.
///
/// On a shared store it runs on one node at a time: the one that takes the
/// rewrap's lease ([`REWRAP_LEASE`], kept by the check of `server::jobs`
/// every [`REWRAP_CHECK`] while the rewrap is pending).
pub fn spawn_rewrap(shared: Arc<Shared>) {
    tokio::spawn(async move {
        match shared.engine.store().lease("rewrap", REWRAP_LEASE).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!("another node runs the rewrap of data keys");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "could not take the rewrap's lease; it resumes at the next check");
                return;
            }
        }
        match run_rewrap(&shared).await {
            Ok(Some(s)) => tracing::info!(
                subjects = s.subjects,
                deks = s.deks,
                "data keys rewrapped under the active KEK"
            ),
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "rewrap failed; it resumes at the next start or rotation")
            }
        }
    });
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
/// the [`Principal`]; refuses the rest with `UNAUTHENTICATED` (or, over a
/// failure limit, `RESOURCE_EXHAUSTED`), writing an `auth_failure` event and
/// a log line for each failure within the audit bound and nothing for the
/// rest, which the throttle's summary events count (see [`crate::throttle`]).
#[derive(Debug, Clone)]
pub struct AuthInterceptor {
    /// Who is calling.
    pub auth: Arc<Authenticator>,
    /// Where refusals are written down.
    pub audit: Arc<AuditLog>,
}

impl tonic::service::Interceptor for AuthInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        match self.auth.authenticate(&request) {
            Ok(principal) => {
                request.extensions_mut().insert(principal);
                Ok(request)
            }
            Err(failure) if !failure.audit => Err(failure.error.into()),
            Err(failure) => {
                let mut ev = base_event(&request, None);
                tracing::info!(
                    peer = %ev.peer,
                    rpc = %ev.rpc,
                    reason = failure.reason,
                    credential = failure.credential_id.as_deref().unwrap_or(""),
                    certificate = failure.certificate.as_deref().unwrap_or(""),
                    "request refused"
                );
                ev.event_type = "auth_failure".into();
                let outcome = failure.error.audit_outcome();
                ev.outcome = outcome.name.into();
                ev.status_code = outcome.code as i32;
                ev.detail = match &failure.credential_id {
                    Some(id) => format!("{}; credential id {id}", outcome.detail),
                    None => outcome.detail,
                };
                if let Err(a) = self.audit.append(vec![ev]) {
                    tracing::error!(error = %a, "could not write the audit event of a refused request");
                }
                Err(failure.error.into())
            }
        }
    }
}

/// Writes the summary events of failed authentications of the windows that
/// have ended, and with `all` of the current one too (at shutdown).
pub fn write_throttle_summaries(shared: &Shared, all: bool) {
    let throttle = shared.auth.throttle();
    let events = if all {
        throttle.flush()
    } else {
        throttle.due()
    };
    if events.is_empty() {
        return;
    }
    tracing::warn!(
        summaries = events.len(),
        "failed authentications over the audit bound: summarized in the audit trail"
    );
    if let Err(e) = shared.audit.append(events) {
        tracing::error!(error = %e, "could not write the summary of failed authentications");
    }
}
