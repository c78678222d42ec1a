//! Detokenize and look-up: a token (or a searchable value) back to its
//! value, plain, partial, masked or denied as the policy decided.

use super::*;

impl Engine {
    /// Finds the value behind each token, in order, and asks `decide` what
    /// the caller may see of it (given the field and the subject's record);
    /// only values it allows are decrypted.
    pub async fn detokenize(
        &self,
        tokens: &[Token],
        decide: impl FnMut(&FieldDef, &SubjectRecord) -> Reveal,
    ) -> Result<Vec<Found>> {
        let mut out = Vec::with_capacity(tokens.len());
        if let Err(e) = self.reveal_each(tokens, decide, &mut out) {
            // Nothing is disclosed: CVVs already taken wait for another try.
            self.put_back_cvv(out.into_iter().filter_map(|f| match f {
                Found::Value { held, .. } => held,
                _ => None,
            }));
            return Err(e);
        }
        Ok(out)
    }

    /// [`Engine::detokenize`]'s work, appending to `out` token by token.
    pub(super) fn reveal_each(
        &self,
        tokens: &[Token],
        mut decide: impl FnMut(&FieldDef, &SubjectRecord) -> Reveal,
        out: &mut Vec<Found>,
    ) -> Result<()> {
        // The subjects this request reached, each with the DEKs it opened:
        // tokens of one subject (the common case) share its record and DEK.
        let mut reached: Vec<Reached> = Vec::new();
        let mut index: HashMap<Arc<str>, usize> = HashMap::new();
        // The subject the previous token led to.
        let mut previous: Option<usize> = None;
        let now = self.clock.now();
        for token in tokens {
            // A token held by the record the previous token led to needs no
            // look-up of its pointer: a token is in its own subject's record
            // only, so it points there.
            let held = previous.and_then(|i| {
                let p = reached[i].record.as_ref()?.position(token.as_str())?;
                Some((i, p))
            });
            let (at, position) = match held {
                Some((i, position)) => (i, Some(position)),
                None => {
                    let sid = match self.token_pointer(token)? {
                        Some(Pointer::Live(sid)) => sid,
                        Some(Pointer::Erased(field)) => {
                            out.push(self.erased_token(&field, &mut decide));
                            continue;
                        }
                        None => {
                            out.push(Found::NotFound);
                            continue;
                        }
                    };
                    let i = match index.get(&sid) {
                        Some(&i) => i,
                        None => {
                            let record = self.subject_record(&sid)?;
                            index.insert(sid.clone(), reached.len());
                            reached.push(Reached {
                                sid,
                                record,
                                deks: Vec::new(),
                            });
                            reached.len() - 1
                        }
                    };
                    (i, None)
                }
            };
            previous = Some(at);
            let Reached { sid, record, deks } = &mut reached[at];
            // The entry found above is not searched for again.
            let entry = record.as_deref().and_then(|r| {
                let e = match position {
                    Some(p) => r.entries.get(p),
                    None => r.entry(token.as_str()),
                };
                e.map(|e| (r, e))
            });
            // A field removed from the schema is no longer served.
            let Some((record, entry, field)) =
                entry.and_then(|(r, e)| self.schema.field(&e.field).map(|f| (r, e, f.clone())))
            else {
                out.push(Found::NotFound);
                continue;
            };
            let reveal = decide(&field, record);
            if reveal == Reveal::Denied {
                out.push(Found::Denied {
                    field,
                    subject: sid.clone(),
                });
                continue;
            }
            if field.memory_only() {
                out.push(self.reveal_cvv(token, field, sid.clone(), reveal, now));
                continue;
            }
            // Past its retention (swept or not yet): gone, nothing decrypted.
            if self.is_expired_as(record, entry, &field, now) {
                out.push(Found::Expired {
                    field,
                    subject: sid.clone(),
                });
                continue;
            }
            let dek = match deks.iter().find(|(v, _)| *v == entry.dek_version) {
                Some((_, d)) => d.clone(),
                None => {
                    let d = self.dek_of(sid, record, entry.dek_version)?;
                    deks.push((entry.dek_version, d.clone()));
                    d
                }
            };
            let value = open_value(sid, entry, &dek)?;
            let brand = (field.validator == Validator::CardNumber)
                .then(|| crate::cards::Brand::of(&value).name());
            let value = match reveal {
                Reveal::Masked => field.masked(&value),
                Reveal::Partial => field.partial(&value),
                _ => value,
            };
            out.push(Found::Value {
                field,
                subject: sid.clone(),
                reveal,
                value,
                brand,
                held: None,
            });
        }
        Ok(())
    }

