//! Payment cards (PCI DSS 3): what the vault knows of a card number beyond
//! "digits that pass the Luhn check": its brand, how long its CVV is, when
//! an expiry date is in the past, and the BIN-and-last-four view.
//!
//! Card tokens are in [`crate::tokens`]; the CVV, which never touches disk,
//! is held by [`cvv::CvvVault`].

pub mod cvv;

use zeroize::Zeroizing;

/// The card brands the vault names (enough for display; an issuer outside
/// these ranges is `other`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Brand {
    /// 4.
    Visa,
    /// 51–55, 2221–2720.
    Mastercard,
    /// 34, 37.
    Amex,
    /// 6011, 644–649, 65.
    Discover,
    /// 3528–3589.
    Jcb,
    /// 300–305, 3095, 36, 38–39.
    Diners,
    /// 62, 81.
    UnionPay,
    /// Any other issuer identification number.
    Other,
}

impl Brand {
    /// The brand's name as the API shows it.
    pub fn name(self) -> &'static str {
        match self {
            Brand::Visa => "visa",
            Brand::Mastercard => "mastercard",
            Brand::Amex => "amex",
            Brand::Discover => "discover",
            Brand::Jcb => "jcb",
            Brand::Diners => "diners",
            Brand::UnionPay => "unionpay",
            Brand::Other => "other",
        }
    }

    /// The brand of a card number (canonical: digits only), from its leading
    /// digits (the BIN ranges the networks publish, to the precision display
    /// needs).
    pub fn of(digits: &str) -> Self {
        let prefix = |n: usize| -> u32 {
            digits
                .get(..n)
                .and_then(|p| p.parse().ok())
                .unwrap_or(u32::MAX)
        };
        let (p1, p2, p3, p4) = (prefix(1), prefix(2), prefix(3), prefix(4));
        if p1 == 4 {
            Brand::Visa
        } else if (51..=55).contains(&p2) || (2221..=2720).contains(&p4) {
            Brand::Mastercard
        } else if p2 == 34 || p2 == 37 {
            Brand::Amex
        } else if p4 == 6011 || (644..=649).contains(&p3) || p2 == 65 {
            Brand::Discover
        } else if (3528..=3589).contains(&p4) {
            Brand::Jcb
        } else if (300..=305).contains(&p3) || p4 == 3095 || p2 == 36 || p2 == 38 || p2 == 39 {
            Brand::Diners
        } else if p2 == 62 || p2 == 81 {
            Brand::UnionPay
        } else {
            Brand::Other
        }
    }

    /// How many digits the brand's card verification value has: four on the
    /// front of an American Express card, three on the back of the others.
    pub fn cvv_len(self) -> usize {
        if self == Brand::Amex { 4 } else { 3 }
    }
}

/// Whether a string of ASCII digits passes the Luhn check.
pub fn luhn_valid(digits: &str) -> bool {
    let mut sum = 0u32;
    for (i, c) in digits.bytes().rev().enumerate() {
        if !c.is_ascii_digit() {
            return false;
        }
        let mut d = u32::from(c - b'0');
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    !digits.is_empty() && sum.is_multiple_of(10)
}

/// Checks a CVV (3 or 4 ASCII digits) against the card it comes with; the
/// error never contains the value.
pub fn check_cvv(cvv: &str, card_digits: &str) -> Result<(), &'static str> {
    let want = Brand::of(card_digits).cvv_len();
    if cvv.len() != want || !cvv.bytes().all(|b| b.is_ascii_digit()) {
        return Err(if want == 4 {
            "not a CVV for this card (4 digits for American Express)"
        } else {
            "not a CVV for this card (3 digits)"
        });
    }
    Ok(())
}

/// How many leading digits the BIN-and-last-four view shows: six, but never
/// so many that fewer than six digits stay hidden (PCI DSS 3.4.1 allows at
/// most BIN and last four; a 12-digit number shows two and four).
pub fn bin_len(total: usize) -> usize {
    total.saturating_sub(10).min(6)
}

