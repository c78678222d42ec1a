//! Tokenize: validated values stored under the subject's data key, each
//! with its token and, for searchable fields, its blind index entry.

use super::*;

impl Engine {
    /// Stores `values` of `subject` and returns one token per value, in order.
    /// Values of look-up fields that the subject already has keep their
    /// token, for a caller that `collect.may_dedupe` allows; any other
    /// caller gets a new token for every value.
    ///
    /// A value token carries its subject's key slot, its field's number
    /// and a counter ([`crate::tokens::locator`]); a card token gets a
    /// pointer. Writes the key slot and the pointers first and the subject
    /// record last: the subject record is the commit.
    pub async fn tokenize(
        &self,
        subject: &SubjectId,
        values: &[NewValue],
        collect: &Collect<'_>,
        mut audit: Option<Audited<'_>>,
    ) -> Result<Vec<Token>> {
        let Collect {
            purposes,
            policy_version,
            travel_end,
            may_set_consent,
            may_dedupe,
        } = *collect;
        let sid = subject.as_str();
        // Field numbers first (a field's first token ever waits for its
        // number to be durable), outside the subject's lock.
        let mut numbers = Vec::with_capacity(values.len());
        for nv in values {
            // A card token carries nothing (it keeps the number's shape).
            numbers.push(if nv.field.validator == Validator::CardNumber {
                None
            } else {
                Some(self.field_number(&nv.field.name).await?)
            });
        }
        let _guard = self.lock_for(sid).lock().await;
        let now = self.clock.now();
        let mut batch = Batch::new();
        let existing = self.subject_record(sid)?;
        // A new subject has no committed entries, so no index entry of its
        // can be live: skip the dedupe reads.
        let is_new = existing.is_none();
        let mut record = match &existing {
            Some(r) => SubjectRecord::clone(r),
            None => {
                self.check_wrapping()?;
                let (_, wrapped) = self.keyring.new_dek(sid, 1).map_err(crypto)?;
                let slot = self.allocate_slot()?;
                batch.put_key(slot, 1, wrapped.clone());
                batch.put(keys::slot(slot), sid.as_bytes().to_vec());
                SubjectRecord {
                    deks: vec![WrappedDek {
                        version: 1,
                        wrapped,
                        encryptions: 0,
                    }],
                    active_dek: 1,
                    created_at: now,
                    created_at_micros: self.creation_micros(sid)?,
                    slot,
                    ..Default::default()
                }
            }
        };
        // Values past their retention are shredded before this request's
        // activity is recorded (it must not revive them), and the dedupe
        // below then finds none of them.
        self.settle_expired(sid, &mut record, &mut batch, now)?;
        // Consent given with the values: a new subject's is collected with
        // them; an existing subject's changes only for a caller that may set
        // consent. For any other caller it is left as held (not refused, so
        // that the answer does not tell whether the guess matched), and the
        // event says so.
        let mut given: Vec<String> = purposes.iter().map(|p| p.as_str().to_owned()).collect();
        given.sort();
        given.dedup();
        let mut held = record.purposes.clone();
        held.sort();
        let purposes_differ = !purposes.is_empty() && given != held;
        let version_differs =
            !policy_version.as_str().is_empty() && record.policy_version != policy_version.as_str();
        let consent_asked = !is_new && (purposes_differ || version_differs);
        let consent_changed = consent_asked && may_set_consent;
        if is_new || consent_changed {
            if !purposes.is_empty() {
                record.purposes = given;
            }
            if !policy_version.as_str().is_empty() {
                record.policy_version = policy_version.as_str().to_owned();
            }
        }
        if record.entries.len().saturating_add(values.len()) > MAX_SUBJECT_ENTRIES {
            return Err(Error::ResourceExhausted(
                "the subject holds the most values a subject may hold",
            ));
        }
        let mut dek = self.dek_of(sid, &record, record.active_dek)?;
        let cvvs = values.iter().filter(|nv| nv.field.memory_only()).count();
        if cvvs > 0 && !self.cvv.has_room(cvvs) {
            return Err(Error::ResourceExhausted(
                "too many CVVs are waiting for authorisation; try again later",
            ));
        }
        // Who stores the values: the audited caller.
        let (by, by_role) = audit
            .as_ref()
            .map(|a| (a.event.principal.clone(), a.event.role.clone()))
            .unwrap_or_default();
        let mut out = Vec::with_capacity(values.len());
        let mut keep_in_memory = Vec::with_capacity(cvvs);
        for (nv, number) in values.iter().zip(numbers) {
            let field = &nv.field;
            if field.memory_only() {
                // The record keeps that the token exists, never the value.
                let token = self.mint(&mut record, number)?;

                record.entries.push(FieldEntry {
                    token: token.as_str().to_owned(),
                    field: field.name.clone(),
                    value_version: 1,
                    dek_version: dek.version(),
                    ciphertext: Vec::new(),
                    created_at: now,
                    updated_at: now,
                    blind: Vec::new(),
                    stored_by: by.clone(),
                    stored_by_role: by_role.clone(),
                    ..Default::default()
                });
                keep_in_memory.push((token.clone(), nv.value.clone()));
                out.push(token);
                continue;
            }
            let blind = field.lookup.then(|| self.blind(field, &nv.value));
            if let Some(blind) = &blind
                && !is_new
                && may_dedupe(field, &record)
                && let Some(existing) = self.store.get(&keys::index(blind, sid))?
            {
                let existing = String::from_utf8(existing)
                    .ok()
                    .and_then(|t| Token::parse(&t));
                let live = existing.filter(|t| {
                    record
                        .entry(t.as_str())
                        // Not one found expired under a legal hold: it
                        // would answer EXPIRED once the hold is lifted.
                        .is_some_and(|e| {
                            e.field == field.name && e.expired_at == 0 && ct_eq(&e.blind, blind)
                        })
                });
                if let Some(token) = live {
                    out.push(token);
                    continue;
                }
            }
            let pointer = number.is_none();
            let token = match number {
                Some(n) => self.mint(&mut record, Some(n))?,
                None => {
                    let t = self.free_card_token(&nv.value, &out)?;
                    batch.put(keys::token(t.as_str()), sid.as_bytes().to_vec());
                    t
                }
            };
            dek = self.sealing_dek(sid, &mut record, Some(dek), &mut batch)?;
            let ciphertext = dek
                .seal(
                    &field_context(sid, &field.name, token.as_str(), 1),
                    nv.value.as_bytes(),
                )
                .map_err(crypto)?;
            if let Some(blind) = &blind {
                batch.put(keys::index(blind, sid), token.as_str().as_bytes().to_vec());
            }
            record.entries.push(FieldEntry {
                token: token.as_str().to_owned(),
                field: field.name.clone(),
                value_version: 1,
                dek_version: dek.version(),
                ciphertext,
                created_at: now,
                updated_at: now,
                blind: blind.map(|b| b.to_vec()).unwrap_or_default(),
                stored_by: by.clone(),
                stored_by_role: by_role.clone(),
                pointer,
                ..Default::default()
            });
            out.push(token);
        }
        record.last_activity = now;
        if let Some(t) = travel_end {
            record.travel_end = t.0;
        }
        if let Some(a) = audit.as_mut() {
            a.event.items = values
                .iter()
                .zip(&out)
                .map(|(nv, t)| item(&nv.field.name, t.as_str(), "STORED", sid))
                .collect();
            if consent_asked && !consent_changed {
                a.event.detail =
                    "consent given with the values not applied: changing a stored subject's consent needs set_consent".into();
            }
            if consent_changed {
                a.event.detail = format!(
                    "consent changed by tokenize: purposes [{}] policy_version {}",
                    record.purposes.join(","),
                    record.policy_version
                );
            }
        }
        self.commit_subject(sid, existing.as_deref(), record, batch, audit)
            .await?;
        let subject: Arc<str> = Arc::from(sid);
        for (token, value) in keep_in_memory {
            self.cvv.put(token.as_str(), subject.clone(), value, now);
        }
        Ok(out)
    }
}
