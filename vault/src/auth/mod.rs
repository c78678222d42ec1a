//! Authentication: who is calling. Two ways in, one [`Principal`] out.
//!
//! - **Bearer token** (`authorization: Bearer vt1.…`), issued by the vault to
//!   a name in a role (see [`credentials`]).
//! - **mTLS client certificate**, verified by the TLS layer against the
//!   configured CA; the principal is the certificate's first URI SAN (e.g.
//!   `spiffe://travel.example/booking-service`) or else its subject CN, and
//!   the configuration maps it to a role.
//!
//! A request that carries an `authorization` header is judged by it alone
//! (an invalid token is refused even on a connection with a valid
//! certificate). Without one, the client certificate decides. Without
//! either: `UNAUTHENTICATED`.

pub mod credentials;

use crate::error::Error;
use crate::model::{AuthMethod, Clock, Principal};
use crate::throttle::{AuthSettings, AuthThrottle, PeerKey, Verdict};
use credentials::CredentialStore;
use std::collections::HashMap;
use std::sync::Arc;

/// The principal a DER certificate names: its first URI SAN, else its
/// subject's first CN.
pub fn certificate_principal(der: &[u8]) -> Option<String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name {
                return Some((*uri).to_owned());
            }
        }
    }
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
}

/// Turns a request's credentials into a [`Principal`].
pub struct Authenticator {
    credentials: CredentialStore,
    /// Certificate principal → role.
    mtls_roles: HashMap<String, Arc<str>>,
    /// Principals of recently seen client certificates (DER → principal),
    /// so a connection's requests do not parse its certificate each time.
    /// The TLS layer has verified every certificate before it gets here.
    cert_cache: std::sync::Mutex<lru::LruCache<Vec<u8>, Arc<Principal>>>,
    clock: Arc<dyn Clock>,
    /// Failed attempts, per peer and credential id.
    throttle: AuthThrottle,
}

/// Most client certificates whose principal is remembered.
const CERT_CACHE_ENTRIES: usize = 1024;

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("mtls_principals", &self.mtls_roles.len())
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// An authenticator over the issued `credentials` and the configured map
    /// of certificate principals to roles, throttling failures by `limits`.
    pub fn new(
        credentials: CredentialStore,
        mtls_roles: &HashMap<String, String>,
        clock: Arc<dyn Clock>,
        limits: AuthSettings,
    ) -> Self {
        Self {
            credentials,
            mtls_roles: mtls_roles
                .iter()
                .map(|(k, v)| (k.clone(), Arc::from(v.as_str())))
                .collect(),
            cert_cache: std::sync::Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(CERT_CACHE_ENTRIES)
                    .unwrap_or(std::num::NonZeroUsize::MIN),
            )),
            clock,
            throttle: AuthThrottle::new(limits),
        }
    }

    /// The issued bearer tokens.
    pub fn credentials(&self) -> &CredentialStore {
        &self.credentials
    }

    /// The time, as the vault sees it.
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// The principal behind `request`'s credentials, or why not. Failures
    /// are counted per peer and credential id ([`AuthThrottle`]): beyond
    /// the limits they are refused `RESOURCE_EXHAUSTED`, some before the
    /// secret is even checked.
    pub fn authenticate<T>(
        &self,
        request: &tonic::Request<T>,
    ) -> Result<Arc<Principal>, AuthFailure> {
        let peer = PeerKey::of(request.remote_addr());
        let refused =
            |credential_id: Option<&str>, reason: &'static str, who: Option<String>, none: bool| {
                let verdict = self.throttle.failed(peer, credential_id);
                AuthFailure::new(verdict, reason, credential_id, who, none)
            };
        if let Some(header) = request.metadata().get("authorization") {
            let Some(token) = header.to_str().ok().and_then(|h| {
                let (scheme, rest) = h.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            }) else {
                return Err(refused(None, "malformed authorization header", None, false));
            };
            let credential_id = credentials::credential_id(token);
            if let Some(verdict) = self.throttle.refuse_early(peer, credential_id) {
                return Err(AuthFailure::new(
                    verdict,
                    "credential id over its failure limit",
                    credential_id,
                    None,
                    false,
                ));
            }
            return self
                .credentials
                .verify(token, self.clock.now())
                .map_err(|reason| refused(credential_id, reason, None, false));
        }
        if let Some(certs) = request.peer_certs()
            && let Some(leaf) = certs.first()
        {
            if let Some(p) = self
                .cert_cache
                .lock()
                .ok()
                .and_then(|mut c| c.get(leaf.as_ref()).cloned())
            {
                return Ok(p);
            }
            let Some(name) = certificate_principal(leaf.as_ref()) else {
                return Err(refused(
                    None,
                    "client certificate names no principal",
                    None,
                    false,
                ));
            };
            let Some(role) = self.mtls_roles.get(&name) else {
                let shown: String = name.chars().take(128).collect();
                return Err(refused(
                    None,
                    "client certificate principal not mapped to a role",
                    Some(shown),
                    false,
                ));
            };
            let principal = Arc::new(Principal {
                name: Arc::from(name.as_str()),
                role: role.clone(),
                method: AuthMethod::Mtls,
                credential_id: None,
                data_capable: true,
            });
            if let Ok(mut c) = self.cert_cache.lock() {
                c.put(leaf.as_ref().to_vec(), principal.clone());
            }
            return Ok(principal);
        }
        Err(refused(None, "no credentials", None, true))
    }

    /// The counts of failed authentications.
    pub fn throttle(&self) -> &AuthThrottle {
        &self.throttle
    }
}

/// A refused authentication: what the caller is told, and what the log and
/// the audit trail may say (never a secret).
#[derive(Debug)]
pub struct AuthFailure {
    /// The answer: `UNAUTHENTICATED` ("no credentials" or "invalid
    /// credentials") or, over a limit, `RESOURCE_EXHAUSTED`.
    pub error: Error,
    /// Why, for the log: "unknown id", "wrong secret", "revoked", ...
    pub reason: &'static str,
    /// The credential id the token named, if well-formed (public).
    pub credential_id: Option<String>,
    /// The client certificate's principal, if it was not mapped.
    pub certificate: Option<String>,
    /// Whether the failure gets its own audit event and log line; if not,
    /// a summary event counts it.
    pub audit: bool,
}

/// What a caller over a failure limit is told.
pub const TOO_MANY_FAILURES: &str =
    "too many failed authentications from this address or for this credential: try again later";

impl AuthFailure {
    fn new(
        verdict: Verdict,
        reason: &'static str,
        credential_id: Option<&str>,
        certificate: Option<String>,
        no_credentials: bool,
    ) -> Self {
        let error = if verdict.exhausted {
            Error::ResourceExhausted(TOO_MANY_FAILURES)
        } else if no_credentials {
            Error::Unauthenticated("no credentials")
        } else {
            Error::Unauthenticated("invalid credentials")
        };
        Self {
            error,
            reason,
            credential_id: credential_id.map(str::to_owned),
            certificate,
            audit: verdict.audit,
        }
    }
}
