//! Update (GDPR 16 correction): a new value under the same token, the old
//! one gone, and the subject re-keyed so that no copy of it can be opened.

use super::*;

impl Engine {
    /// Replaces the value behind `token` with the canonical value `validate`
    /// makes for the token's field (given the subject's record; it may also
    /// refuse). Refused under a legal hold, which keeps the held value.
    /// Returns the new value version.
    pub async fn update(
        &self,
        token: &Token,
        validate: impl FnOnce(&FieldDef, &SubjectRecord) -> Result<Zeroizing<String>>,
        mut audit: Option<Audited<'_>>,
    ) -> Result<u32> {
        let Some(sid) = self.token_subject(token)? else {
            return Err(Error::NotFound("token"));
        };
        let _guard = self.lock_for(&sid).lock().await;
        let current = self.subject_record(&sid)?.ok_or(Error::NotFound("token"))?;
        let mut record = SubjectRecord::clone(&current);
        let field_name = record
            .entry(token.as_str())
            .map(|e| e.field.clone())
            .ok_or(Error::NotFound("token"))?;
        let field = self
            .schema
            .field(&field_name)
            .cloned()
            .ok_or(Error::NotFound("token"))?;
        let value = validate(&field, &record)?;
        // A legal hold preserves what is held as it is (asked after the
        // caller's own checks, so that only a caller who may correct the
        // value learns of the hold).
        if !record.legal_hold_case.is_empty() {
            return Err(Error::FailedPrecondition(
                "the subject is under a legal hold: its values are kept as they are until it is released",
            ));
        }
        let now = self.clock.now();
        if record
            .entry(token.as_str())
            .is_some_and(|e| self.is_expired(&record, e, now))
        {
            return Err(Error::FailedPrecondition(
                "the value is past its retention: store it again with Tokenize",
            ));
        }
        let mut batch = Batch::new();
        self.settle_expired(&sid, &mut record, &mut batch, now)?;
        // GDPR 16: the subject is re-keyed (its other values sealed again
        // under a new key, the old key shredded once this commits), so that
        // a copy of the old value wherever it lingers cannot be opened.
        let dek = self.rekey_in(&sid, &mut record, &mut batch)?;
        count_encryption(&mut record);
        let mut stale_index = None;
        let entry = record
            .entry_mut(token.as_str())
            .ok_or(Error::NotFound("token"))?;
        let version = entry
            .value_version
            .checked_add(1)
            .ok_or(Error::FailedPrecondition("too many corrections"))?;
        if field.lookup {
            let blind = self.blind(&field, &value);
            if !ct_eq(&entry.blind, &blind)
                && let Ok(old) = <[u8; 32]>::try_from(entry.blind.as_slice())
            {
                let old_key = keys::index(&old, &sid);
                // Another token of the subject may have taken the entry over.
                if self
                    .store
                    .get(&old_key)?
                    .is_some_and(|t| ct_eq(&t, token.as_str().as_bytes()))
                {
                    stale_index = Some(old_key);
                }
            }
            batch.put(
                keys::index(&blind, &sid),
                token.as_str().as_bytes().to_vec(),
            );
            entry.blind = blind.to_vec();
        }
        entry.ciphertext = dek
            .seal(
                &field_context(&sid, &field.name, token.as_str(), version),
                value.as_bytes(),
            )
            .map_err(crypto)?;
        entry.value_version = version;
        entry.dek_version = dek.version();
        entry.updated_at = now;
        if let Some(a) = audit.as_ref() {
            entry.updated_by.clone_from(&a.event.principal);
            entry.updated_by_role.clone_from(&a.event.role);
        }
        record.last_activity = now;
        if let Some(a) = audit.as_mut() {
            a.event.items = vec![item(&field.name, token.as_str(), "UPDATED", &sid)];
            a.event.subject_id = sid.to_string();
        }
        self.commit_subject(&sid, Some(&current), record, batch, audit)
            .await?;
        // The old key must not outlive its slot in memory either.
        self.keyring.forget_subject(&sid);
        // The old index entry goes after the commit: until then it still
        // points at the committed old value. It is only a hint (every read
        // checks it), so a failure here is logged, not returned.
        if let Some(k) = stale_index {
            let mut cleanup = Batch::new();
            cleanup.delete(k);
            if let Err(e) = self.store.commit(cleanup).await {
                tracing::warn!(error = %e, "could not remove a stale index entry");
            }
        }
        Ok(version)
    }
}
