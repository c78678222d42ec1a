//! TokenService requests: Tokenize, Detokenize, Lookup, Update.

use super::{Checked, Violations, declared_purpose};
use crate::config::Limits;
use crate::engine::NewValue;
use crate::error::Error;
use crate::model::{PolicyVersion, Purpose, SubjectId, TravelEnd};
use crate::schema::{FieldDef, Schema, Validator};
use crate::tokens::Token;
use prost::Message;
use std::collections::HashSet;
use std::sync::Arc;
use vault_proto::v1::{DetokenizeRequest, LookupRequest, TokenizeRequest, UpdateRequest};
use zeroize::Zeroizing;

/// Most purposes one Tokenize consents to.
pub const MAX_TOKENIZE_PURPOSES: usize = 64;

fn check_size(v: &mut Violations, limits: &Limits, len: usize) {
    let max = limits.max_request_bytes;
    if len > max {
        v.add("request", format!("larger than the limit of {max} bytes"));
    }
}

fn check_count(v: &mut Violations, limits: &Limits, what: &str, n: usize) {
    let max = limits.max_batch_items;
    if n == 0 {
        v.add(what, "at least one item is required");
    } else if n > max {
        v.add(what, format!("more than the limit of {max} items"));
    }
}

fn check_value(v: &mut Violations, limits: &Limits, at: String, value: &str) -> Checked<()> {
    let max = limits.max_value_bytes;
    if value.len() > max {
        Err(v.add(at, format!("longer than the limit of {max} bytes")))
    } else {
        Ok(())
    }
}

/// The declared field called `name`, or a violation at `at`.
fn declared_field<'s>(
    v: &mut Violations,
    at: String,
    schema: &'s Schema,
    name: &str,
) -> Checked<&'s Arc<FieldDef>> {
    if name.is_empty() {
        return Err(v.add(at, "a field name is required"));
    }
    schema
        .field(name)
        .ok_or_else(|| v.add(at, "unknown field (not declared in the schema)"))
}

/// `value` within the byte limit and valid for `field`, canonical; or a
/// violation at `at`. With `store_at` (Unix seconds), the value is about
/// to be stored then: a card expiry must not be in the past.
fn checked_value(
    v: &mut Violations,
    limits: &Limits,
    at: String,
    field: &FieldDef,
    value: &str,
    store_at: Option<i64>,
) -> Checked<Zeroizing<String>> {
    check_value(v, limits, at.clone(), value)?;
    match store_at {
        Some(now) => v.check(at, field.normalize_to_store(value, now)),
        None => v.check(at, field.normalize(value)),
    }
}

/// A CVV is accepted only with a valid card number in the same request, and
/// must have that card's length. `cvvs`: each CVV's position in the request
/// and, if it was valid on its own, in `values`.
fn check_cvvs(
    v: &mut Violations,
    values: &[NewValue],
    cvvs: &[(usize, Option<usize>)],
    card_given: bool,
) {
    let card = values
        .iter()
        .find(|nv| nv.field.validator == Validator::CardNumber);
    for &(at, valid) in cvvs {
        match (card, valid.and_then(|j| values.get(j))) {
            (Some(card), Some(cvv)) => {
                if let Err(e) = crate::cards::check_cvv(&cvv.value, &card.value) {
                    v.add(format!("fields[{at}].value"), e);
                }
            }
            (None, _) if !card_given => {
                v.add(
                    format!("fields[{at}].field"),
                    "a CVV is accepted only together with a card number in the same request",
                );
            }
            // An invalid card number or CVV is reported already.
            _ => {}
        }
    }
}

/// A Tokenize: the values to store, canonical, and the consent given with
/// them.
pub(crate) struct ValidTokenize {
    pub subject: SubjectId,
    /// In the request's order; CVVs checked against their card.
    pub values: Vec<NewValue>,
    pub purposes: Vec<Purpose>,
    pub policy_version: PolicyVersion,
    pub travel_end: Option<TravelEnd>,
}

