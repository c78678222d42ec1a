//! Validators: each checks a value and returns its canonical form.
//!
//! Error descriptions are static strings so they can never carry the value.

use zeroize::Zeroizing;

/// A value validator declared per field in `fields.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validator {
    /// A person's name: letters, spaces, `'`, `-`, `.`, `,`.
    Name,
    /// Free text without control characters (new lines allowed).
    Text,
    /// An e-mail address (ASCII, `local@domain.tld`).
    Email,
    /// A phone number in E.164: `+` and 7 to 15 digits; spaces, dashes,
    /// dots and parentheses are removed.
    PhoneE164,
    /// An ISO 8601 calendar date `YYYY-MM-DD`, years 1900 to 2199.
    Date,
    /// An ISO 3166-1 alpha-2 country code (upper-cased).
    Country,
    /// A postal code: 2 to 10 letters, digits, spaces or dashes (upper-cased).
    PostalCode,
    /// A Secure Flight gender code: M, F, X (unspecified) or U (undisclosed).
    Gender,
    /// An IPv4 or IPv6 address (canonical text form).
    IpAddress,
    /// A card number: 12 to 19 digits passing the Luhn check; spaces and
    /// dashes are removed.
    CardNumber,
    /// A card expiry `MM/YY`.
    CardExpiry,
    /// A card verification value: 3 or 4 digits. Never stored: the vault
    /// holds it in memory for one reveal ([`crate::cards::cvv`]).
    CardCvv,
}

/// Officially assigned ISO 3166-1 alpha-2 codes.
const COUNTRIES: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ \
CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR \
GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP \
KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT \
MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW \
SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG \
UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW";

