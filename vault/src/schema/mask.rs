//! Masks: the partial view of a value a role gets when it may not see it plain.

use zeroize::Zeroizing;

/// A mask declared per field in `fields.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mask {
    /// `a***@example.com`: first character of the local part and the domain.
    Email,
    /// `********0123`: every character but the last four replaced by `*`.
    Last4,
    /// `J. D.`: the first letter of each word.
    Initials,
    /// `1984-**-**`: the year of a date.
    Year,
    /// `SW***`: the first two characters.
    Prefix2,
    /// `192.0.2.*` or `2001:db8:85a3:0:*`: the network part of an address.
    IpNetwork,
    /// `****`: nothing of the value, not even its length.
    Redact,
    /// `411111******1111`: a card number's BIN and last four (see
    /// [`crate::cards::bin_last4`]); for roles with a documented need.
    BinLast4,
}

impl Mask {
    /// The mask named `name` in `fields.toml`.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "email" => Self::Email,
            "last4" => Self::Last4,
            "initials" => Self::Initials,
            "year" => Self::Year,
            "prefix2" => Self::Prefix2,
            "ip_network" => Self::IpNetwork,
            "redact" => Self::Redact,
            "bin_last4" => Self::BinLast4,
            _ => return None,
        })
    }

    /// Masks a canonical value.
    pub fn apply(self, value: &str) -> Zeroizing<String> {
        let mut out = Zeroizing::new(String::with_capacity(value.len()));
        match self {
            Self::Email => match value.rsplit_once('@') {
                Some((local, domain)) => {
                    out.extend(local.chars().take(1));
                    out.push_str("***@");
                    out.push_str(domain);
                }
                None => out.push_str("****"),
            },
            Self::Last4 => {
                // A value under 8 characters shows nothing: four of them would be too much of it.
                let n = value.chars().count();
                if n < 8 {
                    out.push_str("****");
                } else {
                    out.extend(
                        value
                            .chars()
                            .enumerate()
                            .map(|(i, c)| if i + 4 >= n { c } else { '*' }),
                    );
                }
            }
            Self::Initials => {
                let words: Vec<char> = value
                    .split_whitespace()
                    .filter_map(|w| w.chars().next())
                    .collect();
                for (i, c) in words.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    out.extend(c.to_uppercase());
                    out.push('.');
                }
            }
            Self::Year => {
                out.extend(value.chars().take(4));
                out.push_str("-**-**");
            }
            Self::Prefix2 => {
                out.extend(value.chars().take(2));
                out.push_str("***");
            }
            Self::IpNetwork => match value.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V4(v4)) => {
                    let o = v4.octets();
                    out.push_str(&format!("{}.{}.{}.*", o[0], o[1], o[2]));
                }
                Ok(std::net::IpAddr::V6(v6)) => {
                    let s = v6.segments();
                    out.push_str(&format!("{:x}:{:x}:{:x}:{:x}:*", s[0], s[1], s[2], s[3]));
                }
                Err(_) => out.push_str("****"),
            },
            Self::Redact => out.push_str("****"),
            Self::BinLast4 => return crate::cards::bin_last4(value),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Masks never panic, and last4 never shows more than the last four
        /// characters of a value of at least eight.
        #[test]
        fn masks_show_no_more_than_they_promise(v in "\\PC{0,64}") {
            for m in [Mask::Email, Mask::Last4, Mask::Initials, Mask::Year, Mask::Prefix2, Mask::IpNetwork, Mask::Redact, Mask::BinLast4] {
                let _ = m.apply(&v);
            }
            let n = v.chars().count();
            let masked = Mask::Last4.apply(&v);
            if n >= 8 {
                prop_assert_eq!(masked.chars().count(), n);
                let shown: String = masked.chars().skip(n - 4).collect();
                let tail: String = v.chars().skip(n - 4).collect();
                prop_assert_eq!(shown, tail);
                prop_assert!(masked.chars().take(n - 4).all(|c| c == '*'));
            } else {
                prop_assert_eq!(masked.as_str(), "****");
            }
            let redacted = Mask::Redact.apply(&v);
            prop_assert_eq!(redacted.as_str(), "****");
        }

        /// The e-mail mask keeps at most the first character of the local part.
        #[test]
        fn email_mask_hides_the_local_part(local in "[a-z0-9._]{2,30}", domain in "[a-z]{2,10}\\.[a-z]{2,4}") {
            let masked = Mask::Email.apply(&format!("{local}@{domain}"));
            let expected = format!("{}***@{domain}", &local[..1]);
            prop_assert_eq!(masked.as_str(), expected.as_str());
        }
    }

    #[test]
    fn masks() {
        assert_eq!(
            *Mask::Email.apply("ann.lee@example.com"),
            "a***@example.com"
        );
        assert_eq!(*Mask::Last4.apply("4111111111110123"), "************0123");
        assert_eq!(*Mask::Last4.apply("+14155550123"), "********0123");
        assert_eq!(*Mask::Last4.apply("123"), "****");
        assert_eq!(*Mask::Initials.apply("john ronald tolkien"), "J. R. T.");
        assert_eq!(*Mask::Year.apply("1984-06-01"), "1984-**-**");
        assert_eq!(*Mask::Prefix2.apply("SW1A 1AA"), "SW***");
        assert_eq!(*Mask::IpNetwork.apply("192.0.2.77"), "192.0.2.*");
        assert_eq!(
            *Mask::IpNetwork.apply("2001:db8:85a3::8a2e:370:7334"),
            "2001:db8:85a3:0:*"
        );
        assert_eq!(*Mask::Redact.apply("anything at all"), "****");
    }
}