impl ValidTokenize {
    /// `req` checked against `schema` and `limits`, its values to be stored
    /// at `now` (Unix seconds).
    pub(crate) fn parse(
        req: &TokenizeRequest,
        schema: &Schema,
        limits: &Limits,
        now: i64,
    ) -> Result<Self, Error> {
        let mut v = Violations::default();
        check_size(&mut v, limits, req.encoded_len());
        let subject = v.check("subject_id", SubjectId::parse(&req.subject_id));
        let n = req.fields.len();
        check_count(&mut v, limits, "fields", n);
        let mut seen = HashSet::new();
        // Each CVV's place in the request and in `values`, to check it
        // against its card below.
        let mut cvvs = Vec::new();
        let mut card_given = false;
        let mut values = Vec::with_capacity(n.min(limits.max_batch_items));
        for (i, fv) in req.fields.iter().enumerate().take(limits.max_batch_items) {
            let Ok(def) = declared_field(&mut v, format!("fields[{i}].field"), schema, &fv.field)
            else {
                continue;
            };
            if !seen.insert(def.name.as_str()) {
                v.add(format!("fields[{i}].field"), "field given more than once");
                continue;
            }
            card_given |= def.validator == Validator::CardNumber;
            let value = checked_value(
                &mut v,
                limits,
                format!("fields[{i}].value"),
                def,
                &fv.value,
                Some(now),
            );
            if def.memory_only() {
                cvvs.push((i, value.as_ref().ok().map(|_| values.len())));
            }
            if let Ok(value) = value {
                values.push(NewValue {
                    field: def.clone(),
                    value,
                });
            }
        }
        check_cvvs(&mut v, &values, &cvvs, card_given);
        let mut purposes = Vec::with_capacity(req.purposes.len());
        for (i, p) in req.purposes.iter().enumerate().take(MAX_TOKENIZE_PURPOSES) {
            purposes.extend(declared_purpose(&mut v, &format!("purposes[{i}]"), schema, p).ok());
        }
        if req.purposes.len() > MAX_TOKENIZE_PURPOSES {
            v.add("purposes", "more than 64 purposes");
        }
        let policy_version = v.check("policy_version", PolicyVersion::parse(&req.policy_version));
        let travel_end = v.check("travel_end_date", TravelEnd::parse(&req.travel_end_date));
        // A value left out of `values` was reported: none is missing here.
        v.finish(|| {
            Ok(Self {
                subject: subject?,
                values,
                purposes,
                policy_version: policy_version?,
                travel_end: travel_end?,
            })
        })
    }
}

/// A Detokenize: well-formed tokens and a declared purpose.
#[derive(Debug)]
pub(crate) struct ValidDetokenize {
    pub purpose: Purpose,
    pub tokens: Vec<Token>,
}

impl ValidDetokenize {
    pub(crate) fn parse(
        req: DetokenizeRequest,
        schema: &Schema,
        limits: &Limits,
    ) -> Result<Self, Error> {
        let mut v = Violations::default();
        check_size(&mut v, limits, req.encoded_len());
        let n = req.tokens.len();
        check_count(&mut v, limits, "tokens", n);
        let purpose = declared_purpose(&mut v, "purpose", schema, &req.purpose);
        let mut tokens = Vec::with_capacity(n.min(limits.max_batch_items));
        for (i, t) in req
            .tokens
            .into_iter()
            .enumerate()
            .take(limits.max_batch_items)
        {
            // The field's name is only written out for a bad token; a good
            // one keeps the request's string.
            match Token::parse_owned(t) {
                Some(t) => tokens.push(t),
                None => {
                    v.add(format!("tokens[{i}]"), "malformed token");
                }
            }
        }
        v.finish(|| {
            Ok(Self {
                purpose: purpose?,
                tokens,
            })
        })
    }
}

/// A Lookup: a look-up field, the value to find (canonical) and a purpose.
pub(crate) struct ValidLookup {
    pub purpose: Purpose,
    pub field: Arc<FieldDef>,
    pub value: Zeroizing<String>,
}

impl ValidLookup {
    pub(crate) fn parse(
        req: &LookupRequest,
        schema: &Schema,
        limits: &Limits,
    ) -> Result<Self, Error> {
        let mut v = Violations::default();
        check_size(&mut v, limits, req.encoded_len());
        let purpose = declared_purpose(&mut v, "purpose", schema, &req.purpose);
        let field = match declared_field(&mut v, "field".into(), schema, &req.field) {
            Ok(f) if !f.lookup => Err(v.add("field", "not a look-up field")),
            other => other.cloned(),
        };
        let value = match &field {
            Ok(f) => checked_value(&mut v, limits, "value".into(), f, &req.value, None),
            Err(reported) => Err(*reported),
        };
        v.finish(|| {
            Ok(Self {
                purpose: purpose?,
                field: field?,
                value: value?,
            })
        })
    }
}

/// An Update: the token to correct and a purpose. The new value is only
/// bounded here: it is checked against the token's field once the token is
/// found.
pub(crate) struct ValidUpdate {
    pub token: Token,
    pub purpose: Purpose,
    /// Wiped on drop, as the request's copy would have been.
    pub value: Zeroizing<String>,
}

