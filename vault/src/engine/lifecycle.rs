//! A subject's lifecycle: consent, restriction (GDPR 18), legal holds and
//! erasure by crypto-shredding (GDPR 17).

use super::records::SubjectRecord;
use super::{Audited, Engine};
use crate::error::{Error, Result};
use crate::model::{PolicyVersion, Purpose, SubjectId};
use crate::store::{Batch, keys};
use prost::Message;
use vault_proto::v1::ErasureReceiptBody;

impl Engine {
    /// Changes `subject`'s record with `change` (which may refuse) under the
    /// subject's lock, and commits it with `audit`'s event first. Returns
    /// what `change` returned. `NOT_FOUND` if the subject holds nothing.
    async fn change_subject<T>(
        &self,
        subject: &SubjectId,
        audit: Option<Audited<'_>>,
        change: impl FnOnce(&mut SubjectRecord, i64) -> Result<T>,
    ) -> Result<T> {
        let sid = subject.as_str();
        let _guard = self.lock_for(sid).lock().await;
        let current = self
            .subject_record(sid)?
            .ok_or(Error::NotFound("subject"))?;
        let mut record = SubjectRecord::clone(&current);
        let now = self.clock.now();
        let mut batch = Batch::new();
        self.settle_expired(sid, &mut record, &mut batch, now)?;
        let out = change(&mut record, now)?;
        self.commit_subject(sid, Some(&current), record, batch, audit)
            .await?;
        Ok(out)
    }

    /// Adds `grant` to and removes `withdraw` from the purposes `subject`
    /// consented to, and sets the policy version if one is given. Returns the
    /// consented purposes (sorted) and the policy version after the change.
    pub async fn set_consent(
        &self,
        subject: &SubjectId,
        grant: &[Purpose],
        withdraw: &[Purpose],
        policy_version: &PolicyVersion,
        audit: Option<Audited<'_>>,
    ) -> Result<(Vec<String>, String)> {
        self.change_subject(subject, audit, |record, now| {
            let mut purposes: std::collections::BTreeSet<String> =
                record.purposes.iter().cloned().collect();
            for p in grant {
                purposes.insert(p.as_str().to_owned());
            }
            for p in withdraw {
                purposes.remove(p.as_str());
            }
            record.purposes = purposes.into_iter().collect();
            if !policy_version.as_str().is_empty() {
                record.policy_version = policy_version.as_str().to_owned();
            }
            record.last_activity = now;
            Ok((record.purposes.clone(), record.policy_version.clone()))
        })
        .await
    }

    /// Restricts processing of `subject` (or lifts the restriction).
    pub async fn set_restricted(
        &self,
        subject: &SubjectId,
        restricted: bool,
        audit: Option<Audited<'_>>,
    ) -> Result<bool> {
        self.change_subject(subject, audit, |record, _| {
            record.restricted = restricted;
            Ok(restricted)
        })
        .await
    }

    /// Sets (`hold`) a legal hold on `subject` for `case_id` with `reason`,
    /// or releases it (`case_id` empty, or the held case). One case at a
    /// time: a hold for another case is refused until the first is released.
    /// Returns the case held or released.
    pub async fn set_legal_hold(
        &self,
        subject: &SubjectId,
        hold: bool,
        case_id: &str,
        reason: &str,
        audit: Option<Audited<'_>>,
    ) -> Result<String> {
        self.change_subject(subject, audit, |record, now| {
            let held = &record.legal_hold_case;
            if hold {
                if !held.is_empty() && held != case_id {
                    return Err(Error::FailedPrecondition(
                        "the subject is under a legal hold for another case",
                    ));
                }
                record.legal_hold_case = case_id.to_owned();
                record.legal_hold_reason = reason.to_owned();
                record.legal_hold_since = now;
                Ok(case_id.to_owned())
            } else if held.is_empty() {
                Err(Error::FailedPrecondition(
                    "the subject is not under a legal hold",
                ))
            } else if !case_id.is_empty() && held != case_id {
                Err(Error::FailedPrecondition(
                    "the subject is under a legal hold for another case",
                ))
            } else {
                record.legal_hold_reason.clear();
                record.legal_hold_since = 0;
                Ok(std::mem::take(&mut record.legal_hold_case))
            }
        })
        .await
    }