    /// An erased subject's token: `ERASED` to a caller who could see the
    /// field (judged for a subject of no consent), `DENIED` to anyone else.
    pub(super) fn erased_token(
        &self,
        field: &str,
        decide: &mut impl FnMut(&FieldDef, &SubjectRecord) -> Reveal,
    ) -> Found {
        let Some(field) = self.schema.field(field).cloned() else {
            return Found::NotFound;
        };
        if decide(&field, &SubjectRecord::default()) == Reveal::Denied {
            Found::Denied {
                field,
                subject: Arc::from(""),
            }
        } else {
            Found::Erased { field }
        }
    }

    /// A CVV token's answer: in clear only once (taken out of memory), a
    /// mask that shows nothing while it waits, and expired once it is gone.
    pub(super) fn reveal_cvv(
        &self,
        token: &Token,
        field: Arc<FieldDef>,
        subject: Arc<str>,
        reveal: Reveal,
        now: i64,
    ) -> Found {
        let held = match reveal {
            Reveal::Plain => self.cvv.take(token.as_str(), &subject, now),
            _ => None,
        };
        let value = match &held {
            Some(h) => Zeroizing::new(h.value().to_owned()),
            // Masks of a CVV are computed over nothing: no digit, no length.
            None if reveal != Reveal::Plain
                && self.cvv.is_pending(token.as_str(), &subject, now) =>
            {
                field.masked("")
            }
            None => return Found::Expired { field, subject },
        };
        Found::Value {
            field,
            subject,
            reveal,
            value,
            brand: None,
            held,
        }
    }

    /// The tokens whose value in `field` is exactly `value` (canonical form),
    /// of the subjects `allow` accepts, every one of them: each index entry
    /// of the value is read (and checked against its subject record), page
    /// by page. More than [`MAX_LOOKUP_RESULTS`] matches, or more than
    /// [`MAX_LOOKUP_SCAN`] entries to read, fail `RESOURCE_EXHAUSTED`: an
    /// answer is complete or it is not given (entries that sort first, live
    /// or stale, cannot hide a subject behind them).
    pub fn lookup(
        &self,
        field: &FieldDef,
        value: &str,
        mut allow: impl FnMut(&SubjectRecord) -> bool,
    ) -> Result<Vec<Token>> {
        let blind = self.blind(field, value);
        let prefix = keys::index_prefix(&blind);
        let now = self.clock.now();
        let mut out = Vec::new();
        let mut start = prefix.clone();
        let mut scanned = 0;
        loop {
            let page = self.store.scan_from(&prefix, &start, LOOKUP_PAGE)?;
            let last_page = page.len() < LOOKUP_PAGE;
            for (key, t) in page {
                scanned += 1;
                if scanned > MAX_LOOKUP_SCAN {
                    return Err(Error::ResourceExhausted(
                        "too many index entries hold this value for one look-up",
                    ));
                }
                if let Some(token) =
                    self.live_index_entry(field, &blind, &key, t, now, &mut allow)?
                {
                    if out.len() == MAX_LOOKUP_RESULTS {
                        return Err(Error::ResourceExhausted(
                            "more subjects hold this value than one look-up returns",
                        ));
                    }
                    out.push(token);
                }
                // The next page starts just after this key.
                start = key;
                start.push(0);
            }
            if last_page {
                return Ok(out);
            }
        }
    }

    /// The token of index entry `key` → `token` of `blind` if its subject
    /// record holds it, live, for `field`, and `allow` accepts the subject.
    pub(super) fn live_index_entry(
        &self,
        field: &FieldDef,
        blind: &[u8; 32],
        key: &[u8],
        token: Vec<u8>,
        now: i64,
        allow: &mut impl FnMut(&SubjectRecord) -> bool,
    ) -> Result<Option<Token>> {
        let (Some(sid), Ok(token)) = (keys::index_subject(key), String::from_utf8(token)) else {
            return Ok(None);
        };
        let live = self.subject_record(sid)?.is_some_and(|r| {
            r.entry(&token).is_some_and(|e| {
                e.field == field.name && ct_eq(&e.blind, blind) && !self.is_expired(&r, e, now)
            }) && allow(&r)
        });
        Ok(live.then(|| Token::parse(&token)).flatten())
    }
}
