//! UTC calendar dates of Unix times and back (proleptic Gregorian), without
//! a date crate.

/// Days from 1970-01-01 to the proleptic Gregorian date `y-m-d`.
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
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

/// Whether `v` is a real `YYYY-MM-DD` date in the years 1900 to 2199.
pub fn valid_date(v: &str) -> bool {
    let b = v.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let (Ok(y), Ok(m), Ok(d)) = (
        v[0..4].parse::<u32>(),
        v[5..7].parse::<u32>(),
        v[8..10].parse::<u32>(),
    ) else {
        return false;
    };
    if !b
        .iter()
        .enumerate()
        .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
        || !(1900..=2199).contains(&y)
    {
        return false;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&d)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