    /// Erases `subject`: in one batch, writes its erasure journal entry,
    /// turns the pointer of its key slot (and of its card tokens) into a
    /// tombstone (so that its tokens answer `ERASED`), deletes its index
    /// entries and its record (every ciphertext) and shreds its key slot:
    /// the slot is overwritten with zeros and synced once the rest is
    /// durable, before Erase returns. Copies of the record that sled's log
    /// still holds can then be opened by nobody (the crypto-shredding).
    /// Pending CVVs and the subject's cached data keys are wiped.
    /// Refused under a legal hold. Returns what was destroyed.
    pub async fn erase(
        &self,
        subject: &SubjectId,
        reason: &str,
        audit: Option<Audited<'_>>,
    ) -> Result<ErasureReceiptBody> {
        let sid = subject.as_str();
        let _guard = self.lock_for(sid).lock().await;
        let record = self
            .subject_record(sid)?
            .ok_or(Error::NotFound("subject"))?;
        if !record.legal_hold_case.is_empty() {
            return Err(Error::FailedPrecondition(
                "the subject is under a legal hold: release it first",
            ));
        }
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let body = ErasureReceiptBody {
            subject_id: sid.to_owned(),
            erased_at_unix_micros: self.clock.now_micros(),
            fields: count(
                record
                    .entries
                    .iter()
                    .filter(|e| !e.ciphertext.is_empty())
                    .count(),
            ),
            tokens: count(record.entries.len()),
            index_entries: count(
                record
                    .entries
                    .iter()
                    .filter(|e| !e.blind.is_empty())
                    .count(),
            ),
            keys: count(record.deks.len()),
            reason: reason.to_owned(),
        };
        let mut batch = Batch::new();
        batch.put(keys::erased(sid), body.encode_to_vec());
        batch.extend(unlink_all(self.store.as_ref(), sid)?);
        batch.extend(shred(sid, &record));
        let batch = self.guarded(sid, Some(&record), batch);
        let write = async { self.store.commit(batch).await.map_err(Error::from) };
        let audit = audit.map(|mut a| {
            let counts = erasure_detail(&body);
            a.event.detail = if a.event.detail.is_empty() {
                counts
            } else {
                format!("{} ({counts})", a.event.detail)
            };
            a
        });
        let result = crate::model::journal::commit(audit, write).await;
        // Whatever the outcome, nothing cached may outlive the attempt: no
        // record and no data key (a failed erasure unwraps it again).
        self.cache.forget_subject(sid);
        self.keyring.forget_subject(sid);
        let now = self.clock.now();
        for e in &record.entries {
            self.cache.forget_pointer(&e.token);
            drop(self.cvv.take(&e.token, sid, now));
        }
        result?;
        Ok(body)
    }

    /// Links travel companion `companion` to the account holder `holder`
    /// who supplied its data, with the holder's `attestation` of the
    /// companion's consent, or (`holder` `None`) removes its link. Both must
    /// hold data. Returns the holder now linked ("" after unlinking).
    pub async fn link_companion(
        &self,
        companion: &SubjectId,
        holder: Option<&SubjectId>,
        attestation: &str,
        audit: Option<Audited<'_>>,
    ) -> Result<String> {
        let cid = companion.as_str();
        if let Some(h) = holder
            && self.subject_record(h.as_str())?.is_none()
        {
            return Err(Error::NotFound("account holder"));
        }
        let _guard = self.lock_for(cid).lock().await;
        let current = self
            .subject_record(cid)?
            .ok_or(Error::NotFound("subject"))?;
        let mut record = SubjectRecord::clone(&current);
        let mut batch = Batch::new();
        if !record.account_holder.is_empty() {
            batch.delete(keys::companion(&record.account_holder, cid));
        }
        match holder {
            Some(h) => {
                batch.put(keys::companion(h.as_str(), cid), Vec::new());
                record.account_holder = h.as_str().to_owned();
                record.holder_attestation = attestation.to_owned();
                record.linked_at = self.clock.now();
                record.linked_by = audit
                    .as_ref()
                    .map(|a| a.event.principal.clone())
                    .unwrap_or_default();
            }
            None => {
                record.account_holder.clear();
                record.holder_attestation.clear();
                record.linked_at = 0;
                record.linked_by.clear();
            }
        }
        let linked = record.account_holder.clone();
        self.commit_subject(cid, Some(&current), record, batch, audit)
            .await?;
        Ok(linked)
    }

