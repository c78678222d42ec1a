//! `vault.v1.TokenService`.

use super::{Shared, Violations, base_event, declared_purpose, principal};
use crate::audit::AuditItem;
use crate::cards::Brand;
use crate::engine::records::SubjectRecord;
use crate::engine::types::{PolicyVersion, Purpose, SubjectId, TravelEnd};
use crate::engine::{Collect, NewValue};
use crate::engine::{Found, MAX_LOOKUP_RESULTS};
use crate::error::Error;
use crate::policy::{Action, SubjectContext};
use crate::schema::{FieldDef, Schema, Validator};
use crate::tokens::Token;
use prost::Message;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;
use tonic::{Request, Response, Status};
use vault_proto::v1::token_service_server::TokenService;
use vault_proto::v1::{
    DetokenizeRequest, DetokenizeResponse, Disclosed, Disclosure, FieldToken, LookupRequest,
    LookupResponse, TokenizeRequest, TokenizeResponse, UpdateRequest, UpdateResponse,
};
use zeroize::{Zeroize, Zeroizing};

/// The token service.
#[derive(Debug, Clone)]
pub struct TokenApi {
    shared: Arc<Shared>,
}

impl TokenApi {
    /// The service over `shared`.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    fn check_size(&self, v: &mut Violations, len: usize) {
        let max = self.shared.limits.max_request_bytes;
        if len > max {
            v.add("request", format!("larger than the limit of {max} bytes"));
        }
    }

    fn check_count(&self, v: &mut Violations, what: &str, n: usize) {
        let max = self.shared.limits.max_batch_items;
        if n == 0 {
            v.add(what, "at least one item is required");
        } else if n > max {
            v.add(what, format!("more than the limit of {max} items"));
        }
    }

    fn check_value(&self, v: &mut Violations, at: String, value: &str) -> bool {
        let max = self.shared.limits.max_value_bytes;
        if value.len() > max {
            v.add(at, format!("longer than the limit of {max} bytes"));
            false
        } else {
            true
        }
    }

    /// The declared field called `name`, or a violation at `at`.
    fn field<'s>(
        v: &mut Violations,
        at: String,
        schema: &'s Schema,
        name: &str,
    ) -> Option<&'s Arc<FieldDef>> {
        if name.is_empty() {
            v.add(at, "a field name is required");
            return None;
        }
        let def = schema.field(name);
        if def.is_none() {
            v.add(at, "unknown field (not declared in the schema)");
        }
        def
    }

    /// `value` within the byte limit and valid for `field`, canonical; or a
    /// violation at `at`. With `store_at` (Unix seconds), the value is about
    /// to be stored then: a card expiry must not be in the past.
    fn value(
        &self,
        v: &mut Violations,
        at: String,
        field: &FieldDef,
        value: &str,
        store_at: Option<i64>,
    ) -> Option<Zeroizing<String>> {
        if self.check_value(v, at.clone(), value) {
            match store_at {
                Some(now) => v.check(at, field.normalize_to_store(value, now)),
                None => v.check(at, field.normalize(value)),
            }
        } else {
            None
        }
    }
}

/// The policy context of a stored subject.
fn subject_context(schema: &Schema, record: &SubjectRecord) -> SubjectContext {
    SubjectContext::new(
        schema,
        record.purposes.iter().map(String::as_str),
        record.restricted,
        &record.policy_version,
    )
}

/// A card number's brand, for the response.
fn card_brand(field: &FieldDef, canonical: &str) -> Option<&'static str> {
    (field.validator == Validator::CardNumber).then(|| Brand::of(canonical).name())
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
            (None, _) if !card_given => v.add(
                format!("fields[{at}].field"),
                "a CVV is accepted only together with a card number in the same request",
            ),
            // An invalid card number or CVV is reported already.
            _ => {}
        }
    }
}

fn log_done(rpc: &'static str, items: usize, started: Instant, r: &Result<impl Sized, Error>) {
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    match r {
        Ok(_) => tracing::debug!(rpc, items, micros, "ok"),
        Err(e) => tracing::info!(rpc, items, micros, error = %e, "failed"),
    }
}