/// `411111******1111`: the BIN (see [`bin_len`]) and last four of a card
/// number, the rest `*`. A value that is not all digits shows nothing.
pub fn bin_last4(digits: &str) -> Zeroizing<String> {
    let n = digits.len();
    if n < 12 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Zeroizing::new("****".to_owned());
    }
    let head = bin_len(n);
    let mut out = Zeroizing::new(String::with_capacity(n));
    for (i, c) in digits.chars().enumerate() {
        out.push(if i < head || i >= n - 4 { c } else { '*' });
    }
    out
}

/// Whether the expiry `MM/YY` (canonical) is before the month of `now`
/// (Unix seconds, UTC). A card is good through the last day of its month.
pub fn expired(mm_yy: &str, now: i64) -> bool {
    let (Some(month), Some(year)) = (
        mm_yy.get(0..2).and_then(|m| m.parse::<i64>().ok()),
        mm_yy.get(3..5).and_then(|y| y.parse::<i64>().ok()),
    ) else {
        return true;
    };
    let (now_year, now_month) = year_month(now);
    (2000 + year, month) < (now_year, now_month)
}

/// The UTC year and month (1–12) of a Unix time in seconds.
pub fn year_month(unix_secs: i64) -> (i64, i64) {
    let (year, month, _) = crate::model::calendar::civil_date(unix_secs);
    (year, month)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn() {
        assert!(luhn_valid("4111111111111111"));
        assert!(luhn_valid("79927398713"));
        assert!(!luhn_valid("79927398710"));
        assert!(!luhn_valid(""));
    }

    #[test]
    fn brands_from_the_bin() {
        for (number, brand) in [
            ("4111111111111111", Brand::Visa),
            ("5555555555554444", Brand::Mastercard),
            ("2223003122003222", Brand::Mastercard),
            ("378282246310005", Brand::Amex),
            ("6011111111111117", Brand::Discover),
            ("6445644564456445", Brand::Discover),
            ("3530111333300000", Brand::Jcb),
            ("30569309025904", Brand::Diners),
            ("36227206271667", Brand::Diners),
            ("6200000000000005", Brand::UnionPay),
            ("9999999999999995", Brand::Other),
        ] {
            assert_eq!(Brand::of(number), brand, "{number}");
        }
        assert_eq!(Brand::Amex.cvv_len(), 4);
        assert_eq!(Brand::Visa.cvv_len(), 3);
    }

    #[test]
    fn cvv_length_follows_the_brand() {
        assert!(check_cvv("123", "4111111111111111").is_ok());
        assert!(check_cvv("1234", "4111111111111111").is_err());
        assert!(check_cvv("1234", "378282246310005").is_ok());
        assert!(check_cvv("123", "378282246310005").is_err());
        assert!(check_cvv("12a", "4111111111111111").is_err());
        assert!(check_cvv("", "4111111111111111").is_err());
    }

    #[test]
    fn bin_and_last_four_hide_at_least_six_digits() {
        assert_eq!(bin_last4("4111111111111111").as_str(), "411111******1111");
        assert_eq!(bin_last4("378282246310005").as_str(), "37828******0005");
        assert_eq!(bin_last4("411111111119").as_str(), "41******1119");
        assert_eq!(
            bin_last4("4111111111111111113").as_str(),
            "411111*********1113"
        );
        assert_eq!(bin_last4("12/29").as_str(), "****");
        for n in 12..=19 {
            let shown = bin_last4(&"4".repeat(n))
                .chars()
                .filter(|c| *c != '*')
                .count();
            assert!(n - shown >= 6, "{n} digits, {shown} shown");
        }
    }

    #[test]
    fn expiry_is_good_through_its_month() {
        // 2026-11-22T00:00:00Z
        let now = 1_795_305_600;
        assert_eq!(year_month(now), (2026, 11));
        assert!(!expired("11/26", now));
        assert!(!expired("12/26", now));
        assert!(!expired("01/27", now));
        assert!(expired("10/26", now));
        assert!(expired("12/25", now));
        assert!(expired("bad", now));
        assert_eq!(year_month(0), (1970, 1));
        assert_eq!(year_month(951_782_400), (2000, 2)); // 2000-02-29
        assert_eq!(year_month(951_868_800), (2000, 3)); // 2000-03-01
        assert_eq!(year_month(1_704_067_199), (2023, 12)); // 2023-12-31T23:59:59
        assert_eq!(year_month(-1), (1969, 12));
    }
}