    /// Finishes the re-keys a crash interrupted: a key version whose shred
    /// was asked for is shredded if the subject's durable record no longer
    /// uses it (the re-key reached the disk), and the shred forgotten if it
    /// does (it did not). Returns how many were shredded.
    pub async fn finish_key_shreds(&self) -> Result<usize> {
        let mut shredded = 0;
        for (slot, version) in self.store.pending_key_shreds()? {
            let record = match self.slot_owner(slot)? {
                super::SlotOwner::Subject(sid) => match self.store.get(&keys::subject(&sid))? {
                    Some(bytes) => Some(super::decode::<SubjectRecord>(&bytes, "subject")?),
                    None => None,
                },
                _ => None,
            };
            let in_use = record
                .is_some_and(|r| r.slot == slot && r.deks.iter().any(|d| d.version == version));
            if in_use {
                self.store.forget_key_shred(slot, version)?;
            } else {
                let mut batch = Batch::new();
                batch.shred_key(slot, Some(version));
                self.store.commit(batch).await?;
                shredded += 1;
            }
        }
        Ok(shredded)
    }

    /// Finishes erasures the journal records but the store does not reflect
    /// yet (a crash between the journal and the record's removal, or a
    /// restored backup older than the erasure): shreds every journaled
    /// subject whose record is still present. Returns how many.
    pub async fn finish_erasures(&self) -> Result<usize> {
        let done = replay_erasures(self.store.as_ref()).await?;
        for sid in &done {
            self.cache.forget_subject(sid);
            self.keyring.forget_subject(sid);
        }
        Ok(done.len())
    }
}

/// Shreds every subject the erasure journal in `store` names whose record
/// is still there (and was stored before the erasure: a subject stored
/// again under the same id afterwards is a new subject and stays). Returns
/// the subjects shredded.
pub(crate) async fn replay_erasures(store: &dyn crate::store::Store) -> Result<Vec<String>> {
    let mut done = Vec::new();
    for (key, journal) in store.scan_prefix(keys::ERASED_PREFIX, usize::MAX)? {
        let Some(sid) = key
            .strip_prefix(keys::ERASED_PREFIX)
            .and_then(|s| std::str::from_utf8(s).ok())
        else {
            continue;
        };
        let erased_at =
            super::decode::<ErasureReceiptBody>(&journal, "erasure journal")?.erased_at_unix_micros;
        if let Some(bytes) = store.get(&keys::subject(sid))? {
            let record = super::decode::<SubjectRecord>(&bytes, "subject")?;
            if !record.predates(erased_at) {
                continue;
            }
            let mut batch = unlink_all(store, sid)?;
            batch.extend(shred(sid, &record));
            store.commit(batch).await?;
            done.push(sid.to_owned());
        }
    }
    Ok(done)
}

/// Deletes the links from `holder` to its companions (an erased holder
/// lists nobody; the companions keep their own data and the holder's id).
fn unlink_all(store: &dyn crate::store::Store, holder: &str) -> Result<Batch> {
    let mut batch = Batch::new();
    for (key, _) in store.scan_prefix(&keys::companions_of(holder), usize::MAX)? {
        batch.delete(key);
    }
    Ok(batch)
}

/// What erasing `record` of `sid` writes after the journal entry: a
/// tombstone for its key slot and each token pointer, no index entries, no
/// link to its account holder, no record, and its key slot shredded.
fn shred(sid: &str, record: &SubjectRecord) -> Batch {
    let mut batch = Batch::new();
    if !record.account_holder.is_empty() {
        batch.delete(keys::companion(&record.account_holder, sid));
    }
    for e in &record.entries {
        if e.pointer {
            batch.put(keys::token(&e.token), keys::tombstone(&e.field));
        }
        if let Ok(blind) = <[u8; keys::BLIND_LEN]>::try_from(e.blind.as_slice()) {
            batch.delete(keys::index(&blind, sid));
        }
    }
    batch.put(keys::slot(record.slot), vec![keys::TOMBSTONE]);
    batch.shred_key(record.slot, None);
    batch.delete(keys::subject(sid));
    batch
}

