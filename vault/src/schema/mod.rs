//! The field schema (`policies/fields.toml`): which fields exist, their class,
//! validator, mask, look-up flag, purposes and retention.
//!
//! A schema is checked whole when it is loaded, and every problem is reported
//! at once, naming the file, the field and what is wrong. Unknown fields are
//! rejected at the edge of every request by [`Schema::field`].

mod mask;
mod validate;

pub use mask::Mask;
pub use validate::Validator;

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use zeroize::Zeroizing;

/// The default schema, compiled in so `vaultd` runs from any directory.
pub const DEFAULT_FIELDS_TOML: &str = include_str!("../../../policies/fields.toml");

/// What a retention period counts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetentionAnchor {
    /// The time the value was stored.
    Collection,
    /// The subject's last activity (last write).
    LastActivity,
    /// The end of travel, given as an anchor at tokenize time.
    TravelEnd,
}

impl RetentionAnchor {
    /// The name used in `fields.toml`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Collection => "collection",
            Self::LastActivity => "last_activity",
            Self::TravelEnd => "travel_end",
        }
    }
}

/// How long a class of data is kept, and from when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Length of the period in days.
    pub days: u32,
    /// What the period counts from.
    pub after: RetentionAnchor,
}

/// A class of fields sharing a retention.
#[derive(Debug, Clone)]
pub struct ClassDef {
    /// The class name, e.g. `card`.
    pub name: String,
    /// Human description.
    pub description: String,
    /// How long values of this class are kept.
    pub retention: Retention,
}

/// The lawful basis of a purpose of processing (GDPR 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// Needed to perform the contract (the booking).
    Contract,
    /// Required by law (e.g. TSA Secure Flight).
    LegalObligation,
    /// The company's legitimate interest (fraud prevention, collections).
    LegitimateInterest,
    /// Only with the subject's consent, which can be withdrawn.
    Consent,
}

impl Basis {
    /// The name used in `fields.toml`.
    pub fn name(self) -> &'static str {
        match self {
            Basis::Contract => "contract",
            Basis::LegalObligation => "legal_obligation",
            Basis::LegitimateInterest => "legitimate_interest",
            Basis::Consent => "consent",
        }
    }
}

/// A declared purpose of processing.
#[derive(Debug, Clone)]
pub struct PurposeDef {
    /// The purpose name, e.g. `billing`.
    pub name: String,
    /// Its position in [`Schema::purposes`] (at most 128 purposes).
    pub index: u8,
    /// The lawful basis.
    pub basis: Basis,
    /// What the purpose is.
    pub description: String,
}

impl PurposeDef {
    /// Whether the purpose may be used only with the subject's consent.
    pub fn needs_consent(&self) -> bool {
        self.basis == Basis::Consent
    }
}

/// Most purposes a schema may declare (consent sets are 128-bit masks).
pub const MAX_PURPOSES: usize = 128;

/// One declared field.
#[derive(Debug, Clone)]
pub struct FieldDef {
    /// The field name, e.g. `email`.
    pub name: String,
    /// The class name; [`Schema::class`] gives its definition.
    pub class: String,
    /// How values are checked and normalised.
    pub validator: Validator,
    /// Maximum length in characters.
    pub max_len: usize,
    /// How a masked disclosure shows the value.
    pub mask: Mask,
    /// How a partial disclosure (`reveal_partial`, for roles with a
    /// documented need) shows it; `None`: as the mask.
    pub partial_mask: Option<Mask>,
    /// Whether exact values can be looked up through a blind index.
    pub lookup: bool,
    /// Declared purposes of processing.
    pub purposes: Vec<String>,
    /// The policy sentence that makes the vault collect it.
    pub source: String,
}

