//! Reading the trail: filters, queries, a subject's history, verification
//! of the kept chain and exports (ranges, records, their closing checkpoint).

use super::*;

/// Most events one query returns.
pub const MAX_QUERY_EVENTS: usize = 10_000;

/// Most bytes of (encoded) events one query answer holds: a page ends
/// early rather than grow beyond (the caller goes on with `after_seq`).
pub const MAX_QUERY_BYTES: usize = 32 << 20;

/// Whether `e` passes the filters of `q` (empty filters match everything).
pub fn matches(q: &QueryRequest, e: &AuditEvent) -> bool {
    let eq = |want: &str, have: &str| want.is_empty() || want == have;
    eq(&q.principal, &e.principal)
        && eq(&q.role, &e.role)
        && eq(&q.action, &e.action)
        && eq(&q.outcome, &e.outcome)
        && eq(&q.event_type, &e.event_type)
        && (q.subject_id.is_empty()
            || e.subject_id == q.subject_id
            || e.items.iter().any(|i| i.subject_id == q.subject_id))
        && (q.field.is_empty() || e.items.iter().any(|i| i.field == q.field))
        && (q.since_unix_micros == 0 || e.time_unix_micros >= q.since_unix_micros)
        && (q.until_unix_micros == 0 || e.time_unix_micros < q.until_unix_micros)
}

/// The kept events about one subject (see [`AuditLog::subject_history`]).
#[derive(Debug, Default)]
pub struct SubjectHistory {
    /// The events, oldest first.
    pub events: Vec<AuditEvent>,
    /// The time of the oldest kept event (UTC microseconds): older events
    /// were pruned. `None` if the trail is empty.
    pub complete_since: Option<i64>,
    /// Whether events were left out (more than asked for).
    pub truncated: bool,
}

/// What an export covers: the events after `after` (whose chain hash is
/// `prev`) through `through`, the last durable event when it was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportRange {
    /// The sequence number before the first exported event (the request's,
    /// or the pruning anchor's if later).
    pub after: u64,
    /// The chain hash of event `after` (32 zero bytes for event 0).
    pub prev: [u8; 32],
    /// The last event exported.
    pub through: u64,
}

impl AuditLog {
    /// Where the kept chain starts: `(sequence number before the first
    /// kept event, its hash)`, and the anchor if pruning left one.
    fn start(&self) -> Result<(u64, [u8; 32], Option<Checkpoint>)> {
        let st = self.inner.lock()?;
        Ok(match &st.anchor {
            Some(a) => (
                a.seq,
                a.hash.as_slice().try_into().map_err(|_| Error::Integrity)?,
                Some(a.clone()),
            ),
            None => (0, [0; 32], None),
        })
    }