#[tonic::async_trait]
impl TokenService for TokenApi {
    async fn tokenize(
        &self,
        request: Request<TokenizeRequest>,
    ) -> Result<Response<TokenizeResponse>, Status> {
        let started = Instant::now();
        let who = principal(&request);
        let mut ev = base_event(&request, who.as_deref().ok());
        let mut req = request.into_inner();
        let n = req.fields.len();
        let r = async {
            let who = who?;
            let mut v = Violations::default();
            self.check_size(&mut v, req.encoded_len());
            let subject = v.check("subject_id", SubjectId::parse(&req.subject_id));
            self.check_count(&mut v, "fields", n);
            let schema = self.shared.engine.schema().clone();
            let now = self.shared.engine.clock().now();
            let mut seen = HashSet::new();
            // Each CVV's place in the request and in `values`, to check it
            // against its card below.
            let mut cvvs = Vec::new();
            let mut card_given = false;
            let mut values = Vec::with_capacity(n.min(self.shared.limits.max_batch_items));
            for (i, fv) in req
                .fields
                .iter()
                .enumerate()
                .take(self.shared.limits.max_batch_items)
            {
                let Some(def) =
                    Self::field(&mut v, format!("fields[{i}].field"), &schema, &fv.field)
                else {
                    continue;
                };
                if !seen.insert(def.name.as_str()) {
                    v.add(format!("fields[{i}].field"), "field given more than once");
                    continue;
                }
                card_given |= def.validator == Validator::CardNumber;
                let value =
                    self.value(&mut v, format!("fields[{i}].value"), def, &fv.value, Some(now));
                if def.memory_only() {
                    cvvs.push((i, value.as_ref().map(|_| values.len())));
                }
                if let Some(value) = value {
                    values.push(NewValue {
                        field: def.clone(),
                        value,
                    });
                }
            }
            check_cvvs(&mut v, &values, &cvvs, card_given);
            let mut purposes = Vec::with_capacity(req.purposes.len());
            for (i, p) in req.purposes.iter().enumerate().take(64) {
                purposes.extend(declared_purpose(
                    &mut v,
                    &format!("purposes[{i}]"),
                    &schema,
                    p,
                ));
            }
            if req.purposes.len() > 64 {
                v.add("purposes", "more than 64 purposes");
            }
            let policy_version =
                v.check("policy_version", PolicyVersion::parse(&req.policy_version));
            let travel_end = v
                .check("travel_end_date", TravelEnd::parse(&req.travel_end_date))
                .flatten();
            v.finish()?;
            let (Some(subject), Some(policy_version)) = (subject, policy_version) else {
                return Err(Error::state("validated input missing"));
            };
            // The context of what is being collected: the consent given with it.
            let ctx = SubjectContext::new(
                &schema,
                purposes.iter().map(Purpose::as_str),
                false,
                policy_version.as_str(),
            );
            let policy = self.shared.policy.snapshot();
            if let Some(denied) = values
                .iter()
                .find(|nv| !policy.allows_field(&who, Action::Tokenize, &nv.field, "", &ctx))
            {
                tracing::info!(principal = %who.name, role = %who.role, field = %denied.field.name, "tokenize denied");
                return Err(Error::PermissionDenied);
            }
            ev.action = "tokenize".into();
            ev.subject_id = subject.as_str().to_owned();
            // A value stored again keeps its token only for a caller that
            // could see it in clear or look it up for some purpose anyway
            // (PCI DSS 3.4.1): to anyone else, the same token back would
            // confirm a guess.
            let may_dedupe = |field: &FieldDef, record: &SubjectRecord| {
                let ctx = subject_context(&schema, record);
                field.purposes.iter().any(|p| {
                    policy.allows_field(&who, Action::RevealPlain, field, p, &ctx)
                        || policy.allows_field(&who, Action::Lookup, field, p, &ctx)
                })
            };
            let collect = Collect {
                purposes: &purposes,
                policy_version: &policy_version,
                travel_end,
                may_set_consent: self.shared.policy.allows(&who, Action::SetConsent),
                may_dedupe: &may_dedupe,
            };
            let tokens = self
                .shared
                .engine
                .tokenize(&subject, &values, &collect, Some(self.shared.audited(&ev)))
                .await?;
            Ok(TokenizeResponse {
                tokens: values
                    .iter()
                    .zip(tokens)
                    .map(|(nv, t)| FieldToken {
                        field: nv.field.name.clone(),
                        token: t.as_str().to_owned(),
                        brand: card_brand(&nv.field, &nv.value).unwrap_or_default().into(),
                    })
                    .collect(),
            })
        }
        .await;
        // The request's copies of the values (CVVs among them) go now, not
        // whenever the allocator reuses the memory.
        for f in &mut req.fields {
            f.value.zeroize();
        }
        let r = self.shared.conclude_written(ev, r).await;
        log_done("Tokenize", n, started, &r);
        Ok(Response::new(r?))
    }

