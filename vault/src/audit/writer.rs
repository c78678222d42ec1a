//! The writer: numbering, chaining and framing events into the pending
//! buffer under one lock, and the thread that writes and syncs them (group
//! commit), writes timed checkpoints, rolls segments and prunes; and the
//! watchdog that refuses requests whose events are late.

use super::*;

/// Most bytes of events waiting for the disk; beyond, appends fail
/// `UNAVAILABLE` at once.
pub(super) const MAX_PENDING: usize = 64 << 20;
/// How often the writer looks for segments to prune.
pub(super) const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// A segment is closed after a day, so that pruning can remove whole days.
pub(super) const SEGMENT_MICROS: i64 = 86_400_000_000;
pub(super) const DAY_MICROS: i64 = 86_400_000_000;

/// A signed checkpoint of event `seq` with chain hash `hash`, made at `now`.
pub(super) fn signed(key: &CheckpointKey, seq: u64, hash: &[u8], now: i64) -> Checkpoint {
    Checkpoint {
        seq,
        hash: hash.to_vec(),
        signature: key.sign(&checkpoint_message(seq, hash)),
        time_unix_micros: now,
        ..Default::default()
    }
}

/// A checkpoint event signing the event before it.
pub(super) fn checkpoint_event(
    key: &CheckpointKey,
    seq: u64,
    hash: &[u8; 32],
    now: i64,
) -> AuditEvent {
    AuditEvent {
        event_type: "checkpoint".into(),
        principal: "vaultd".into(),
        outcome: "ok".into(),
        checkpoint: Some(signed(key, seq, hash, now)),
        ..Default::default()
    }
}

/// When every item names the same subject, names it once, on the event
/// (items then leave `subject_id` empty): a smaller trail, same meaning.
pub(super) fn hoist_subject(e: &mut AuditEvent) {
    let Some(first) = e.items.first().map(|i| i.subject_id.as_str()) else {
        return;
    };
    if first.is_empty()
        || !(e.subject_id.is_empty() || e.subject_id == first)
        || e.items.iter().any(|i| i.subject_id != first)
    {
        return;
    }
    e.subject_id = std::mem::take(&mut e.items[0].subject_id);
    for i in &mut e.items {
        i.subject_id.clear();
    }
}