impl ValidUpdate {
    pub(crate) fn parse(
        mut req: UpdateRequest,
        schema: &Schema,
        limits: &Limits,
    ) -> Result<Self, Error> {
        let mut v = Violations::default();
        check_size(&mut v, limits, req.encoded_len());
        let token = v.check("token", Token::parse(&req.token).ok_or("malformed token"));
        let purpose = declared_purpose(&mut v, "purpose", schema, &req.purpose);
        let bounded = check_value(&mut v, limits, "value".into(), &req.value);
        v.finish(|| {
            bounded?;
            Ok(Self {
                token: token?,
                purpose: purpose?,
                value: Zeroizing::new(std::mem::take(&mut req.value)),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::paths;
    use super::*;
    use vault_proto::v1::FieldValue;

    fn schema() -> Schema {
        Schema::default_schema(4096).unwrap()
    }

    fn fv(field: &str, value: &str) -> FieldValue {
        FieldValue {
            field: field.into(),
            value: value.into(),
        }
    }

    #[test]
    fn tokenize_reports_every_violation_in_the_order_of_the_request() {
        let req = TokenizeRequest {
            subject_id: "ann@example.com".into(),
            fields: vec![
                fv("email", "ann@example.com"),
                fv("nope", "x"),
                fv("email", "bob@example.com"),
                fv("card_cvv", "123"),
                fv("email", "x"),
                fv("", "x"),
            ],
            purposes: vec!["booking".into(), "Bad".into(), "not_declared".into()],
            policy_version: "v 1".into(),
            travel_end_date: "2024-02-30".into(),
        };
        let r = ValidTokenize::parse(&req, &schema(), &crate::Config::default().limits, 0);
        assert_eq!(
            paths(r),
            [
                "subject_id",
                "fields[1].field",
                "fields[2].field",
                "fields[4].field",
                "fields[5].field",
                // A CVV is checked against its card after every field.
                "fields[3].field",
                "purposes[1]",
                "purposes[2]",
                "policy_version",
                "travel_end_date",
            ]
        );
    }

    #[test]
    fn a_valid_tokenize_is_plain_values() {
        let req = TokenizeRequest {
            subject_id: "cust-1".into(),
            fields: vec![fv("email", "Ann@Example.com"), fv("full_name", "Ann")],
            purposes: vec!["booking".into()],
            policy_version: "2024-01".into(),
            travel_end_date: String::new(),
        };
        let Ok(t) = ValidTokenize::parse(&req, &schema(), &crate::Config::default().limits, 0)
        else {
            panic!("invalid");
        };
        assert_eq!(t.subject.as_str(), "cust-1");
        let fields: Vec<_> = t.values.iter().map(|v| v.field.name.as_str()).collect();
        assert_eq!(fields, ["email", "full_name"]);
        assert_eq!(t.purposes.len(), 1);
        assert_eq!(t.policy_version.as_str(), "2024-01");
        assert!(t.travel_end.is_none());
    }

    #[test]
    fn limits_are_the_configured_ones() {
        let limits = Limits {
            max_batch_items: 2,
            max_value_bytes: 8,
            max_request_bytes: 1 << 20,
        };
        let req = TokenizeRequest {
            subject_id: "s".into(),
            fields: vec![
                fv("full_name", "a long name"),
                fv("email", "a@b.co"),
                fv("x", ""),
            ],
            ..Default::default()
        };
        // Items past the limit are not looked at.
        assert_eq!(
            paths(ValidTokenize::parse(&req, &schema(), &limits, 0)),
            ["fields", "fields[0].value"]
        );
        let req = DetokenizeRequest {
            tokens: vec!["bad".into(); 3],
            purpose: "booking".into(),
        };
        assert_eq!(
            paths(ValidDetokenize::parse(req, &schema(), &limits)),
            ["tokens", "tokens[0]", "tokens[1]"]
        );
    }

    #[test]
    fn lookup_and_update() {
        let s = schema();
        let l = crate::Config::default().limits;
        let lookup = |field: &str, value: &str, purpose: &str| LookupRequest {
            field: field.into(),
            value: value.into(),
            purpose: purpose.into(),
        };
        assert_eq!(
            paths(ValidLookup::parse(&lookup("full_name", "Ann", ""), &s, &l)),
            ["purpose", "field"]
        );
        assert_eq!(
            paths(ValidLookup::parse(
                &lookup("email", "not-an-email", "booking"),
                &s,
                &l
            )),
            ["value"]
        );
        let Ok(found) = ValidLookup::parse(&lookup("email", "Ann@Example.com", "booking"), &s, &l)
        else {
            panic!("invalid");
        };
        assert_eq!(found.field.name, "email");
        let update = UpdateRequest {
            token: "bad".into(),
            value: "x".repeat(5000),
            purpose: "booking".into(),
        };
        assert_eq!(
            paths(ValidUpdate::parse(update, &s, &l)),
            ["token", "value"]
        );
    }
}