impl Validator {
    /// The validator named `name` in `fields.toml`.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "name" => Self::Name,
            "text" => Self::Text,
            "email" => Self::Email,
            "phone_e164" => Self::PhoneE164,
            "date" => Self::Date,
            "country" => Self::Country,
            "postal_code" => Self::PostalCode,
            "gender" => Self::Gender,
            "ip_address" => Self::IpAddress,
            "card_number" => Self::CardNumber,
            "card_expiry" => Self::CardExpiry,
            "card_cvv" => Self::CardCvv,
            _ => return None,
        })
    }

    /// The name used in `fields.toml`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::Text => "text",
            Self::Email => "email",
            Self::PhoneE164 => "phone_e164",
            Self::Date => "date",
            Self::Country => "country",
            Self::PostalCode => "postal_code",
            Self::Gender => "gender",
            Self::IpAddress => "ip_address",
            Self::CardNumber => "card_number",
            Self::CardExpiry => "card_expiry",
            Self::CardCvv => "card_cvv",
        }
    }

    /// The maximum length when `fields.toml` gives none; `None` where the
    /// schema must give one.
    pub fn default_max_len(self) -> Option<usize> {
        match self {
            Self::Name | Self::Text => None,
            Self::Email => Some(254),
            Self::PhoneE164 => Some(32),
            Self::Date => Some(10),
            Self::Country => Some(2),
            Self::PostalCode => Some(10),
            Self::Gender => Some(1),
            Self::IpAddress => Some(45),
            Self::CardNumber => Some(32),
            Self::CardExpiry => Some(5),
            Self::CardCvv => Some(4),
        }
    }

    /// Checks `value` (at most `max_len` characters) and returns its
    /// canonical form; the error never contains the value.
    pub fn normalize(self, value: &str, max_len: usize) -> Result<Zeroizing<String>, &'static str> {
        let v = value.trim();
        if v.is_empty() {
            return Err("empty value");
        }
        if v.chars().count() > max_len {
            return Err("longer than the field's maximum length");
        }
        let ok = |s: &str| Ok(Zeroizing::new(s.to_owned()));
        match self {
            Self::Name => {
                if v.chars()
                    .all(|c| c.is_alphabetic() || matches!(c, ' ' | '\'' | '-' | '.' | ',' | '’'))
                    && v.chars().any(char::is_alphabetic)
                {
                    ok(v)
                } else {
                    Err("not a valid name (letters, spaces and ' - . , only)")
                }
            }
            Self::Text => {
                if v.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
                    Err("contains control characters")
                } else {
                    ok(v)
                }
            }
            Self::Email => {
                if valid_email(v) {
                    ok(v)
                } else {
                    Err("not a valid e-mail address")
                }
            }
            Self::PhoneE164 => {
                let mut out = Zeroizing::new(String::with_capacity(v.len()));
                for (i, c) in v.chars().enumerate() {
                    match c {
                        '+' if i == 0 => out.push('+'),
                        '0'..='9' => out.push(c),
                        ' ' | '-' | '.' | '(' | ')' => {}
                        _ => return Err("not an E.164 phone number (+ and 7 to 15 digits)"),
                    }
                }
                let digits = out.len().saturating_sub(1);
                if out.starts_with('+') && (7..=15).contains(&digits) && !out[1..].starts_with('0')
                {
                    Ok(out)
                } else {
                    Err("not an E.164 phone number (+ and 7 to 15 digits)")
                }
            }
            Self::Date => {
                if crate::model::calendar::valid_date(v) {
                    ok(v)
                } else {
                    Err("not a valid date (YYYY-MM-DD, years 1900 to 2199)")
                }
            }
            Self::Country => {
                let up = Zeroizing::new(v.to_ascii_uppercase());
                if up.len() == 2
                    && up.bytes().all(|b| b.is_ascii_uppercase())
                    && COUNTRIES.split(' ').any(|c| c == up.as_str())
                {
                    Ok(up)
                } else {
                    Err("not an ISO 3166-1 alpha-2 country code")
                }
            }
            Self::PostalCode => {
                let up = Zeroizing::new(v.to_ascii_uppercase());
                if (2..=10).contains(&up.len())
                    && up
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b' ' || b == b'-')
                    && up.bytes().any(|b| b.is_ascii_alphanumeric())
                {
                    Ok(up)
                } else {
                    Err("not a valid postal code (2 to 10 letters, digits, spaces or dashes)")
                }
            }
            Self::Gender => match v {
                "M" | "m" | "F" | "f" | "X" | "x" | "U" | "u" => {
                    Ok(Zeroizing::new(v.to_ascii_uppercase()))
                }
                _ => Err("not a gender code (M, F, X or U)"),
            },
            Self::IpAddress => match v.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(Zeroizing::new(ip.to_string())),
                Err(_) => Err("not an IP address"),
            },
            Self::CardNumber => {
                let mut digits = Zeroizing::new(String::with_capacity(v.len()));
                for c in v.chars() {
                    match c {
                        '0'..='9' => digits.push(c),
                        ' ' | '-' => {}
                        _ => return Err("not a card number (digits, spaces and dashes only)"),
                    }
                }
                if !(12..=19).contains(&digits.len()) {
                    return Err("not a card number (12 to 19 digits)");
                }
                if !crate::cards::luhn_valid(&digits) {
                    return Err("not a card number (fails the Luhn check)");
                }
                Ok(digits)
            }
            Self::CardExpiry => {
                let b = v.as_bytes();
                let month = v.get(0..2).and_then(|m| m.parse::<u8>().ok());
                if b.len() == 5
                    && b[2] == b'/'
                    && b.iter()
                        .enumerate()
                        .all(|(i, c)| i == 2 || c.is_ascii_digit())
                    && matches!(month, Some(1..=12))
                {
                    ok(v)
                } else {
                    Err("not a card expiry (MM/YY)")
                }
            }
            Self::CardCvv => {
                if (3..=4).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit()) {
                    ok(v)
                } else {
                    Err("not a CVV (3 or 4 digits)")
                }
            }
        }
    }
}

