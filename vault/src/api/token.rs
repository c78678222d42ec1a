//! `vault.v1.TokenService`.

use super::requests::{ValidDetokenize, ValidLookup, ValidTokenize, ValidUpdate};
use super::{Shared, base_event, principal};
use crate::audit::AuditItem;
use crate::cards::Brand;
use crate::engine::Collect;
use crate::engine::records::SubjectRecord;
use crate::engine::{Found, MAX_LOOKUP_RESULTS};
use crate::error::Error;
use crate::model::Purpose;
use crate::policy::{Action, SubjectContext};
use crate::schema::{FieldDef, Schema, Validator};
use std::sync::Arc;
use std::time::Instant;
use tonic::{Request, Response, Status};
use vault_proto::v1::token_service_server::TokenService;
use vault_proto::v1::{
    DetokenizeRequest, DetokenizeResponse, Disclosed, Disclosure, FieldToken, LookupRequest,
    LookupResponse, TokenizeRequest, TokenizeResponse, UpdateRequest, UpdateResponse,
};
use zeroize::Zeroize;

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
            let schema = self.shared.engine.schema().clone();
            let now = self.shared.engine.clock().now();
            let ValidTokenize {
                subject,
                values,
                purposes,
                policy_version,
                travel_end,
            } = ValidTokenize::parse(&req, &schema, &self.shared.limits, now)?;
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
        let req = request.into_inner();
        let n = req.tokens.len();
        let mut held_cvvs = Vec::new();
        let r = async {
            let who = who?;
            let schema = self.shared.engine.schema().clone();
            let ValidDetokenize { purpose, tokens } =
                ValidDetokenize::parse(req, &schema, &self.shared.limits)?;
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
            let schema = self.shared.engine.schema().clone();
            let ValidLookup {
                purpose,
                field,
                value,
            } = ValidLookup::parse(&req, &schema, &self.shared.limits)?;
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
            let schema = self.shared.engine.schema().clone();
            let ValidUpdate {
                token,
                purpose,
                value,
            } = ValidUpdate::parse(req, &schema, &self.shared.limits)?;
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
                        .normalize_to_store(&value, now)
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