impl FieldDef {
    /// Checks `value` and returns its canonical form, or a description of what
    /// is wrong (never containing the value).
    /// The validator bounds the trimmed value by the field's `max_len`.
    pub fn normalize(&self, value: &str) -> Result<Zeroizing<String>, &'static str> {
        self.validator.normalize(value, self.max_len)
    }

    /// [`FieldDef::normalize`] for a value about to be stored at `now` (Unix
    /// seconds): a card expiry must not be in the past.
    pub fn normalize_to_store(
        &self,
        value: &str,
        now: i64,
    ) -> Result<Zeroizing<String>, &'static str> {
        let v = self.normalize(value)?;
        if self.validator == Validator::CardExpiry && crate::cards::expired(&v, now) {
            return Err("card expired (the month is in the past)");
        }
        Ok(v)
    }

    /// Whether values of this field are held in memory only, for one
    /// reveal, and never stored (a CVV).
    pub fn memory_only(&self) -> bool {
        self.validator == Validator::CardCvv
    }

    /// The form of a canonical value that feeds the blind index: lower-case
    /// for e-mail addresses, the canonical form for everything else.
    pub fn index_form(&self, canonical: &str) -> Zeroizing<String> {
        match self.validator {
            Validator::Email => Zeroizing::new(canonical.to_lowercase()),
            _ => Zeroizing::new(canonical.to_owned()),
        }
    }

    /// The masked form of a canonical value.
    pub fn masked(&self, canonical: &str) -> Zeroizing<String> {
        self.mask.apply(canonical)
    }

    /// The partial form of a canonical value (the partial mask, else the mask).
    pub fn partial(&self, canonical: &str) -> Zeroizing<String> {
        self.partial_mask.unwrap_or(self.mask).apply(canonical)
    }
}

/// The loaded schema.
#[derive(Debug, Clone)]
pub struct Schema {
    fields: BTreeMap<String, Arc<FieldDef>>,
    classes: BTreeMap<String, ClassDef>,
    purposes: BTreeMap<String, PurposeDef>,
}

