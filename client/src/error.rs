//! [`ClientError`]: what a failed call says (gRPC code, message, field
//! violations), whether the vault or the connection refused it.

use tonic_types::StatusExt;

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
