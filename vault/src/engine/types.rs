//! Validated identifiers made at the edge: the core never sees raw strings.

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
        if !crate::schema::Validator::Date
            .normalize(text, 10)
            .is_ok_and(|d| *d == text)
        {
            return Err("not a date (YYYY-MM-DD)");
        }
        let num = |r: std::ops::Range<usize>| text[r].parse::<i64>().unwrap_or(0);
        let days = days_from_civil(num(0..4), num(5..7), num(8..10));
        Ok(Some(Self((days + 1) * 86_400)))
    }
}

/// Days from 1970-01-01 to the proleptic Gregorian date `y-m-d`.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    // Years counted from March, in 400-year eras (the inverse of
    // `cards::year_month`).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let year_of_era = y.rem_euclid(400);
    let shifted_month = (m + 9) % 12; // March = 0
    let day_of_year = (153 * shifted_month + 2) / 5 + d - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The UTC calendar date `(year, month, day)` of a Unix time (the inverse
/// of the civil-to-days count above).
pub fn civil_date(unix_secs: i64) -> (i64, i64, i64) {
    // Days since 1970-01-01, then the proleptic Gregorian calendar counted
    // in 400-year eras from 0000-03-01 (so that February is the last month
    // of a year and leap days need no special case).
    let days = unix_secs.div_euclid(86_400) + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153; // 0 = March
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A Unix time as RFC 3339 UTC, to the second: `2026-11-30T08:35:26Z`.
pub fn utc_time(unix_secs: i64) -> String {
    let (y, m, d) = civil_date(unix_secs);
    let s = unix_secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
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
    fn utc_times() {
        assert_eq!(utc_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_time(1_795_305_600 + 3_723), "2026-11-22T01:02:03Z");
        assert_eq!(utc_time(951_868_800 - 1), "2000-02-29T23:59:59Z");
        for day in [0, 59, 60, 365, 10_957, 11_016, 20_000, 47_482] {
            let (y, m, d) = civil_date(day * 86_400);
            assert_eq!(days_from_civil(y, m, d), day);
        }
    }

    #[test]
    fn purposes() {
        assert!(Purpose::parse("billing").is_ok());
        assert!(Purpose::parse("Billing").is_err());
        assert!(Purpose::parse("").is_err());
    }
}