    /// Calls `f` with each durable record after `after_seq`, in order,
    /// until it answers `false`; `None` for a record that does not decode.
    /// With `since`, segments wholly older are skipped.
    fn scan_after(
        &self,
        after_seq: u64,
        since: i64,
        mut f: impl FnMut(Option<(AuditRecord, AuditEvent)>) -> Result<bool>,
    ) -> Result<()> {
        let list = self.inner.lock()?.segments.clone();
        let newest = list.last().map(|s| s.number);
        for s in list
            .iter()
            .filter(|s| s.last_seq > after_seq && s.last_time >= since)
        {
            let mut more = true;
            let mut seen = 0;
            let end = segments::read_frames(
                &segments::segment_path(&self.inner.dir, s.number),
                |_, bytes| {
                    let item = segments::decode(bytes);
                    match &item {
                        Some((_, e)) if e.seq <= after_seq => return Ok(true),
                        // Beyond what was durable when the scan began.
                        Some((_, e)) if e.seq > s.last_seq => return Ok(false),
                        Some((_, e)) => seen = e.seq,
                        None => {}
                    }
                    more = f(item)?;
                    Ok(more)
                },
            )?;
            if !more {
                return Ok(());
            }
            // In the segment being written, what follows the last durable
            // event may be a write in progress, not damage.
            let in_progress = newest == Some(s.number) && seen == s.last_seq;
            if matches!(end, End::Torn { .. }) && !in_progress && !f(None)? {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Checks the whole kept chain (anchor, hashes, MACs, checkpoints).
    pub fn verify(&self) -> Result<Verified> {
        let (after, prev, anchor) = self.start()?;
        let public = self.public_key();
        if let Some(a) = &anchor
            && !verify_checkpoint(&public, a.seq, &a.hash, &a.signature)
        {
            return Ok(Verified {
                good: 0,
                first_bad: Some((after + 1, "the pruning anchor is not signed by this vault")),
                head: prev,
            });
        }
        let key = &self.inner.keys.mac;
        let mut c = ChainChecker::new(after + 1, prev, Some(key), Some(&public));
        let mut bad = None;
        self.scan_after(after, 0, |item| {
            match c.check(item.as_ref().map(|(r, e)| (r, e))) {
                Ok(()) => Ok(true),
                Err(b) => {
                    bad = Some(b);
                    Ok(false)
                }
            }
        })?;
        Ok(c.verdict(bad))
    }

    /// Events after `q.after_seq` that pass `q`'s filters, in order, at
    /// most `q.limit` (default 1,000, at most [`MAX_QUERY_EVENTS`]) and
    /// about [`MAX_QUERY_BYTES`] (the page ends after the event that passes
    /// it). Without
    /// a time range, only the last `query_days` days.
    pub fn query(&self, q: &QueryRequest) -> Result<Vec<AuditEvent>> {
        let limit = match q.limit {
            0 => 1000,
            n => usize::try_from(n)
                .unwrap_or(MAX_QUERY_EVENTS)
                .min(MAX_QUERY_EVENTS),
        };
        let mut q = q.clone();
        if q.since_unix_micros == 0 && q.until_unix_micros == 0 {
            q.since_unix_micros = self.inner.clock.now_micros().saturating_sub(
                i64::from(self.inner.settings.query_days).saturating_mul(DAY_MICROS),
            );
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        self.scan_after(q.after_seq, q.since_unix_micros, |item| {
            let (record, event) = item.ok_or(Error::Integrity)?;
            if matches(&q, &event) {
                bytes += record.event.len();
                out.push(event);
            }
            Ok(out.len() < limit && bytes < MAX_QUERY_BYTES)
        })?;
        Ok(out)
    }

    /// Every kept event about `subject` (the event's subject, or one of its
    /// items'), oldest first, at most `limit`; with the time of the oldest
    /// kept event (the history is complete since then) and whether events
    /// were left out over `limit`. Reads the whole kept trail.
    pub fn subject_history(&self, subject: &str, limit: usize) -> Result<SubjectHistory> {
        let mut h = SubjectHistory::default();
        self.scan_after(0, 0, |item| {
            let (_, e) = item.ok_or(Error::Integrity)?;
            if h.complete_since.is_none() {
                h.complete_since = Some(e.time_unix_micros);
            }
            if e.subject_id == subject || e.items.iter().any(|i| i.subject_id == subject) {
                if h.events.len() == limit {
                    h.truncated = true;
                    return Ok(false);
                }
                h.events.push(e);
            }
            Ok(true)
        })?;
        Ok(h)
    }

    /// Where an export of the events after `after_seq` starts (from the
    /// pruning anchor at the earliest) and ends (the last durable event).
    pub fn export_range(&self, after_seq: u64) -> Result<ExportRange> {
        let (start, start_hash, _) = self.start()?;
        let through = {
            let st = self.inner.lock()?;
            st.segments.last().map_or(start, |s| s.last_seq)
        };
        if after_seq <= start {
            return Ok(ExportRange {
                after: start,
                prev: start_hash,
                through,
            });
        }
        if after_seq > through {
            return Err(Error::NotFound("audit event"));
        }
        let mut hash = None;
        self.scan_after(after_seq - 1, 0, |item| {
            let (r, e) = item.ok_or(Error::Integrity)?;
            if e.seq == after_seq {
                hash = Some(<[u8; 32]>::try_from(r.hash.as_slice()).map_err(|_| Error::Integrity)?);
            }
            Ok(false)
        })?;
        Ok(ExportRange {
            after: after_seq,
            prev: hash.ok_or(Error::NotFound("audit event"))?,
            through,
        })
    }

    /// Calls `f` with each record of `range` and its event, in order, one
    /// at a time (memory does not grow with the trail), until it answers
    /// `false`. Each is checked as it is read (sequence number, chain hash,
    /// MAC, checkpoint signature): the vault never signs the end of a
    /// chain that does not check out ([`Error::Integrity`], logged with
    /// where). Returns the last event given to `f`: its sequence number and
    /// chain hash (`range.after` and `range.prev` if none).
    pub fn export_each(
        &self,
        range: &ExportRange,
        mut f: impl FnMut(AuditRecord, AuditEvent) -> Result<bool>,
    ) -> Result<(u64, [u8; 32])> {
        let public = self.public_key();
        let key = &self.inner.keys.mac;
        let mut c = ChainChecker::new(range.after + 1, range.prev, Some(key), Some(&public));
        let mut stopped = false;
        if range.through > range.after {
            self.scan_after(range.after, 0, |item| {
                if let Err((seq, problem)) = c.check(item.as_ref().map(|(r, e)| (r, e))) {
                    tracing::error!(
                        seq,
                        problem,
                        "the audit trail fails its checks; export stopped"
                    );
                    return Err(Error::Integrity);
                }
                let Some((r, e)) = item else {
                    return Err(Error::Integrity);
                };
                if !f(r, e)? {
                    stopped = true;
                    return Ok(false);
                }
                Ok(c.next_seq() <= range.through)
            })?;
        }
        if !stopped && c.next_seq() != range.through + 1 {
            tracing::error!(
                expected = c.next_seq(),
                through = range.through,
                "audit events missing at the end of an export"
            );
            return Err(Error::Integrity);
        }
        Ok((c.next_seq() - 1, c.head()))
    }

    /// The checkpoint that ends an export of `range` whose last event is
    /// `seq` with chain hash `hash`, signed now: a chain checkpoint of
    /// `(seq, hash)` and an export signature binding the export's start to
    /// it ([`vault_proto::audit::export_message`]).
    pub fn export_checkpoint(&self, range: &ExportRange, seq: u64, hash: &[u8]) -> Checkpoint {
        let key = &self.inner.keys.checkpoint;
        let now = self.inner.clock.now_micros();
        let mut c = signed(key, seq, hash, now);
        c.export_signature = key.sign(&vault_proto::audit::export_message(
            range.after,
            &range.prev,
            seq,
            hash,
            now,
        ));
        c.start_after_seq = range.after;
        c.start_prev_hash = range.prev.to_vec();
        c
    }

    /// The checkpoint public key.
    pub fn public_key(&self) -> Vec<u8> {
        self.inner.keys.checkpoint.public()
    }

    /// The sequence number of the last appended event.
    pub fn head_seq(&self) -> u64 {
        self.inner.state.lock().map_or(0, |s| s.head.seq)
    }

    /// Bytes the kept trail takes on disk.
    pub fn size_on_disk(&self) -> u64 {
        let Ok(list) = segments::list(&self.inner.dir) else {
            return 0;
        };
        list.iter()
            .filter_map(|n| std::fs::metadata(segments::segment_path(&self.inner.dir, *n)).ok())
            .map(|m| m.len())
            .sum()
    }
}
