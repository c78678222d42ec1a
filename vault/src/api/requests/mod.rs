//! The requests of the services, parsed at the edge into validated structs
//! (one file per service): each `parse` reports every violation at once
//! (the item's path and what is wrong, never the value) and otherwise gives
//! plain values, so a handler never meets raw protobuf strings or an input
//! that might be missing.
//!
//! A check gives a [`Checked`] value: the value, or a [`Reported`], which
//! only [`Violations::add`] makes. So a request whose items all checked out
//! is built with `?` on each inside [`Violations::finish`], and "valid, yet
//! a value is missing" cannot be written down.

mod audit;
mod policy;
mod principal;
mod subject;
mod token;

pub(crate) use audit::ValidQuery;
pub(crate) use policy::{ExplainAsk, ValidExplain};
pub(crate) use principal::{ValidApprove, ValidCreate, ValidReject, ValidRevoke};
pub(crate) use subject::{SubjectReason, ValidLegalHold, ValidLink, ValidSetConsent};
pub(crate) use token::{ValidDetokenize, ValidLookup, ValidTokenize, ValidUpdate};

use crate::error::{Error, Violation};
use crate::model::Purpose;
use crate::schema::Schema;

/// Proof that a violation was recorded for an item: made only by
/// [`Violations::add`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reported(());

/// A checked item of a request: its value, or the violation recorded for it.
pub(crate) type Checked<T> = Result<T, Reported>;

/// Collects the violations of one request, then fails with all of them.
#[derive(Debug, Default)]
pub(crate) struct Violations(Vec<Violation>);

impl Violations {
    /// Records a violation at `field`.
    pub(crate) fn add(
        &mut self,
        field: impl Into<String>,
        description: impl Into<String>,
    ) -> Reported {
        self.0.push(Violation::new(field, description));
        Reported(())
    }

    /// Records the error of `r` at `field`.
    pub(crate) fn check<T>(
        &mut self,
        field: impl Into<String>,
        r: Result<T, &'static str>,
    ) -> Checked<T> {
        r.map_err(|e| self.add(field, e))
    }

    /// Fails with every violation recorded, if any; else gives what `build`
    /// makes of the checked items (each taken with `?`: none can be missing,
    /// since a missing one was recorded).
    pub(crate) fn finish<T>(self, build: impl FnOnce() -> Checked<T>) -> Result<T, Error> {
        match build() {
            Ok(value) if self.0.is_empty() => Ok(value),
            _ => Err(Error::InvalidArgument(self.0)),
        }
    }
}

/// All of `checks` passed (each was run, and recorded its own violation).
pub(crate) fn all(checks: impl IntoIterator<Item = Checked<()>>) -> Checked<()> {
    checks.into_iter().fold(Ok(()), Checked::and)
}

/// A declared purpose: required, well-formed, and declared in the schema.
pub(crate) fn declared_purpose(
    v: &mut Violations,
    at: &str,
    schema: &Schema,
    text: &str,
) -> Checked<Purpose> {
    if text.is_empty() {
        return Err(v.add(at, "a purpose is required"));
    }
    let p = v.check(at, Purpose::parse(text))?;
    if schema.purpose(p.as_str()).is_none() {
        return Err(v.add(at, "unknown purpose (not declared in the schema)"));
    }
    Ok(p)
}

/// Checks that the free text `text` at `at` is at most `max` bytes
/// (a filter, a name to look up): longer ones could match nothing.
pub(crate) fn at_most(v: &mut Violations, at: &str, text: &str, max: usize) -> Checked<()> {
    if text.len() > max {
        Err(v.add(at, format!("longer than the limit of {max} bytes")))
    } else {
        Ok(())
    }
}

/// Checks that the list at `at` has at most `max` items.
pub(crate) fn at_most_items<T>(
    v: &mut Violations,
    at: &str,
    items: &[T],
    max: usize,
) -> Checked<()> {
    if items.len() > max {
        Err(v.add(at, format!("more than the limit of {max} items")))
    } else {
        Ok(())
    }
}

/// A reason or case id: 1 to 200 characters, no control characters. It goes
/// to the audit trail as it is, so callers are told it must hold no personal
/// data.
pub(crate) fn note(v: &mut Violations, at: &str, text: &str) -> Checked<String> {
    let n = text.chars().count();
    if text.trim().is_empty() || n > 200 {
        Err(v.add(at, "1 to 200 characters are required"))
    } else if text.chars().any(char::is_control) {
        Err(v.add(at, "contains control characters"))
    } else {
        Ok(text.trim().to_owned())
    }
}

/// The paths of the violations `r` failed with, in order.
#[cfg(test)]
fn paths<T>(r: Result<T, Error>) -> Vec<String> {
    match r {
        Ok(_) => panic!("the request was valid"),
        Err(Error::InvalidArgument(v)) => v.into_iter().map(|v| v.field).collect(),
        Err(other) => panic!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(e: Error) -> Vec<String> {
        paths::<()>(Err(e))
    }

    #[test]
    fn finish_builds_only_when_nothing_was_recorded() {
        let mut v = Violations::default();
        let a = v.check("a", Ok::<_, &str>(1));
        let b = v.check("b", Ok::<_, &str>(2));
        assert_eq!(v.finish(|| Ok(a? + b?)).ok(), Some(3));

        // Every violation, in order, even those of items the build never
        // reaches.
        let mut v = Violations::default();
        let a = v.check("a", Err::<i32, _>("bad"));
        let b = v.check("b", Ok::<_, &str>(2));
        v.add("c", "wrong with the whole");
        let r = v.finish(|| Ok(a? + b?));
        assert_eq!(fields(r.unwrap_err()), ["a", "c"]);

        // A violation that names no item's value still fails the request.
        let mut v = Violations::default();
        v.add("request", "too large");
        assert_eq!(fields(v.finish(|| Ok(())).unwrap_err()), ["request"]);
    }

    #[test]
    fn all_runs_every_check() {
        let mut v = Violations::default();
        let r = all([
            at_most(&mut v, "x", "long", 2),
            at_most(&mut v, "y", "ok", 2),
            at_most_items(&mut v, "z", &[1, 2, 3], 2),
        ]);
        assert!(r.is_err());
        assert_eq!(fields(v.finish(|| r).unwrap_err()), ["x", "z"]);
    }

    #[test]
    fn notes_are_trimmed_and_bounded() {
        let mut v = Violations::default();
        assert_eq!(
            note(&mut v, "reason", "  audit  ").ok().as_deref(),
            Some("audit")
        );
        assert!(note(&mut v, "reason", " ").is_err());
        assert!(note(&mut v, "reason", &"x".repeat(201)).is_err());
        assert!(note(&mut v, "reason", "a\nb").is_err());
        assert_eq!(fields(v.finish(|| Ok(())).unwrap_err()).len(), 3);
    }
}