/// Every problem found in a schema file, each naming file and field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaError {
    /// One line per problem: `FILE: field NAME: PROBLEM`.
    pub problems: Vec<String>,
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid field schema:")?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SchemaError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchema {
    version: u32,
    #[serde(default)]
    classes: BTreeMap<String, RawClass>,
    #[serde(default)]
    purposes: BTreeMap<String, RawPurpose>,
    #[serde(default)]
    fields: BTreeMap<String, RawField>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPurpose {
    basis: Option<Basis>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    #[allow(dead_code)]
    source: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClass {
    #[serde(default)]
    description: String,
    retention: Option<String>,
    after: Option<RetentionAnchor>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    class: Option<String>,
    validator: Option<String>,
    max_len: Option<usize>,
    mask: Option<String>,
    partial_mask: Option<String>,
    #[serde(default)]
    lookup: bool,
    purposes: Option<Vec<String>>,
    #[serde(default)]
    source: String,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && name.as_bytes()[0].is_ascii_lowercase()
}

/// Parses a retention such as `30d`, `2w` or `6y` (a year is 365 days).
pub fn parse_retention_days(text: &str) -> Option<u32> {
    let text = text.trim();
    let unit = text.chars().last()?;
    let number: u32 = text[..text.len() - unit.len_utf8()].parse().ok()?;
    let days = match unit {
        'd' => Some(number),
        'w' => number.checked_mul(7),
        'y' => number.checked_mul(365),
        _ => None,
    }?;
    (days > 0).then_some(days)
}

impl Schema {
    /// Loads a schema file; `max_value_bytes` bounds every field's maximum length.
    pub fn load(path: &Path, max_value_bytes: usize) -> Result<Self, SchemaError> {
        let label = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| SchemaError {
            problems: vec![format!("{label}: cannot read: {e}")],
        })?;
        Self::parse(&text, &label, max_value_bytes)
    }

    /// Parses schema text; `label` names the file in error messages.
    pub fn parse(text: &str, label: &str, max_value_bytes: usize) -> Result<Self, SchemaError> {
        let raw: RawSchema = toml::from_str(text).map_err(|e| SchemaError {
            problems: vec![format!(
                "{label}: {}",
                e.to_string().trim_end().replace('\n', "\n    ")
            )],
        })?;
        let mut problems = Vec::new();
        if raw.version != 1 {
            problems.push(format!(
                "{label}: version {} is not supported (expected 1)",
                raw.version
            ));
        }
        let mut purpose_defs = BTreeMap::new();
        if raw.purposes.len() > MAX_PURPOSES {
            problems.push(format!(
                "{label}: more than {MAX_PURPOSES} purposes are declared"
            ));
        }
        for (i, (name, p)) in raw.purposes.into_iter().enumerate() {
            let mut bad = |p: String| problems.push(format!("{label}: purpose {name}: {p}"));
            if !valid_name(&name) {
                bad("name must be lower-case letters, digits and _".into());
            }
            match (p.basis, u8::try_from(i)) {
                (None, _) => bad(
                    "missing basis (contract, legal_obligation, legitimate_interest or consent)"
                        .into(),
                ),
                (Some(basis), Ok(index)) if i < MAX_PURPOSES => {
                    purpose_defs.insert(
                        name.clone(),
                        PurposeDef {
                            name,
                            index,
                            basis,
                            description: p.description,
                        },
                    );
                }
                _ => {}
            }
        }
        let mut classes = BTreeMap::new();
        for (name, c) in raw.classes {
            let mut bad = |p: String| problems.push(format!("{label}: class {name}: {p}"));
            if !valid_name(&name) {
                bad("name must be lower-case letters, digits and _".into());
            }
            let days = match c.retention.as_deref() {
                None => {
                    bad("missing retention".into());
                    None
                }
                Some(r) => {
                    let d = parse_retention_days(r);
                    if d.is_none() {
                        bad(format!(
                            "retention {r:?} is not a number followed by d, w or y"
                        ));
                    }
                    d
                }
            };
            if c.after.is_none() {
                bad("missing after (collection, last_activity or travel_end)".into());
            }
            if let (Some(days), Some(after)) = (days, c.after) {
                classes.insert(
                    name.clone(),
                    ClassDef {
                        name,
                        description: c.description,
                        retention: Retention { days, after },
                    },
                );
            }
        }
        let mut fields = BTreeMap::new();
        for (name, f) in raw.fields {
            let before = problems.len();
            let mut bad = |p: String| problems.push(format!("{label}: field {name}: {p}"));
            if !valid_name(&name) {
                bad("name must be lower-case letters, digits and _".into());
            }
            match f.class.as_deref() {
                None => bad("missing class".into()),
                Some(c) if !classes.contains_key(c) => {
                    bad(format!("class {c:?} is not declared (or is invalid)"))
                }
                Some(_) => {}
            }
            let validator = match f.validator.as_deref() {
                None => {
                    bad("missing validator".into());
                    None
                }
                Some(v) => {
                    let parsed = Validator::parse(v);
                    if parsed.is_none() {
                        bad(format!("unknown validator {v:?}"));
                    }
                    parsed
                }
            };
            let mask = match f.mask.as_deref() {
                None => {
                    bad("missing mask".into());
                    None
                }
                Some(m) => {
                    let parsed = Mask::parse(m);
                    if parsed.is_none() {
                        bad(format!("unknown mask {m:?}"));
                    }
                    parsed
                }
            };
            let partial_mask = f.partial_mask.as_deref().and_then(|m| {
                let parsed = Mask::parse(m);
                if parsed.is_none() {
                    bad(format!("unknown partial_mask {m:?}"));
                }
                parsed
            });
            if validator == Some(Validator::CardCvv) && f.lookup {
                // A blind index would keep a keyed hash of the CVV on disk
                // (PCI DSS 3.3.1: not even encrypted).
                bad("a card_cvv field cannot be a look-up field".into());
            }
            let max_len = match (validator, f.max_len) {
                (_, Some(0)) => {
                    bad("max_len must be at least 1".into());
                    0
                }
                (_, Some(n)) if n > max_value_bytes => {
                    bad(format!(
                        "max_len {n} is above the vault's value limit of {max_value_bytes} bytes"
                    ));
                    0
                }
                (_, Some(n)) => n,
                (Some(v), None) => match v.default_max_len() {
                    Some(n) => n.min(max_value_bytes),
                    None => {
                        bad(format!("validator {} needs max_len", v.name()));
                        0
                    }
                },
                (None, None) => 0,
            };
            let purposes = f.purposes.unwrap_or_default();
            if purposes.is_empty() {
                bad("missing purposes (at least one purpose of processing)".into());
            }
            for p in &purposes {
                if !purpose_defs.contains_key(p) {
                    bad(format!(
                        "purpose {p:?} is not declared under [purposes] (or is invalid)"
                    ));
                }
            }
            if problems.len() == before
                && let (Some(class), Some(validator), Some(mask)) = (f.class, validator, mask)
            {
                let def = FieldDef {
                    name: name.clone(),
                    class,
                    validator,
                    max_len,
                    mask,
                    partial_mask,
                    lookup: f.lookup,
                    purposes,
                    source: f.source,
                };
                fields.insert(name, Arc::new(def));
            }
        }
        if fields.is_empty() && problems.is_empty() {
            problems.push(format!("{label}: no fields declared"));
        }
        if problems.is_empty() {
            Ok(Self {
                fields,
                classes,
                purposes: purpose_defs,
            })
        } else {
            Err(SchemaError { problems })
        }
    }

    /// The built-in default schema.
    pub fn default_schema(max_value_bytes: usize) -> Result<Self, SchemaError> {
        Self::parse(
            DEFAULT_FIELDS_TOML,
            "<built-in policies/fields.toml>",
            max_value_bytes,
        )
    }

    /// The field called `name`, if declared.
    pub fn field(&self, name: &str) -> Option<&Arc<FieldDef>> {
        self.fields.get(name)
    }

    /// The class called `name`, if declared.
    pub fn class(&self, name: &str) -> Option<&ClassDef> {
        self.classes.get(name)
    }

    /// The purpose called `name`, if declared.
    pub fn purpose(&self, name: &str) -> Option<&PurposeDef> {
        self.purposes.get(name)
    }

    /// Every declared purpose, by name.
    pub fn purposes(&self) -> impl Iterator<Item = &PurposeDef> {
        self.purposes.values()
    }

    /// Every declared class, by name.
    pub fn classes(&self) -> impl Iterator<Item = &ClassDef> {
        self.classes.values()
    }

    /// Every declared field, by name.
    pub fn fields(&self) -> impl Iterator<Item = &Arc<FieldDef>> {
        self.fields.values()
    }

    /// Number of declared fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether no field is declared (never true of a loaded schema).
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_schema_loads_with_every_reference_field() {
        let s = Schema::default_schema(4096).unwrap();
        for f in [
            "full_name",
            "gender",
            "date_of_birth",
            "email",
            "phone",
            "mailing_address",
            "billing_address",
            "postal_code",
            "ip_address",
            "card_number",
            "card_expiry",
            "cardholder_name",
        ] {
            let def = s.field(f).unwrap_or_else(|| panic!("{f} missing"));
            assert!(s.class(&def.class).is_some());
            assert!(!def.purposes.is_empty());
        }
        assert!(s.field("passport").is_none());
    }

    /// GDPR-30: the record of processing. Every declared field has a class
    /// with a retention and at least one purpose; a schema where one lacks
    /// them does not load (so `vaultd check` fails CI).
    #[test]
    fn gdpr_30_every_field_has_class_purposes_and_retention() {
        let s = Schema::default_schema(4096).unwrap();
        for f in s.fields() {
            let class = s.class(&f.class).unwrap();
            assert!(class.retention.days > 0, "{}", f.name);
            assert!(!f.purposes.is_empty(), "{}", f.name);
            assert!(
                !f.source.is_empty(),
                "{} names the policy sentence it comes from",
                f.name
            );
        }
        let head = "version = 1\n[purposes.p]\nbasis = \"contract\"\n\
            [classes.c]\nretention = \"1y\"\nafter = \"collection\"\n";
        let missing = [
            (
                "purposes",
                "[fields.a]\nclass = \"c\"\nvalidator = \"gender\"\nmask = \"redact\"\n",
            ),
            (
                "class",
                "[fields.a]\nvalidator = \"gender\"\nmask = \"redact\"\npurposes = [\"p\"]\n",
            ),
        ];
        for (what, field) in missing {
            let err = Schema::parse(&format!("{head}{field}"), "f.toml", 4096).unwrap_err();
            assert!(
                err.to_string().contains(&format!("missing {what}")),
                "{err}"
            );
        }
        let no_retention = "version = 1\n[purposes.p]\nbasis = \"contract\"\n\
            [classes.c]\nafter = \"collection\"\n\
            [fields.a]\nclass = \"c\"\nvalidator = \"gender\"\nmask = \"redact\"\npurposes = [\"p\"]\n";
        let err = Schema::parse(no_retention, "f.toml", 4096).unwrap_err();
        assert!(
            err.to_string().contains("class c: missing retention"),
            "{err}"
        );
    }

    #[test]
    fn every_problem_is_reported_with_file_and_field() {
        let text = r#"
            version = 1
            [classes.c]
            retention = "10x"
            after = "collection"
            [fields.a]
            class = "nope"
            validator = "email"
            mask = "email"
            purposes = ["x"]
            [fields.b]
            class = "c"
            validator = "weird"
            mask = "email"
        "#;
        let err = Schema::parse(text, "f.toml", 4096).unwrap_err();
        let all = err.to_string();
        assert!(all.contains("f.toml: class c: retention"), "{all}");
        assert!(all.contains("f.toml: field a: class \"nope\""), "{all}");
        assert!(all.contains("f.toml: field b: unknown validator"), "{all}");
        assert!(all.contains("f.toml: field b: missing purposes"), "{all}");
    }

    #[test]
    fn purposes_are_declared_with_a_basis() {
        let s = Schema::default_schema(4096).unwrap();
        assert!(s.purpose("marketing_email").unwrap().needs_consent());
        assert!(!s.purpose("billing").unwrap().needs_consent());
        let text = "version = 1\n[purposes.p]\ndescription = \"x\"\n\
            [classes.c]\nretention = \"1y\"\nafter = \"collection\"\n\
            [fields.a]\nclass = \"c\"\nvalidator = \"gender\"\nmask = \"redact\"\npurposes = [\"q\"]\n";
        let err = Schema::parse(text, "f.toml", 4096).unwrap_err().to_string();
        assert!(err.contains("f.toml: purpose p: missing basis"), "{err}");
        assert!(
            err.contains("f.toml: field a: purpose \"q\" is not declared"),
            "{err}"
        );
    }

    #[test]
    fn syntax_errors_name_the_file_and_line() {
        let err = Schema::parse("version = 1\n[fields.a\n", "f.toml", 4096).unwrap_err();
        assert!(err.problems[0].starts_with("f.toml:"), "{err}");
        assert!(err.problems[0].contains("line 2"), "{err}");
    }

    #[test]
    fn max_len_counts_characters_of_the_trimmed_value() {
        let s = Schema::default_schema(4096).unwrap();
        let age = s.field("age_range").unwrap();
        assert_eq!(age.max_len, 16);
        assert!(age.normalize(&"x".repeat(16)).is_ok());
        assert!(age.normalize(&format!("  {}  ", "x".repeat(16))).is_ok());
        assert_eq!(
            age.normalize(&"x".repeat(17)).unwrap_err(),
            "longer than the field's maximum length"
        );
        assert!(
            age.normalize(&"é".repeat(16)).is_ok(),
            "characters, not bytes"
        );
    }

    #[test]
    fn retention_units() {
        assert_eq!(parse_retention_days("30d"), Some(30));
        assert_eq!(parse_retention_days("2w"), Some(14));
        assert_eq!(parse_retention_days("6y"), Some(2190));
        assert_eq!(parse_retention_days("0d"), None);
        assert_eq!(parse_retention_days("y"), None);
        assert_eq!(parse_retention_days("5m"), None);
        assert_eq!(parse_retention_days(""), None);
    }
}