/// The audit detail of an erasure: counts only.
pub(crate) fn erasure_detail(body: &ErasureReceiptBody) -> String {
    format!(
        "fields={} tokens={} index_entries={} keys={}",
        body.fields, body.tokens, body.index_entries, body.keys
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store_email(engine: &Engine, sid: &SubjectId, email: &str) {
        crate::engine::test_store_email(engine, sid.as_str(), email).await;
    }

    /// A journaled erasure whose record survived (a crash, or a restored
    /// backup) is finished at the next start; a subject stored again under
    /// the same id after the erasure is left alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_erasure_journal_finishes_erasures() {
        let dir = tempfile::tempdir().unwrap();
        let engine = crate::engine::test_engine(dir.path()).await;
        let old = SubjectId::parse("old-1").unwrap();
        let new = SubjectId::parse("new-1").unwrap();
        store_email(&engine, &old, "old@example.com").await;
        store_email(&engine, &new, "new@example.com").await;
        let journal = |sid: &str, at: i64| {
            let mut b = Batch::new();
            let body = ErasureReceiptBody {
                subject_id: sid.into(),
                erased_at_unix_micros: at * 1_000_000,
                ..Default::default()
            };
            b.put(keys::erased(sid), body.encode_to_vec());
            b
        };
        let now = engine.clock().now();
        // "old-1" was erased after it was stored; "new-1" was stored again
        // after an erasure of the same id.
        engine
            .store()
            .commit(journal("old-1", now + 1))
            .await
            .unwrap();
        engine
            .store()
            .commit(journal("new-1", now - 10))
            .await
            .unwrap();
        assert_eq!(engine.finish_erasures().await.unwrap(), 1);
        assert!(
            engine
                .store()
                .get(&keys::subject("old-1"))
                .unwrap()
                .is_none()
        );
        assert!(
            engine
                .store()
                .get(&keys::subject("new-1"))
                .unwrap()
                .is_some()
        );
        assert_eq!(engine.finish_erasures().await.unwrap(), 0, "idempotent");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_legal_hold_blocks_erasure_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let engine = crate::engine::test_engine(dir.path()).await;
        let sid = SubjectId::parse("held-1").unwrap();
        store_email(&engine, &sid, "held@example.com").await;
        engine
            .set_legal_hold(&sid, true, "case-1", "dispute", None)
            .await
            .unwrap();
        assert!(matches!(
            engine
                .set_legal_hold(&sid, true, "case-2", "other", None)
                .await,
            Err(Error::FailedPrecondition(_))
        ));
        assert!(matches!(
            engine.erase(&sid, "asked", None).await,
            Err(Error::FailedPrecondition(_))
        ));
        assert!(matches!(
            engine
                .set_legal_hold(&sid, false, "case-2", "wrong case", None)
                .await,
            Err(Error::FailedPrecondition(_))
        ));
        assert_eq!(
            engine
                .set_legal_hold(&sid, false, "", "settled", None)
                .await
                .unwrap(),
            "case-1"
        );
        let body = engine.erase(&sid, "asked", None).await.unwrap();
        assert_eq!(
            (body.fields, body.tokens, body.index_entries, body.keys),
            (1, 1, 1, 1)
        );
        assert!(matches!(
            engine.erase(&sid, "again", None).await,
            Err(Error::NotFound(_))
        ));
    }

    /// Erasure leaves no key behind: the subject's cached DEK is dropped
    /// (wiped once its last user is done), a failed commit drops the keys
    /// it made, and a subject stored again under the same id gets a key of
    /// its own, never the erased one's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn erasure_leaves_no_key_behind() {
        use crate::engine::Found;
        use crate::model::Reveal;
        use crate::tokens::Token;
        let dir = tempfile::tempdir().unwrap();
        let engine = crate::engine::test_engine(dir.path()).await;
        let sid = SubjectId::parse("reused-1").unwrap();
        store_email(&engine, &sid, "first@example.com").await;
        let record = |e: &Engine| {
            SubjectRecord::decode(
                e.store()
                    .get(&keys::subject("reused-1"))
                    .unwrap()
                    .unwrap()
                    .as_slice(),
            )
            .unwrap()
        };
        let first = record(&engine);
        let old = Token::parse(&first.entries[0].token).unwrap();
        async fn reveal(e: &Engine, t: &Token) -> Option<String> {
            match e
                .detokenize(std::slice::from_ref(t), |_, _| Reveal::Plain)
                .await
                .unwrap()
                .remove(0)
            {
                Found::Value { value, .. } => Some(value.to_string()),
                Found::Erased { .. } => None,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            reveal(&engine, &old).await.as_deref(),
            Some("first@example.com")
        );
        assert_eq!(engine.keyring().cached_deks("reused-1"), 1);

        engine.erase(&sid, "asked", None).await.unwrap();
        assert_eq!(
            engine.keyring().cached_deks("reused-1"),
            0,
            "no key of an erased subject stays in memory"
        );
        assert_eq!(reveal(&engine, &old).await, None);

        // The same id again: a new subject with a key of its own.
        store_email(&engine, &sid, "second@example.com").await;
        let second = record(&engine);
        // A slot of its own, and the erased one's slot holds no key.
        assert_ne!(first.slot, second.slot);
        assert!(engine.store().keys(first.slot).unwrap().is_empty());
        assert_eq!(engine.store().keys(second.slot).unwrap().len(), 1);
        let new = Token::parse(&second.entries[0].token).unwrap();
        assert_eq!(
            reveal(&engine, &new).await.as_deref(),
            Some("second@example.com")
        );
        assert_eq!(reveal(&engine, &old).await, None);
        // Its value opens with the key its record holds, not a cached one.
        engine.keyring().forget_subject("reused-1");
        assert_eq!(
            reveal(&engine, &new).await.as_deref(),
            Some("second@example.com")
        );
    }

    /// A clock that stands still.
    #[derive(Debug)]
    struct Frozen(i64);

    impl crate::model::Clock for Frozen {
        fn now(&self) -> i64 {
            self.0
        }
    }

    /// A subject stored again under an erased id in the same second (here
    /// even the same microsecond: the clock stands still) is a new subject:
    /// the erasure journal does not shred it at the next start. A record
    /// made before records kept microseconds still counts as erased when it
    /// is of the erasure's second.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_subject_recreated_in_the_same_second_as_its_erasure_is_not_shredded_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_800_000_000;
        let engine =
            crate::engine::test_engine_with_clock(dir.path(), std::sync::Arc::new(Frozen(now)))
                .await;
        let sid = SubjectId::parse("again-1").unwrap();
        store_email(&engine, &sid, "first@example.com").await;
        engine.erase(&sid, "asked", None).await.unwrap();
        store_email(&engine, &sid, "second@example.com").await;
        assert_eq!(engine.finish_erasures().await.unwrap(), 0);
        let bytes = engine
            .store()
            .get(&keys::subject("again-1"))
            .unwrap()
            .expect("the new subject stays");
        let record = SubjectRecord::decode(bytes.as_slice()).unwrap();
        assert_eq!(record.created_at, now);
        assert!(record.created_at_micros > now * 1_000_000);

        // A record without microseconds, of the erasure's second: erased.
        let legacy = SubjectRecord {
            created_at: now,
            ..Default::default()
        };
        assert!(legacy.predates(now * 1_000_000 + 5));
        assert!(!legacy.predates(now * 1_000_000 - 1));
        assert!(!record.predates(now * 1_000_000));
    }

    /// Look-up reads every index entry of the value: subjects it may not
    /// return, however many sort first, do not hide the ones it may.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lookup_cannot_hide_a_subject_behind_256_index_entries() {
        let dir = tempfile::tempdir().unwrap();
        let engine = crate::engine::test_engine(dir.path()).await;
        for i in 0..300 {
            let sid = SubjectId::parse(&format!("s-{i:03}")).unwrap();
            store_email(&engine, &sid, "same@example.com").await;
        }
        let field = engine.schema().field("email").unwrap().clone();
        // Only the last ten subjects are the caller's to find (a record
        // does not hold its id: its key slot's pointer does).
        let found = engine
            .lookup(&field, "same@example.com", |r| {
                engine
                    .store()
                    .get(&keys::slot(r.slot))
                    .unwrap()
                    .is_some_and(|sid| sid.as_slice() >= b"s-290".as_slice())
            })
            .unwrap();
        assert_eq!(found.len(), 10);
        // Every one of 300 is more than a look-up returns: refused whole.
        assert!(matches!(
            engine.lookup(&field, "same@example.com", |_| true),
            Err(Error::ResourceExhausted(_))
        ));
    }

    /// A re-key cut short by a crash: an intent to shred the old key whose
    /// record did not reach the disk is forgotten (the record still uses
    /// the key); one whose record did is carried out at the next start.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_interrupted_rekey_shreds_only_a_key_no_record_uses() {
        use crate::store::sled::shred_intent;
        let dir = tempfile::tempdir().unwrap();
        let engine = crate::engine::test_engine(dir.path()).await;
        let sid = SubjectId::parse("rk-1").unwrap();
        store_email(&engine, &sid, "rk@example.com").await;
        let record = engine.subject_record("rk-1").unwrap().unwrap();
        let slot = record.slot;
        // The commit that asked to shred version 1 never reached the disk.
        let mut b = Batch::new();
        b.put(shred_intent(slot, Some(1)), Vec::new());
        // One that did: version 2 was written and the record moved on...
        // here the record still names 1, so version 2 is the unused one.
        b.put_key(slot, 2, b"unused key".to_vec());
        b.put(shred_intent(slot, Some(2)), Vec::new());
        engine.store().apply(b).unwrap();
        assert_eq!(engine.finish_key_shreds().await.unwrap(), 1);
        let held: Vec<u32> = engine
            .store()
            .keys(slot)
            .unwrap()
            .into_iter()
            .map(|(v, _)| v)
            .collect();
        assert_eq!(held, [1], "the key in use stays, the unused one goes");
        assert!(engine.store().pending_key_shreds().unwrap().is_empty());
        assert_eq!(engine.finish_key_shreds().await.unwrap(), 0);
    }
}
