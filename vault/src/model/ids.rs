//! Validated identifiers made at the edge: the core never sees raw strings.

use super::calendar::{days_from_civil, valid_date};

/// Longest subject id, in bytes.
pub const MAX_SUBJECT_ID: usize = 128;

/// A subject id: 1 to 128 characters of `[A-Za-z0-9._:-]`.
///
/// `@` is not allowed, so that e-mail addresses (personal data) are not used
/// as ids: subject ids are stored and logged as they are.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SubjectId(String);

impl SubjectId {
    /// Parses a subject id, or says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        if text.is_empty() {
            return Err("subject_id is empty");
        }
        if text.len() > MAX_SUBJECT_ID {
            return Err("subject_id is longer than 128 characters");
        }
        if !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        {
            return Err("subject_id may contain only letters, digits and . _ : -");
        }
        Ok(Self(text.to_owned()))
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A purpose of processing: 1 to 64 characters of `[a-z0-9_]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Purpose(String);

impl Purpose {
    /// Parses a purpose, or says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        if text.is_empty()
            || text.len() > 64
            || !text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err("purpose must be 1 to 64 characters of a-z, 0-9 and _");
        }
        Ok(Self(text.to_owned()))
    }

    /// The purpose's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The end of a travel (a retention anchor): the end of a `YYYY-MM-DD` day,
/// UTC, as Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TravelEnd(pub i64);

impl TravelEnd {
    /// Parses `YYYY-MM-DD` (a real date, years 1900 to 2199); `None` if empty.
    pub fn parse(text: &str) -> Result<Option<Self>, &'static str> {
        if text.is_empty() {
            return Ok(None);
        }
        if !valid_date(text) {
            return Err("not a date (YYYY-MM-DD)");
        }
        let num = |r: std::ops::Range<usize>| text[r].parse::<i64>().unwrap_or(0);
        let days = days_from_civil(num(0..4), num(5..7), num(8..10));
        Ok(Some(Self((days + 1) * 86_400)))
    }
}

/// A privacy-policy version: up to 64 printable ASCII characters, or empty.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicyVersion(String);

impl PolicyVersion {
    /// Parses a policy version, or says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        if text.len() > 64 || !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("policy_version must be up to 64 printable ASCII characters");
        }
        Ok(Self(text.to_owned()))
    }

    /// The version's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_ids() {
        assert!(SubjectId::parse("cust-42:eu.1_a").is_ok());
        assert!(SubjectId::parse("").is_err());
        assert!(SubjectId::parse("ann@example.com").is_err());
        assert!(SubjectId::parse(&"a".repeat(129)).is_err());
        assert!(SubjectId::parse("a b").is_err());
    }

    #[test]
    fn travel_end_is_the_end_of_the_day() {
        assert_eq!(TravelEnd::parse("").unwrap(), None);
        assert_eq!(
            TravelEnd::parse("1970-01-01").unwrap(),
            Some(TravelEnd(86_400))
        );
        // 2026-11-22 starts at 1,795,305,600.
        assert_eq!(
            TravelEnd::parse("2026-11-22").unwrap(),
            Some(TravelEnd(1_795_305_600 + 86_400))
        );
        assert_eq!(
            TravelEnd::parse("2000-03-01").unwrap(),
            Some(TravelEnd(951_868_800 + 86_400))
        );
        for bad in ["2026-02-30", "26-11-22", "2026-11-22T00:00", "tomorrow"] {
            assert!(TravelEnd::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn purposes() {
        assert!(Purpose::parse("billing").is_ok());
        assert!(Purpose::parse("Billing").is_err());
        assert!(Purpose::parse("").is_err());
    }
}
