//! The vault's one error type: what went wrong, its typed source, and the
//! one place that says how it answers a client (the gRPC code and the
//! `Status`) and how it is written in the audit trail ([`Error::audit_outcome`]).
//!
//! Every variant carries a message that is safe to show a client: never a
//! value, a key or a ciphertext. Detail meant for operators goes to the log
//! (the Display of a source, which names no value either).

use crate::crypto::CryptoError;
use crate::crypto::keyring::KeyringError;
use crate::store::StoreError;
use tonic::{Code, Status};

/// A change's audit event and the journal it goes to, with the vault's
/// error (see [`crate::model::journal`]).
pub type Audited<'a> = crate::model::journal::Audited<'a, Error>;
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
    /// Storage (the store or the audit trail) could not read or write; the
    /// request did nothing. (Boxed, like [`Error::Internal`]: an error stays
    /// as small as a `Vec`, and failures are rare.)
    #[error("storage unavailable: {0}")]
    Unavailable(#[source] Box<Unavailable>),
    /// The vault is not in a state to serve this request.
    #[error("failed precondition: {0}")]
    FailedPrecondition(&'static str),
    /// A limit of the vault is reached (e.g. pending CVVs); nothing was done.
    #[error("resource exhausted: {0}")]
    ResourceExhausted(&'static str),
    /// Another node changed the same data first; nothing was done, and the
    /// request may be sent again.
    #[error("aborted: {0}")]
    Aborted(&'static str),
    /// A bug or an impossible state; the detail is logged, not returned.
    #[error("internal error: {0}")]
    Internal(#[source] Box<Internal>),
    /// The audit trail is damaged where no interrupted write can explain
    /// it: the vault does not start, and an operator decides. The message
    /// names the segment file, the byte offset and the event expected there
    /// (never an event's content).
    #[error("audit trail damaged: {0}")]
    AuditDamaged(String),
}

/// Why storage could not serve a request (an [`Error::Unavailable`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Unavailable {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file of the audit trail could not be read or written while
    /// `doing` this.
    #[error("audit trail: {doing}: {}", .source.kind())]
    AuditIo {
        /// What the trail was doing, e.g. `reading a segment`.
        doing: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The audit trail is closing and takes no more events.
    #[error("audit trail closed")]
    AuditClosed,
    /// Too many events wait for the disk: the trail refuses more.
    #[error("audit trail: too many events waiting for the disk")]
    AuditBacklog,
    /// The request's event was not durable within the configured time.
    #[error("audit event not durable within {millis} ms")]
    NotDurable {
        /// The configured time, in milliseconds.
        millis: u128,
    },
}

/// What broke inside the vault (an [`Error::Internal`]): the client hears
/// only "internal error", the log hears this.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Internal {
    /// A blocking task panicked or was cancelled.
    #[error("{task}: {source}")]
    Task {
        /// The task, e.g. `sweep scan`.
        task: &'static str,
        /// Why it did not finish.
        #[source]
        source: tokio::task::JoinError,
    },
    /// A stored record does not decode.
    #[error("undecodable {record} record: {source}")]
    Decode {
        /// The record's kind, e.g. `subject`.
        record: &'static str,
        /// What is wrong with it.
        #[source]
        source: prost::DecodeError,
    },
    /// A cipher failed other than by a failed integrity check (which is
    /// [`Error::Integrity`]).
    #[error(transparent)]
    Crypto(CryptoError),
    /// The random generator failed.
    #[error("randomness: {0}")]
    Randomness(#[source] CryptoError),
    /// A key-encrypting-key operation failed.
    #[error("{operation}: {source}")]
    Keyring {
        /// The operation, e.g. `KEK rotation`.
        operation: &'static str,
        /// Why.
        #[source]
        source: KeyringError,
    },
    /// A document could not be encoded.
    #[error("{document}: {source}")]
    Json {
        /// The document, e.g. `export document`.
        document: &'static str,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A state that must not happen (a poisoned lock, a damaged journal
    /// entry, a record edited outside the vault), described without values.
    #[error("{0}")]
    State(String),
}

impl From<Unavailable> for Error {
    fn from(e: Unavailable) -> Self {
        Error::Unavailable(Box::new(e))
    }
}

impl From<Internal> for Error {
    fn from(e: Internal) -> Self {
        Error::Internal(Box::new(e))
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => Error::Aborted(CONFLICT),
            e => Unavailable::Store(e).into(),
        }
    }
}

/// What a request that lost a race with another node is told.
pub const CONFLICT: &str =
    "another node changed this data at the same time; nothing was done, send the request again";

impl From<CryptoError> for Error {
    /// A failed decryption is an integrity failure (whatever its cause: a
    /// wrong key, a tampered or a moved ciphertext); anything else a cipher
    /// reports is internal.
    fn from(e: CryptoError) -> Self {
        match e {
            CryptoError::DecryptionFailed => Error::Integrity,
            other => Internal::Crypto(other).into(),
        }
    }
}

/// How a refused or failed request is written in the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The event's outcome: `invalid`, `unauthenticated`, `denied`,
    /// `not_found`, `failed_precondition`, `resource_exhausted`, `aborted`
    /// or `error`.
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
            Error::Aborted(_) => (Code::Aborted, "aborted"),
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
            | Error::ResourceExhausted(what)
            | Error::Aborted(what) => (*what).to_owned(),
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

    /// The blocking `task` did not finish (it panicked or was cancelled).
    pub fn task(task: &'static str, source: tokio::task::JoinError) -> Self {
        Internal::Task { task, source }.into()
    }

    /// A stored `record` does not decode.
    pub fn decode(record: &'static str, source: prost::DecodeError) -> Self {
        Internal::Decode { record, source }.into()
    }

    /// The key-encrypting-key `operation` failed.
    pub fn keyring(operation: &'static str, source: KeyringError) -> Self {
        Internal::Keyring { operation, source }.into()
    }

    /// The `document` could not be encoded.
    pub fn json(document: &'static str, source: serde_json::Error) -> Self {
        Internal::Json { document, source }.into()
    }

    /// A state that must not happen, described without values.
    pub fn state(what: impl Into<String>) -> Self {
        Internal::State(what.into()).into()
    }

    /// A file of the audit trail failed while `doing` something.
    pub fn audit_io(doing: &'static str, source: std::io::Error) -> Self {
        Unavailable::AuditIo { doing, source }.into()
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
            Error::FailedPrecondition(what)
            | Error::ResourceExhausted(what)
            | Error::Aborted(what) => Status::new(code, what),
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
            (
                StoreError::Closed.into(),
                "error",
                Code::Unavailable,
                "unavailable",
            ),
            (
                Error::state("lock poisoned"),
                "error",
                Code::Internal,
                "internal",
            ),
            (
                CryptoError::DecryptionFailed.into(),
                "error",
                Code::DataLoss,
                "integrity",
            ),
            (
                CryptoError::EncryptionFailed.into(),
                "error",
                Code::Internal,
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

    /// The sources are kept typed, and the operator's text (the log, the
    /// events of background work) reads as it always has.
    #[test]
    fn typed_sources_keep_their_text() {
        use std::error::Error as _;
        let io = Error::audit_io(
            "reading a segment",
            std::io::Error::from(std::io::ErrorKind::NotFound),
        );
        assert_eq!(
            io.to_string(),
            "storage unavailable: audit trail: reading a segment: entity not found"
        );
        assert!(io.source().and_then(|s| s.source()).is_some());
        let store: Error = StoreError::Backend("disk full".into()).into();
        assert_eq!(
            store.to_string(),
            "storage unavailable: storage backend: disk full"
        );
        assert!(
            matches!(&store, Error::Unavailable(u) if matches!(**u, Unavailable::Store(StoreError::Backend(_))))
        );
        // As small as before the sources were kept.
        assert!(size_of::<Error>() <= 32);
        let late: Error = Unavailable::NotDurable { millis: 5000 }.into();
        assert_eq!(
            late.to_string(),
            "storage unavailable: audit event not durable within 5000 ms"
        );
        let decode = Error::decode(
            "subject",
            <vault_proto::v1::AuditEvent as prost::Message>::decode(&[0xff][..]).unwrap_err(),
        );
        assert!(
            decode
                .to_string()
                .starts_with("internal error: undecodable subject record: ")
        );
        assert_eq!(
            Error::from(Internal::Randomness(CryptoError::Random)).to_string(),
            "internal error: randomness: random generator unavailable"
        );
        // The client hears none of it.
        assert_eq!(Status::from(decode).message(), "internal error");
        assert_eq!(
            Status::from(store).message(),
            "storage unavailable: the request did nothing"
        );
    }
}
