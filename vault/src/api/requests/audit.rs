//! AuditService requests: Query.

use super::{Violations, all, at_most};
use crate::error::Error;
use vault_proto::v1::QueryRequest;

/// Longest principal or subject filter of a query, in bytes (names and
/// subject ids are at most 128).
pub const MAX_NAME_FILTER: usize = 128;

/// Longest role, field, action, outcome or event type filter, in bytes
/// (all at most 64).
pub const MAX_WORD_FILTER: usize = 64;

/// A Query whose every filter is bounded: one longer than anything the
/// trail holds could match nothing.
#[derive(Debug)]
pub(crate) struct ValidQuery(pub QueryRequest);

impl ValidQuery {
    /// The text filters of `q`: name, value and longest value.
    pub(crate) fn filters(q: &QueryRequest) -> [(&'static str, &str, usize); 7] {
        [
            ("principal", &q.principal, MAX_NAME_FILTER),
            ("role", &q.role, MAX_WORD_FILTER),
            ("subject_id", &q.subject_id, MAX_NAME_FILTER),
            ("field", &q.field, MAX_WORD_FILTER),
            ("action", &q.action, MAX_WORD_FILTER),
            ("outcome", &q.outcome, MAX_WORD_FILTER),
            ("event_type", &q.event_type, MAX_WORD_FILTER),
        ]
    }

    pub(crate) fn parse(q: QueryRequest) -> Result<Self, Error> {
        let mut v = Violations::default();
        let bounded = all(Self::filters(&q).map(|(at, text, max)| at_most(&mut v, at, text, max)));
        v.finish(|| {
            bounded?;
            Ok(Self(q))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::paths;
    use super::*;

    #[test]
    fn every_filter_is_bounded() {
        let q = QueryRequest {
            principal: "p".repeat(MAX_NAME_FILTER),
            role: "r".repeat(MAX_WORD_FILTER + 1),
            event_type: "e".repeat(MAX_WORD_FILTER + 1),
            ..Default::default()
        };
        assert_eq!(paths(ValidQuery::parse(q)), ["role", "event_type"]);
        assert!(ValidQuery::parse(QueryRequest::default()).is_ok());
    }
}