    async fn detokenize(
        &self,
        request: Request<DetokenizeRequest>,
    ) -> Result<Response<DetokenizeResponse>, Status> {
        let started = Instant::now();
        let who = principal(&request);
        let mut ev = base_event(&request, who.as_deref().ok());
        let mut req = request.into_inner();
        let n = req.tokens.len();
        let mut held_cvvs = Vec::new();
        let r = async {
            let who = who?;
            let mut v = Violations::default();
            self.check_size(&mut v, req.encoded_len());
            self.check_count(&mut v, "tokens", n);
            let schema = self.shared.engine.schema().clone();
            let purpose = declared_purpose(&mut v, "purpose", &schema, &req.purpose);
            let mut tokens = Vec::with_capacity(n.min(self.shared.limits.max_batch_items));
            for (i, t) in std::mem::take(&mut req.tokens)
                .into_iter()
                .enumerate()
                .take(self.shared.limits.max_batch_items)
            {
                // The field's name is only written out for a bad token; a
                // good one keeps the request's string.
                match Token::parse_owned(t) {
                    Some(t) => tokens.push(t),
                    None => v.add(format!("tokens[{i}]"), "malformed token"),
                }
            }
            v.finish()?;
            let Some(purpose) = purpose else {
                return Err(Error::state("validated input missing"));
            };
            ev.action = "reveal".into();
            ev.purpose = purpose.as_str().to_owned();
            let policy = self.shared.policy.snapshot();
            // Tokens of one request mostly share a subject: build its policy
            // context once (records are not copied during a request, so the
            // address identifies the record).
            let mut last: Option<(usize, SubjectContext)> = None;
            let found = self
                .shared
                .engine
                .detokenize(&tokens, |field, record| {
                    let at = std::ptr::from_ref::<SubjectRecord>(record).addr();
                    let ctx = match &mut last {
                        Some((p, ctx)) if *p == at => ctx,
                        slot => &slot.insert((at, subject_context(&schema, record))).1,
                    };
                    policy.reveal(&who, field, purpose.as_str(), ctx)
                })
                .await?;
            ev.items = tokens
                .iter()
                .zip(&found)
                .map(|(t, f)| {
                    let (field, subject, disclosure) = match f {
                        Found::Value {
                            field,
                            subject,
                            reveal,
                            ..
                        } => (
                            field.name.as_str(),
                            &**subject,
                            reveal.disclosure().as_str_name(),
                        ),
                        Found::Denied { field, subject } => {
                            (field.name.as_str(), &**subject, "DENIED")
                        }
                        Found::Expired { field, subject } => {
                            (field.name.as_str(), &**subject, "EXPIRED")
                        }
                        Found::Erased { field } => (field.name.as_str(), "", "ERASED"),
                        Found::NotFound => ("", "", "NOT_FOUND"),
                    };
                    AuditItem {
                        field: field.to_owned(),
                        token: t.as_str().to_owned(),
                        disclosure: disclosure.into(),
                        subject_id: subject.to_owned(),
                    }
                })
                .collect();
            let mut values = Vec::with_capacity(found.len());
            for (t, f) in tokens.into_iter().zip(found) {
                values.push(match f {
                    Found::Value {
                        field,
                        reveal,
                        mut value,
                        brand,
                        held,
                        ..
                    } => {
                        held_cvvs.extend(held);
                        Disclosed {
                            token: t.into_string(),
                            field: field.name.clone(),
                            disclosure: reveal.disclosure() as i32,
                            // Moved, not copied: one copy fewer to wipe.
                            value: std::mem::take(&mut *value),
                            brand: brand.unwrap_or_default().to_owned(),
                        }
                    }
                    // The caller may see this field, so it may know that the
                    // value is gone.
                    Found::Expired { field, .. } => Disclosed {
                        token: t.into_string(),
                        field: field.name.clone(),
                        disclosure: Disclosure::Expired as i32,
                        value: String::new(),
                        brand: String::new(),
                    },
                    Found::Erased { field } => Disclosed {
                        token: t.into_string(),
                        field: field.name.clone(),
                        disclosure: Disclosure::Erased as i32,
                        value: String::new(),
                        brand: String::new(),
                    },
                    // A denied token and a token that does not exist get
                    // the same answer, without even the field's name: a
                    // caller learns nothing of data it may not see.
                    Found::Denied { .. } | Found::NotFound => Disclosed {
                        token: t.into_string(),
                        field: String::new(),
                        disclosure: Disclosure::Denied as i32,
                        value: String::new(),
                        brand: String::new(),
                    },
                });
            }
            Ok(DetokenizeResponse { values })
        }
        .await;
        let r = self.shared.conclude(ev, r, true).await;
        if r.is_err() {
            // Nothing was disclosed: the CVVs wait for another try.
            self.shared.engine.put_back_cvv(held_cvvs);
        }
        log_done("Detokenize", n, started, &r);
        Ok(Response::new(r?))
    }

