//! Where and how to connect: the address, TLS settings ([`TlsOptions`]) and
//! bearer token of a [`Target`], and the rule that a plaintext (`http://`)
//! address is never given TLS settings.

use crate::{ClientError, VaultClient};

/// TLS settings of a connection (PEM).
#[derive(Clone, Default)]
pub struct TlsOptions {
    /// The CA that signed the vault's certificate.
    pub ca_pem: Vec<u8>,
    /// The client certificate chain, for mTLS.
    pub client_cert_pem: Option<Vec<u8>>,
    /// The client certificate's key, for mTLS.
    pub client_key_pem: Option<Vec<u8>>,
    /// The name to check the vault's certificate against (default: the
    /// address's host).
    pub domain: Option<String>,
}

impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOptions")
            .field("client_cert", &self.client_cert_pem.is_some())
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

/// Where and how to connect: address, TLS, bearer token.
#[derive(Clone, Default)]
pub struct Target {
    /// `host:port` or a URI.
    pub addr: String,
    /// TLS settings; `None` is plaintext.
    pub tls: Option<TlsOptions>,
    /// The bearer token to send, if any.
    pub token: Option<zeroize::Zeroizing<String>>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("addr", &self.addr)
            .field("tls", &self.tls)
            .field("token", &self.token.as_ref().map(|_| "(set)"))
            .finish()
    }
}

impl Target {
    /// A new connection (its own channel) to the target.
    pub async fn connect(&self) -> Result<VaultClient, ClientError> {
        let client = VaultClient::connect_with(&self.addr, self.tls.as_ref()).await?;
        match &self.token {
            Some(t) => client.with_token(t),
            None => Ok(client),
        }
    }
}

/// Whether `addr` names a scheme other than `https` (`http://...`): such
/// an address is reached without TLS whatever TLS settings go with it, so
/// it must never be given any.
pub fn is_plaintext_addr(addr: &str) -> bool {
    addr.split_once("://")
        .is_some_and(|(scheme, _)| !scheme.eq_ignore_ascii_case("https"))
}

/// `http://` is added to an address without a scheme.
pub fn endpoint_uri(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    }
}