fn valid_email(v: &str) -> bool {
    let Some((local, domain)) = v.rsplit_once('@') else {
        return false;
    };
    if local.is_empty() || local.len() > 64 || domain.len() > 253 || !v.is_ascii() {
        return false;
    }
    let local_ok = local
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~.-".contains(&b))
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..");
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
        && labels
            .last()
            .is_some_and(|tld| tld.len() >= 2 && tld.bytes().all(|b| b.is_ascii_alphabetic()));
    local_ok && domain_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn n(v: Validator, s: &str) -> Result<String, &'static str> {
        v.normalize(s, 200).map(|z| z.to_string())
    }

    #[test]
    fn accepts_and_canonicalises() {
        assert_eq!(
            n(Validator::Email, " Ann.Lee@Example.com ").unwrap(),
            "Ann.Lee@Example.com"
        );
        assert_eq!(
            n(Validator::PhoneE164, "+1 (415) 555-0123").unwrap(),
            "+14155550123"
        );
        assert_eq!(n(Validator::Date, "2000-02-29").unwrap(), "2000-02-29");
        assert_eq!(n(Validator::Country, "fr").unwrap(), "FR");
        assert_eq!(n(Validator::PostalCode, "sw1a 1aa").unwrap(), "SW1A 1AA");
        assert_eq!(n(Validator::Gender, "x").unwrap(), "X");
        assert_eq!(
            n(Validator::IpAddress, "2001:DB8::1").unwrap(),
            "2001:db8::1"
        );
        assert_eq!(
            n(Validator::CardNumber, "4111 1111-1111 1111").unwrap(),
            "4111111111111111"
        );
        assert_eq!(n(Validator::CardExpiry, "09/29").unwrap(), "09/29");
        assert_eq!(
            n(Validator::Name, "Zoë O'Brien-Smith").unwrap(),
            "Zoë O'Brien-Smith"
        );
        assert_eq!(
            n(Validator::Text, "1 Main St\nSpringfield").unwrap(),
            "1 Main St\nSpringfield"
        );
    }

    #[test]
    fn rejects_without_echoing_the_value() {
        let bad = [
            (Validator::Email, "no-at-sign"),
            (Validator::Email, "a@b"),
            (Validator::Email, "a@@b.com"),
            (Validator::PhoneE164, "4155550123"),
            (Validator::PhoneE164, "+0123456789"),
            (Validator::PhoneE164, "+1234"),
            (Validator::Date, "2001-02-29"),
            (Validator::Date, "1899-01-01"),
            (Validator::Date, "2000-1-01"),
            (Validator::Country, "XX"),
            (Validator::PostalCode, "!"),
            (Validator::Gender, "male"),
            (Validator::IpAddress, "300.1.1.1"),
            (Validator::CardNumber, "4111111111111112"),
            (Validator::CardNumber, "41111111111"),
            (Validator::CardNumber, "4111a11111111111"),
            (Validator::CardExpiry, "13/29"),
            (Validator::CardCvv, "12"),
            (Validator::CardCvv, "12345"),
            (Validator::CardCvv, "12a"),
            (Validator::Name, "R2D2"),
            (Validator::Text, "bell\u{7}"),
            (Validator::Text, "   "),
        ];
        for (v, s) in bad {
            let err = n(v, s).expect_err(s);
            let v = s.trim();
            assert!(v.is_empty() || !err.contains(v), "{err} echoes {s}");
        }
    }

    proptest! {
        #[test]
        fn normalising_is_idempotent(s in "\\PC{0,40}") {
            for v in [Validator::Name, Validator::Text, Validator::Email, Validator::PhoneE164,
                      Validator::Date, Validator::Country, Validator::PostalCode, Validator::Gender,
                      Validator::IpAddress, Validator::CardNumber, Validator::CardExpiry, Validator::CardCvv] {
                if let Ok(c) = v.normalize(&s, 200) {
                    let again = v.normalize(&c, 200).map(|z| z.to_string());
                    prop_assert_eq!(again.as_deref(), Ok(c.as_str()));
                }
            }
        }
    }
}