    async fn lookup(
        &self,
        request: Request<LookupRequest>,
    ) -> Result<Response<LookupResponse>, Status> {
        let started = Instant::now();
        let who = principal(&request);
        let mut ev = base_event(&request, who.as_deref().ok());
        let req = request.into_inner();
        let r = async {
            let who = who?;
            let mut v = Violations::default();
            self.check_size(&mut v, req.encoded_len());
            let schema = self.shared.engine.schema().clone();
            let purpose = declared_purpose(&mut v, "purpose", &schema, &req.purpose);
            let field = match Self::field(&mut v, "field".into(), &schema, &req.field) {
                Some(f) if !f.lookup => {
                    v.add("field", "not a look-up field");
                    None
                }
                other => other.cloned(),
            };
            let value = field
                .as_ref()
                .and_then(|f| self.value(&mut v, "value".into(), f, &req.value, None));
            v.finish()?;
            let (Some(field), Some(value), Some(purpose)) = (field, value, purpose) else {
                return Err(Error::state("validated input missing"));
            };
            // Refuse at once a caller the policy never lets look this field up
            // for this purpose (decided on the request alone, so the answer
            // says nothing of the data); then keep only the subjects whose own
            // context (consent, restriction) allows it.
            ev.action = "lookup".into();
            ev.purpose = purpose.as_str().to_owned();
            let policy = self.shared.policy.snapshot();
            let best_case = SubjectContext::new(&schema, [purpose.as_str()], false, "");
            if !policy.allows_field(&who, Action::Lookup, &field, purpose.as_str(), &best_case) {
                tracing::info!(principal = %who.name, role = %who.role, field = %field.name, "lookup denied");
                return Err(Error::PermissionDenied);
            }
            let tokens = self.shared.engine.lookup(&field, &value, |record| {
                policy.allows_field(
                    &who,
                    Action::Lookup,
                    &field,
                    purpose.as_str(),
                    &subject_context(&schema, record),
                )
            })?;
            debug_assert!(tokens.len() <= MAX_LOOKUP_RESULTS);
            ev.items = tokens
                .iter()
                .map(|t| AuditItem {
                    field: field.name.clone(),
                    token: t.as_str().to_owned(),
                    disclosure: "FOUND".into(),
                    subject_id: String::new(),
                })
                .collect();
            Ok(LookupResponse {
                tokens: tokens.into_iter().map(|t| t.as_str().to_owned()).collect(),
            })
        }
        .await;
        let r = self.shared.conclude(ev, r, true).await;
        log_done("Lookup", 1, started, &r);
        Ok(Response::new(r?))
    }

    async fn update(
        &self,
        request: Request<UpdateRequest>,
    ) -> Result<Response<UpdateResponse>, Status> {
        let started = Instant::now();
        let who = principal(&request);
        let mut ev = base_event(&request, who.as_deref().ok());
        let req = request.into_inner();
        let r = async {
            let who = who?;
            let mut v = Violations::default();
            self.check_size(&mut v, req.encoded_len());
            let token = v.check("token", Token::parse(&req.token).ok_or("malformed token"));
            let schema = self.shared.engine.schema().clone();
            let purpose = declared_purpose(&mut v, "purpose", &schema, &req.purpose);
            self.check_value(&mut v, "value".into(), &req.value);
            v.finish()?;
            let (Some(token), Some(purpose)) = (token, purpose) else {
                return Err(Error::state("validated input missing"));
            };
            ev.action = "update".into();
            ev.purpose = purpose.as_str().to_owned();
            let policy = &self.shared.policy;
            let now = self.shared.engine.clock().now();
            let version = self
                .shared
                .engine
                .update(&token, |field, record| {
                    let ctx = subject_context(&schema, record);
                    if !policy.allows_field(&who, Action::Update, field, purpose.as_str(), &ctx) {
                        tracing::info!(principal = %who.name, role = %who.role, field = %field.name, "update denied");
                        return Err(Error::PermissionDenied);
                    }
                    if field.memory_only() {
                        return Err(Error::FailedPrecondition(
                            "a CVV cannot be corrected: tokenize it again with its card",
                        ));
                    }
                    if field.validator == Validator::CardNumber {
                        // The token keeps the number's last four digits.
                        return Err(Error::FailedPrecondition(
                            "a card number cannot be corrected: tokenize the new card",
                        ));
                    }
                    field
                        .normalize_to_store(&req.value, now)
                        .map_err(|e| Error::invalid("value", e))
                }, Some(self.shared.audited(&ev)))
                .await
                // An unknown token is refused like a forbidden one.
                .map_err(|e| match e {
                    Error::NotFound(_) => Error::PermissionDenied,
                    other => other,
                })?;
            Ok(UpdateResponse {
                token: token.as_str().to_owned(),
                value_version: version,
            })
        }
        .await;
        let r = self.shared.conclude_written(ev, r).await;
        log_done("Update", 1, started, &r);
        Ok(Response::new(r?))
    }
}
