//! The vault's one error type and its only conversion to `tonic::Status`.
//!
//! Every variant carries a message that is safe to show a client: never a
//! value, a key or a ciphertext. Detail meant for operators goes to the log at
//! the place the error is made.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Most field violations returned for one request.
pub const MAX_REPORTED_VIOLATIONS: usize = 20;

/// One invalid item of a request: where it is and what is wrong with it.
/// Neither part ever contains the offending value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Path of the item in the request, e.g. `fields[2].value`.
    pub field: String,
    /// What is wrong, e.g. `not a valid e-mail address`.
    pub description: String,
}

impl Violation {
    /// A violation at `field` described by `description`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// Everything that can go wrong while serving a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request is malformed; each violation names an item.
    #[error("invalid request ({} violation(s))", .0.len())]
    InvalidArgument(Vec<Violation>),
    /// No credentials, or credentials that are malformed, unknown, expired
    /// or revoked. The client is told only which of "none" and "invalid".
    #[error("unauthenticated: {0}")]
    Unauthenticated(&'static str),
    /// The caller may not do this. Never says whether the data exists.
    #[error("permission denied")]
    PermissionDenied,
    /// The request names something that does not exist (said only where
    /// existence is not itself a secret).
    #[error("not found: {0}")]
    NotFound(&'static str),
    /// Stored data failed its integrity check: a wrong key, a tampered or a
    /// moved ciphertext all give this same error.
    #[error("stored data failed its integrity check")]
    Integrity,
    /// Storage could not read or write; the request did nothing.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The vault is not in a state to serve this request.
    #[error("failed precondition: {0}")]
    FailedPrecondition(&'static str),
    /// A limit of the vault is reached (e.g. pending CVVs); nothing was done.
    #[error("resource exhausted: {0}")]
    ResourceExhausted(&'static str),
    /// A bug or an impossible state; the detail is logged, not returned.
    #[error("internal error: {0}")]
    Internal(String),
    /// The audit trail is damaged where no interrupted write can explain
    /// it: the vault does not start, and an operator decides. The message
    /// names the segment file, the byte offset and the event expected there
    /// (never an event's content).
    #[error("audit trail damaged: {0}")]
    AuditDamaged(String),
}

impl Error {
    /// The gRPC code the error answers with (the one mapping, shared by the
    /// conversion to `Status` and by the audit trail).
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::PermissionDenied => Code::PermissionDenied,
            Error::NotFound(_) => Code::NotFound,
            Error::Integrity | Error::AuditDamaged(_) => Code::DataLoss,
            Error::Unavailable(_) => Code::Unavailable,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::ResourceExhausted(_) => Code::ResourceExhausted,
            Error::Internal(_) => Code::Internal,
        }
    }

    /// An `InvalidArgument` with a single violation.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![Violation::new(field, description)])
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        let code = err.code();
        match err {
            Error::InvalidArgument(mut violations) => {
                // The details travel in a trailer, which HTTP/2 limits to
                // 16 KiB: report the first few and count the rest.
                let total = violations.len();
                if total > MAX_REPORTED_VIOLATIONS {
                    violations.truncate(MAX_REPORTED_VIOLATIONS);
                    violations.push(Violation::new(
                        "request",
                        format!("and {} more violation(s)", total - MAX_REPORTED_VIOLATIONS),
                    ));
                }
                let mut details = ErrorDetails::new();
                for v in &violations {
                    details.add_bad_request_violation(v.field.clone(), v.description.clone());
                }
                let summary = violations
                    .iter()
                    .take(3)
                    .map(|v| format!("{}: {}", v.field, v.description))
                    .collect::<Vec<_>>()
                    .join("; ");
                let more = total.saturating_sub(3);
                let msg = if more > 0 {
                    format!("invalid request: {summary}; and {more} more")
                } else {
                    format!("invalid request: {summary}")
                };
                Status::with_error_details(code, msg, details)
            }
            Error::Unauthenticated(what) => Status::new(code, what),
            Error::PermissionDenied => Status::new(
                code,
                "permission denied: the access policy does not allow this request",
            ),
            Error::NotFound(what) => Status::new(code, format!("{what} not found")),
            Error::Integrity => Status::new(code, "stored data failed its integrity check"),
            Error::AuditDamaged(detail) => {
                tracing::error!(%detail, "audit trail damaged");
                Status::new(code, "the audit trail is damaged")
            }
            Error::Unavailable(detail) => {
                tracing::error!(%detail, "storage unavailable");
                Status::new(code, "storage unavailable: the request did nothing")
            }
            Error::FailedPrecondition(what) | Error::ResourceExhausted(what) => {
                Status::new(code, what)
            }
            Error::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                Status::new(code, "internal error")
            }
        }
    }
}

/// Shorthand for results of the vault's core.
pub type Result<T, E = Error> = std::result::Result<T, E>;