impl Inner {
    pub(super) fn lock(&self) -> Result<MutexGuard<'_, State>> {
        self.state.lock().map_err(poisoned)
    }

    /// Numbers, chains and frames `events` into the pending buffer, each
    /// first brought within the trail's limits ([`bound::bound`]: an event
    /// with more items than fit goes on in further events, numbered too).
    pub(super) fn push(&self, st: &mut State, events: Vec<AuditEvent>, now: i64) -> Vec<u64> {
        let key = &self.keys.mac;
        let mut seqs = Vec::with_capacity(events.len());
        for mut e in events {
            hoist_subject(&mut e);
            if e.time_unix_micros == 0 {
                e.time_unix_micros = now;
            }
            for mut e in bound::bound(key, e, st.head.seq + 1) {
                e.seq = st.head.seq + 1;
                Self::push_one(st, &e, key);
                seqs.push(e.seq);
            }
        }
        seqs
    }

    /// Chains and frames one event (numbered, within the limits).
    pub(super) fn push_one(st: &mut State, e: &AuditEvent, key: &AuditKey) {
        let bytes = prost::Message::encode_to_vec(e);
        let hash = chain_hash(&st.head.hash, &bytes);
        let mac = key.mac(&hash);
        let record = AuditRecord {
            event: bytes,
            hash: hash.to_vec(),
            mac: mac.to_vec(),
        };
        segments::frame(&record, &mut st.pending);
        st.head = Mark {
            seq: e.seq,
            time: e.time_unix_micros,
            hash,
        };
        if st.pending_first.is_none() {
            st.pending_first = Some(st.head);
        }
    }

    /// Adds a checkpoint of the head if one is due (`force`: if anything
    /// happened since the last).
    pub(super) fn checkpoint_if_due(&self, st: &mut State, now: i64, force: bool) {
        let since = st.head.seq.saturating_sub(st.last_checkpoint.0);
        let due = since >= self.settings.checkpoint_events
            || (force && since > 0)
            || (since > 0
                && now.saturating_sub(st.last_checkpoint.1)
                    >= i64::try_from(self.settings.checkpoint_secs)
                        .unwrap_or(i64::MAX)
                        .saturating_mul(1_000_000));
        if due && st.head.seq > 0 {
            let e = checkpoint_event(&self.keys.checkpoint, st.head.seq, &st.head.hash, now);
            let seqs = self.push(st, vec![e], now);
            st.last_checkpoint = (seqs.last().copied().unwrap_or(0), now);
        }
    }

    /// Appends `events`; with `waiter`, registers it to hear when the
    /// last of them is durable.
    pub(super) fn append(
        &self,
        events: Vec<AuditEvent>,
        waiter: Option<tokio::sync::oneshot::Sender<bool>>,
    ) -> Result<Vec<u64>> {
        let mut st = self.lock()?;
        if st.closing {
            return Err(Unavailable::AuditClosed.into());
        }
        if st.pending.len() > MAX_PENDING {
            st.refused_unnumbered += 1;
            return Err(Unavailable::AuditBacklog.into());
        }
        let now = self.clock.now_micros();
        let seqs = self.push(&mut st, events, now);
        if let (Some(tx), Some(&seq)) = (waiter, seqs.last()) {
            // Sequence numbers and deadlines only grow under this lock: the
            // queue stays sorted by both.
            st.waiters.push_back(Waiter {
                seq,
                deadline: Instant::now() + self.settings.timeout,
                tx,
            });
        }
        self.checkpoint_if_due(&mut st, now, false);
        let idle = st.writer_idle;
        drop(st);
        if idle {
            self.wake.notify_one();
        }
        Ok(seqs)
    }

    /// Removes the segments wholly older than the retention, leaving a
    /// signed anchor, and writes an `audit_prune` event.
    pub(super) fn prune(&self) -> Result<u64> {
        let now = self.clock.now_micros();
        let cutoff =
            now.saturating_sub(i64::from(self.settings.retention_days).saturating_mul(DAY_MICROS));
        let victims: Vec<Segment> = {
            let st = self.lock()?;
            // Never the newest segment: the writer may be appending to it.
            let n = st.segments.len().saturating_sub(1);
            st.segments[..n]
                .iter()
                .take_while(|s| s.last_time < cutoff)
                .copied()
                .collect()
        };
        let (Some(first), Some(last)) = (victims.first(), victims.last()) else {
            return Ok(0);
        };
        let anchor = signed(&self.keys.checkpoint, last.last_seq, &last.last_hash, now);
        // The anchor first: a crash before the files are gone leaves
        // segments the next start removes (they end at or before it).
        segments::write_synced(
            &self.dir.join(segments::ANCHOR_FILE),
            &prost::Message::encode_to_vec(&anchor),
        )?;
        for s in &victims {
            std::fs::remove_file(segments::segment_path(&self.dir, s.number))
                .map_err(|e| segments::io("removing a segment", e))?;
        }
        segments::sync_dir(&self.dir)?;
        let pruned = last.last_seq + 1 - first.first_seq;
        {
            let mut st = self.lock()?;
            st.segments.retain(|s| s.number > last.number);
            st.anchor = Some(anchor);
        }
        tracing::info!(
            events = pruned,
            segments = victims.len(),
            through = last.last_seq,
            "audit events past retention pruned"
        );
        self.append(
            vec![system_event(
            "audit_prune",
            "ok",
            format!(
                "pruned events {}..={} ({pruned} events, {} segments), all older than {} days; anchor signed at event {}",
                first.first_seq,
                last.last_seq,
                victims.len(),
                self.settings.retention_days,
                last.last_seq
            ),
        )], None)?;
        Ok(pruned)
    }
}

