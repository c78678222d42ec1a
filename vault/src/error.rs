//! The vault's one error type and the one place that says how an error
//! answers a client (the gRPC code and the `Status`) and how it is written
//! in the audit trail ([`Error::audit_outcome`]).
//!
//! Every variant carries a message that is safe to show a client: never a
//! value, a key or a ciphertext. Detail meant for operators goes to the log at
//! the place the error is made.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Most field violations returned for one request (and named in the audit
/// event of a refused request).
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

/// How a refused or failed request is written in the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The event's outcome: `invalid`, `unauthenticated`, `denied`,
    /// `not_found`, `failed_precondition`, `resource_exhausted` or `error`.
    pub name: &'static str,
    /// The gRPC code the client was answered with.
    pub code: Code,
    /// What the trail may say of it: the fields of a bad request, the
    /// client's short message, or the kind of failure (never a value).
    pub detail: String,
}

impl Error {
    /// The gRPC code and the audit outcome of the error: the one
    /// classification, shared by the `Status` and the audit trail.
    fn class(&self) -> (Code, &'static str) {
        match self {
            Error::InvalidArgument(_) => (Code::InvalidArgument, "invalid"),
            Error::Unauthenticated(_) => (Code::Unauthenticated, "unauthenticated"),
            Error::PermissionDenied => (Code::PermissionDenied, "denied"),
            Error::NotFound(_) => (Code::NotFound, "not_found"),
            Error::Integrity | Error::AuditDamaged(_) => (Code::DataLoss, "error"),
            Error::Unavailable(_) => (Code::Unavailable, "error"),
            Error::FailedPrecondition(_) => (Code::FailedPrecondition, "failed_precondition"),
            Error::ResourceExhausted(_) => (Code::ResourceExhausted, "resource_exhausted"),
            Error::Internal(_) => (Code::Internal, "error"),
        }
    }

    /// The gRPC code the error answers with.
    pub fn code(&self) -> Code {
        self.class().0
    }

    /// How the request that failed with this error is written in the audit
    /// trail.
    pub fn audit_outcome(&self) -> Outcome {
        let (code, name) = self.class();
        let detail = match self {
            Error::InvalidArgument(v) => v
                .iter()
                .take(MAX_REPORTED_VIOLATIONS)
                .map(|v| v.field.as_str())
                .collect::<Vec<_>>()
                .join(","),
            Error::Unauthenticated(what)
            | Error::NotFound(what)
            | Error::FailedPrecondition(what)
            | Error::ResourceExhausted(what) => (*what).to_owned(),
            Error::PermissionDenied => String::new(),
            Error::Integrity => "integrity".into(),
            Error::Unavailable(_) => "unavailable".into(),
            Error::Internal(_) | Error::AuditDamaged(_) => "internal".into(),
        };
        Outcome { name, code, detail }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The audit trail's outcome of each kind of error, as the trail has
    /// always written it (queries and reports filter on these names).
    #[test]
    fn each_error_has_one_code_and_audit_outcome() {
        let cases = [
            (
                Error::InvalidArgument(vec![Violation::new("a", "x"), Violation::new("b[1]", "y")]),
                "invalid",
                Code::InvalidArgument,
                "a,b[1]",
            ),
            (
                Error::Unauthenticated("no credentials"),
                "unauthenticated",
                Code::Unauthenticated,
                "no credentials",
            ),
            (
                Error::PermissionDenied,
                "denied",
                Code::PermissionDenied,
                "",
            ),
            (
                Error::NotFound("grant"),
                "not_found",
                Code::NotFound,
                "grant",
            ),
            (Error::Integrity, "error", Code::DataLoss, "integrity"),
            (
                Error::FailedPrecondition("sealed"),
                "failed_precondition",
                Code::FailedPrecondition,
                "sealed",
            ),
            (
                Error::ResourceExhausted("busy"),
                "resource_exhausted",
                Code::ResourceExhausted,
                "busy",
            ),
            (
                Error::AuditDamaged("seg".into()),
                "error",
                Code::DataLoss,
                "internal",
            ),
        ];
        for (e, name, code, detail) in cases {
            let o = e.audit_outcome();
            assert_eq!(
                (o.name, o.code, o.detail.as_str()),
                (name, code, detail),
                "{e}"
            );
            assert_eq!(e.code(), code);
            assert_eq!(Status::from(e).code(), code);
        }
        let many = Error::InvalidArgument(
            (0..30)
                .map(|i| Violation::new(format!("f{i}"), "x"))
                .collect(),
        );
        assert_eq!(
            many.audit_outcome().detail.split(',').count(),
            MAX_REPORTED_VIOLATIONS
        );
    }
}
