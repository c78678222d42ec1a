//! Typed client for the vault's gRPC API (`vault.v1`), used by `vaultctl`,
//! the tests, and any Rust service that talks to the vault.
//!
//! ```no_run
//! # async fn demo() -> Result<(), vault_client::ClientError> {
//! let mut vault = vault_client::VaultClient::connect("http://127.0.0.1:50051").await?;
//! let tokens = vault.tokenize("cust-42", &[("email", "ann@example.com")], &["booking"], "2026-01").await?;
//! let shown = vault.detokenize(&[tokens[0].token.clone()], "customer_support").await?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub mod bench;
pub mod cli;

pub use vault_proto::v1 as proto;

use proto::system_service_client::SystemServiceClient;
use proto::token_service_client::TokenServiceClient;
use proto::{
    DetokenizeRequest, Disclosed, FieldToken, FieldValue, LookupRequest, StatusRequest,
    StatusResponse, TokenizeRequest, TokenizeResponse, UpdateRequest,
};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
use tonic_types::StatusExt;

/// Largest message the client accepts or sends (above the vault's default
/// 1 MiB request limit, so that the vault itself judges requests).
const MAX_MESSAGE: usize = 8 << 20;

/// A failed call: the gRPC code, the server's message, and any
/// `google.rpc.BadRequest` field violations.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ClientError {
    /// The gRPC status code.
    pub code: tonic::Code,
    /// The server's (or transport's) message.
    pub message: String,
    /// `(field, description)` of each violation, for `INVALID_ARGUMENT`.
    pub violations: Vec<(String, String)>,
}

impl From<tonic::Status> for ClientError {
    fn from(s: tonic::Status) -> Self {
        let violations = s
            .get_details_bad_request()
            .map(|br| {
                br.field_violations
                    .into_iter()
                    .map(|v| (v.field, v.description))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            code: s.code(),
            message: s.message().to_owned(),
            violations,
        }
    }
}

impl From<tonic::transport::Error> for ClientError {
    fn from(e: tonic::transport::Error) -> Self {
        let mut message = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            message.push_str(": ");
            message.push_str(&s.to_string());
            src = s.source();
        }
        Self {
            code: tonic::Code::Unavailable,
            message,
            violations: Vec::new(),
        }
    }
}

/// A connection to one vault. Cheap to clone; clones share the connection.
#[derive(Debug, Clone)]
pub struct VaultClient {
    tokens: TokenServiceClient<Channel>,
    system: SystemServiceClient<Channel>,
    health: HealthClient<Channel>,
}

/// `http://` is added to an address without a scheme.
pub fn endpoint_uri(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    }
}

impl VaultClient {
    /// Connects to the vault at `addr` (`host:port` or `http://host:port`).
    pub async fn connect(addr: &str) -> Result<Self, ClientError> {
        let channel = Endpoint::from_shared(endpoint_uri(addr))
            .map_err(ClientError::from)?
            .tcp_nodelay(true)
            .connect()
            .await?;
        Ok(Self::from_channel(channel))
    }

    /// A client over an existing channel.
    pub fn from_channel(channel: Channel) -> Self {
        Self {
            tokens: TokenServiceClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            system: SystemServiceClient::new(channel.clone()),
            health: HealthClient::new(channel),
        }
    }

    /// Stores `fields` (name, value) of `subject_id`; one token per field, in order.
    pub async fn tokenize(
        &mut self,
        subject_id: &str,
        fields: &[(&str, &str)],
        purposes: &[&str],
        policy_version: &str,
    ) -> Result<Vec<FieldToken>, ClientError> {
        let req = TokenizeRequest {
            subject_id: subject_id.to_owned(),
            fields: fields
                .iter()
                .map(|(f, v)| FieldValue {
                    field: (*f).to_owned(),
                    value: (*v).to_owned(),
                })
                .collect(),
            purposes: purposes.iter().map(|p| (*p).to_owned()).collect(),
            policy_version: policy_version.to_owned(),
        };
        Ok(self.tokenize_request(req).await?.tokens)
    }

    /// Sends a raw `TokenizeRequest`.
    pub async fn tokenize_request(
        &mut self,
        req: TokenizeRequest,
    ) -> Result<TokenizeResponse, ClientError> {
        Ok(self.tokens.tokenize(req).await?.into_inner())
    }

    /// Reveals `tokens` for `purpose`; one result per token, in order.
    pub async fn detokenize<S: AsRef<str>>(
        &mut self,
        tokens: &[S],
        purpose: &str,
    ) -> Result<Vec<Disclosed>, ClientError> {
        let req = DetokenizeRequest {
            tokens: tokens.iter().map(|t| t.as_ref().to_owned()).collect(),
            purpose: purpose.to_owned(),
        };
        Ok(self.tokens.detokenize(req).await?.into_inner().values)
    }

    /// The tokens holding exactly `value` in `field`.
    pub async fn lookup(
        &mut self,
        field: &str,
        value: &str,
        purpose: &str,
    ) -> Result<Vec<String>, ClientError> {
        let req = LookupRequest {
            field: field.to_owned(),
            value: value.to_owned(),
            purpose: purpose.to_owned(),
        };
        Ok(self.tokens.lookup(req).await?.into_inner().tokens)
    }

    /// Corrects the value behind `token`; returns the new value version.
    pub async fn update(
        &mut self,
        token: &str,
        value: &str,
        purpose: &str,
    ) -> Result<u32, ClientError> {
        let req = UpdateRequest {
            token: token.to_owned(),
            value: value.to_owned(),
            purpose: purpose.to_owned(),
        };
        Ok(self.tokens.update(req).await?.into_inner().value_version)
    }

    /// The vault's status.
    pub async fn status(&mut self) -> Result<StatusResponse, ClientError> {
        Ok(self.system.status(StatusRequest {}).await?.into_inner())
    }

    /// `grpc.health.v1` Check of `service` ("" for the whole server).
    pub async fn health(&mut self, service: &str) -> Result<ServingStatus, ClientError> {
        let r = self
            .health
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await?
            .into_inner();
        Ok(ServingStatus::try_from(r.status).unwrap_or(ServingStatus::Unknown))
    }
}