/// The writer thread's open segment.
struct Current {
    file: std::fs::File,
    number: u64,
    /// Bytes known good (written and, with `sync`, synced).
    len: u64,
    /// Bytes the file has: frames, then zeros written ahead of them.
    filled: u64,
    first_time: i64,
    /// Not yet in the state's segment list.
    listed: bool,
}

impl Current {
    /// Writes `bytes` after the frames, zero-filling ahead first when the
    /// space left is short (the sync after it then also commits the new
    /// size; the syncs after that commit data only).
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let end = self.len + bytes.len() as u64;
        if end > self.filled {
            let to = end + segments::PREALLOCATE;
            segments::zero_fill(&self.file, self.filled, to)?;
            self.filled = to;
        }
        self.file.write_all_at(bytes, self.len)
    }
}

impl Drop for Current {
    /// A segment left behind is cut back to its last good frame (best
    /// effort: a zero tail left by a failure here is cut at the next start).
    fn drop(&mut self) {
        if self.filled != self.len {
            let _ = self.file.set_len(self.len);
        }
    }
}

/// The writer thread: writes pending frames, syncs, publishes progress,
/// writes timed checkpoints and prunes.
pub(super) fn writer(inner: Arc<Inner>, mut next_number: u64) {
    let mut current: Option<Current> = None;
    let mut retry: Option<(u64, u64, i64, bool)> = None;
    let mut last_prune = Instant::now();
    let mut closing_failures = 0;
    let gather = inner.settings.gather;
    let mut last_sync = Instant::now();
    loop {
        // Under load, syncs at most every `gather`: more events per sync,
        // fewer syncs and wake-ups. An idle trail syncs at once.
        let since = last_sync.elapsed();
        if since < gather {
            std::thread::sleep(gather - since);
        }
        if last_prune.elapsed() >= PRUNE_EVERY {
            last_prune = Instant::now();
            if let Err(e) = inner.prune() {
                tracing::error!(error = %e, "audit pruning failed; will retry");
            }
        }
        let Ok(mut st) = inner.state.lock() else {
            return;
        };
        // A timed checkpoint whether the trail is busy or idle.
        let now = inner.clock.now_micros();
        inner.checkpoint_if_due(&mut st, now, false);
        while st.pending.is_empty() && !st.closing {
            st.writer_idle = true;
            let Ok((g, timeout)) = inner.wake.wait_timeout(st, Duration::from_secs(1)) else {
                return;
            };
            st = g;
            st.writer_idle = false;
            if timeout.timed_out() {
                let now = inner.clock.now_micros();
                inner.checkpoint_if_due(&mut st, now, false);
                if last_prune.elapsed() >= PRUNE_EVERY {
                    break;
                }
            }
        }
        if st.pending.is_empty() && !st.closing {
            continue; // time to prune
        }
        if st.pending.is_empty() {
            return; // closing, all written
        }
        let bytes = std::mem::take(&mut st.pending);
        // The window runs from the start of a sync, not its end: a sync
        // slower than the window is followed at once by the next.
        last_sync = Instant::now();
        let Some(first) = st.pending_first.take() else {
            return;
        };
        let last = st.head;
        drop(st);

        let result = (|| -> std::io::Result<()> {
            if let Some(c) = &current
                && (c.len >= inner.settings.segment_bytes
                    || first.time.saturating_sub(c.first_time) >= SEGMENT_MICROS)
            {
                current = None;
            }
            if current.is_none() {
                let (number, len, first_time, listed) =
                    retry.unwrap_or((next_number, 0, first.time, false));
                let (file, on_disk) = segments::open_for_write(&inner.dir, number)?;
                if on_disk != len {
                    file.set_len(len)?;
                }
                if retry.take().is_none() {
                    next_number += 1;
                }
                current = Some(Current {
                    file,
                    number,
                    len,
                    filled: len,
                    first_time,
                    listed,
                });
            }
            let Some(c) = current.as_mut() else {
                return Err(std::io::Error::other("no segment"));
            };
            c.write(&bytes)?;
            if inner.settings.sync {
                c.file.sync_data()?;
            }
            c.len += bytes.len() as u64;
            Ok(())
        })();

        let Ok(mut st) = inner.state.lock() else {
            return;
        };
        match result {
            Ok(()) => {
                if let Some(c) = current.as_mut() {
                    if c.listed {
                        if let Some(s) = st.segments.last_mut() {
                            s.last_seq = last.seq;
                            s.last_time = last.time;
                            s.last_hash = last.hash;
                        }
                    } else {
                        st.segments.push(Segment {
                            number: c.number,
                            first_seq: first.seq,
                            last_seq: last.seq,
                            first_time: first.time,
                            last_time: last.time,
                            last_hash: last.hash,
                        });
                        c.listed = true;
                    }
                }
                // Only the requests whose events are now durable wake up.
                while st.waiters.front().is_some_and(|w| w.seq <= last.seq) {
                    if let Some(w) = st.waiters.pop_front() {
                        let _ = w.tx.send(true);
                    }
                }
                // Once every refused request's event is on disk, say so.
                if (!st.refused.is_empty() || st.refused_unnumbered > 0)
                    && st.refused.iter().all(|s| *s <= last.seq)
                {
                    let list: Vec<String> = st.refused.iter().map(u64::to_string).collect();
                    let detail = format!(
                        "{} request(s) were answered UNAVAILABLE because their events were not durable within {} ms, and {} more before they had an event; they disclosed and changed nothing. Their events (first 1000): [{}]",
                        st.refused_total,
                        inner.settings.timeout.as_millis(),
                        st.refused_unnumbered,
                        list.join(", ")
                    );
                    st.refused.clear();
                    st.refused_total = 0;
                    st.refused_unnumbered = 0;
                    let now = inner.clock.now_micros();
                    inner.push(
                        &mut st,
                        vec![system_event("audit_refused", "ok", detail)],
                        now,
                    );
                }
            }
            Err(e) => {
                tracing::error!(error = %e.kind(), "audit trail write failed; requests are refused until it succeeds");
                if let Some(mut c) = current.take() {
                    // Cut back to the last good frame; reopened on retry.
                    let _ = c.file.set_len(c.len);
                    c.filled = c.len;
                    retry = Some((c.number, c.len, c.first_time, c.listed));
                }
                // The events go back in front of any newer ones.
                let mut again = bytes;
                again.append(&mut st.pending);
                st.pending = again;
                st.pending_first = Some(first);
                // Everyone waiting is answered at once: not durable.
                for w in std::mem::take(&mut st.waiters) {
                    st.refuse(w);
                }
                if st.closing {
                    closing_failures += 1;
                    if closing_failures >= 3 {
                        tracing::error!("audit trail closed with events unwritten");
                        return;
                    }
                }
                drop(st);
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// Answers "not durable" to every request whose event is not durable by
/// its deadline, even while the writer is stuck in a write or sync: checks
/// ten times per timeout (so a refusal comes at most a tenth of it late).
pub(super) fn watchdog(inner: &Inner) {
    let every = (inner.settings.timeout / 10).max(Duration::from_millis(1));
    loop {
        std::thread::sleep(every);
        let Ok(mut st) = inner.state.lock() else {
            return;
        };
        let now = Instant::now();
        while st.waiters.front().is_some_and(|w| w.deadline <= now) {
            if let Some(w) = st.waiters.pop_front() {
                st.refuse(w);
            }
        }
        if st.closing && st.waiters.is_empty() {
            return;
        }
    }
}
