//! An authenticated caller in a role: what authentication hands to policy,
//! the engine and the audit trail.

use std::sync::Arc;

/// How a principal proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    /// A client certificate.
    Mtls,
    /// A bearer token issued by the vault.
    Bearer,
}

impl AuthMethod {
    /// `mtls` or `bearer`.
    pub fn name(self) -> &'static str {
        match self {
            AuthMethod::Mtls => "mtls",
            AuthMethod::Bearer => "bearer",
        }
    }
}

/// An authenticated caller in a role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The certificate's URI SAN or CN, or the bearer token's name.
    pub name: Arc<str>,
    /// The role the policies know it by.
    pub role: Arc<str>,
    /// How it authenticated.
    pub method: AuthMethod,
    /// The bearer token's public id (never its secret).
    pub credential_id: Option<Arc<str>>,
    /// Whether the credential may act on personal data at all: a client
    /// certificate of the deployment's mapping, or a bearer token granted
    /// under dual control or by the root key's holder. A token issued by one
    /// principal never may, whatever the policy says, now or after a reload
    /// (so that a role issued alone cannot be turned into a data role).
    pub data_capable: bool,
}
