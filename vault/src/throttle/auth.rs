//! Failed authentications, counted per peer and per credential id (see the
//! module documentation of [`crate::throttle`]).

use super::*;

/// A credential id as counted: the 16 base64url characters of a
/// well-formed token's middle part.
pub(super) type CredId = [u8; 16];

pub(super) fn cred_id(id: &str) -> Option<CredId> {
    let bytes: CredId = id.as_bytes().try_into().ok()?;
    bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        .then_some(bytes)
}

pub(super) fn cred_text(id: &CredId) -> &str {
    std::str::from_utf8(id).unwrap_or("?")
}

/// Failed authentications counted rather than audited one by one.
#[derive(Debug, Clone, Default)]
pub(super) struct Tally {
    /// Answered `UNAUTHENTICATED` (under the rate limit, over the audit bound).
    unauthenticated: u64,
    /// Answered `RESOURCE_EXHAUSTED`.
    exhausted: u64,
    /// Per credential id tried.
    ids: Top<CredId>,
    /// Attempts without a well-formed credential id (none, malformed, or a
    /// client certificate).
    no_id: u64,
}

impl Tally {
    fn add(&mut self, exhausted: bool, id: Option<CredId>) {
        if exhausted {
            self.exhausted = self.exhausted.saturating_add(1);
        } else {
            self.unauthenticated = self.unauthenticated.saturating_add(1);
        }
        match id {
            Some(id) => self.ids.add(id, 1),
            None => self.no_id = self.no_id.saturating_add(1),
        }
    }

    fn total(&self) -> u64 {
        self.unauthenticated.saturating_add(self.exhausted)
    }

    fn merge(&mut self, other: &Self) {
        self.unauthenticated = self.unauthenticated.saturating_add(other.unauthenticated);
        self.exhausted = self.exhausted.saturating_add(other.exhausted);
        self.ids.merge(&other.ids);
        self.no_id = self.no_id.saturating_add(other.no_id);
    }

    /// `key=value` pairs: counts and credential ids, never a secret.
    fn describe(&self) -> String {
        let mut s = format!(
            "not_audited={} unauthenticated={} resource_exhausted={} credential_ids=",
            self.total(),
            self.unauthenticated,
            self.exhausted
        );
        for (i, (id, n)) in self.ids.counts.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(s, "{sep}{}:{n}", cred_text(id));
        }
        let _ = write!(s, " other_ids={} no_id={}", self.ids.other, self.no_id);
        s
    }
}

/// The settings of [`AuthThrottle`] (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthSettings {
    /// Length of a window, in seconds.
    pub window_secs: u64,
    /// Failures per peer per window before `RESOURCE_EXHAUSTED`.
    pub per_peer: u32,
    /// Failures per credential id per window before its attempts from
    /// failing peers are refused unchecked.
    pub per_credential: u32,
    /// Failures per peer per window audited one by one.
    pub audited_per_peer: u32,
    /// Failures per window audited one by one, over all peers.
    pub audited_total: u32,
    /// Most peers, and most credential ids, counted at once.
    pub entries: usize,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            window_secs: 60,
            per_peer: 20,
            per_credential: 10,
            audited_per_peer: 10,
            audited_total: 1000,
            entries: 10_000,
        }
    }
}

/// Most per-peer summary events per window; the peers beyond share one.
pub const MAX_SUMMARIES: usize = 64;

/// What to do with a failed authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Answer `RESOURCE_EXHAUSTED` (rather than `UNAUTHENTICATED`).
    pub exhausted: bool,
    /// Give it its own audit event and log line; if not, a summary counts it.
    pub audit: bool,
}

#[derive(Debug, Default)]
pub(super) struct PeerCount {
    failures: u32,
    audited: u32,
    quiet: Tally,
}

#[derive(Debug)]
pub(super) struct AuthState {
    /// When the current window began (its first failure), if one is open.
    started: Option<Instant>,
    window_start_unix: i64,
    pub(super) peers: lru::LruCache<PeerKey, PeerCount>,
    pub(super) ids: lru::LruCache<CredId, u32>,
    audited: u32,
    /// What peers evicted from the table in this window had counted.
    evicted: Tally,
    evicted_peers: u64,
    /// Summaries of ended windows, not yet written.
    pending: Vec<AuditEvent>,
}

/// Failed authentications, per peer and per credential id.
#[derive(Debug)]
pub struct AuthThrottle {
    settings: AuthSettings,
    /// Credential ids at their limit in the current window: while none
    /// is, a good caller's request does not take the lock.
    blocked: AtomicUsize,
    state: Mutex<AuthState>,
}

impl AuthThrottle {
    /// A throttle with `settings`, its first window starting now.
    pub fn new(settings: AuthSettings) -> Self {
        let settings = AuthSettings {
            window_secs: settings.window_secs.max(1),
            ..settings
        };
        Self {
            settings,
            blocked: AtomicUsize::new(0),
            state: Mutex::new(AuthState {
                started: None,
                window_start_unix: 0,
                peers: lru::LruCache::new(capacity(settings.entries)),
                ids: lru::LruCache::new(capacity(settings.entries)),
                audited: 0,
                evicted: Tally::default(),
                evicted_peers: 0,
                pending: Vec::new(),
            }),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, AuthState> {
        // The counts stay usable whatever panicked while holding them.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Before a secret is checked: refuses, and counts as a failure, an
    /// attempt with credential id `id` from `peer` if the id is at its
    /// limit and the peer has failed in this window.
    pub fn refuse_early(&self, peer: PeerKey, id: Option<&str>) -> Option<Verdict> {
        if self.blocked.load(Ordering::Acquire) == 0 {
            return None;
        }
        let id = id.and_then(cred_id)?;
        let mut guard = self.lock();
        let st = &mut *guard;
        self.roll(st, Instant::now());
        let at_limit = st
            .ids
            .peek(&id)
            .is_some_and(|n| *n >= self.settings.per_credential);
        let failing = st.peers.peek(&peer).is_some_and(|p| p.failures > 0);
        (at_limit && failing).then(|| self.count(st, peer, Some(id), true))
    }

    /// Counts a failed authentication from `peer` with credential id `id`
    /// (if the token was well-formed enough to name one).
    pub fn failed(&self, peer: PeerKey, id: Option<&str>) -> Verdict {
        let id = id.and_then(cred_id);
        let mut guard = self.lock();
        let st = &mut *guard;
        self.roll(st, Instant::now());
        self.count(st, peer, id, false)
    }

    fn count(&self, st: &mut AuthState, peer: PeerKey, id: Option<CredId>, early: bool) -> Verdict {
        let s = &self.settings;
        if st.started.is_none() {
            st.started = Some(Instant::now());
            st.window_start_unix = unix_now();
        }
        if let Some(id) = id {
            let n = match st.ids.get_mut(&id) {
                Some(n) => {
                    *n = n.saturating_add(1);
                    *n
                }
                None => {
                    if let Some((_, old)) = st.ids.push(id, 1)
                        && old >= s.per_credential
                    {
                        self.blocked.fetch_sub(1, Ordering::AcqRel);
                    }
                    1
                }
            };
            if n == s.per_credential {
                self.blocked.fetch_add(1, Ordering::AcqRel);
            }
        }
        if !st.peers.contains(&peer)
            && let Some((_, old)) = st.peers.push(peer, PeerCount::default())
            && old.quiet.total() > 0
        {
            st.evicted.merge(&old.quiet);
            st.evicted_peers = st.evicted_peers.saturating_add(1);
        }
        let Some(entry) = st.peers.get_mut(&peer) else {
            // Just put there; counted as over every bound if it is not.
            return Verdict {
                exhausted: true,
                audit: false,
            };
        };
        entry.failures = entry.failures.saturating_add(1);
        let exhausted = early || entry.failures > s.per_peer;
        let audit = entry.audited < s.audited_per_peer && st.audited < s.audited_total;
        if audit {
            entry.audited += 1;
            st.audited += 1;
        } else {
            entry.quiet.add(exhausted, id);
        }
        Verdict { exhausted, audit }
    }

    /// Ends the current window if `now` is past it, keeping its summaries;
    /// the next failure opens a new one.
    fn roll(&self, st: &mut AuthState, now: Instant) {
        if st
            .started
            .is_some_and(|s| now.duration_since(s).as_secs() >= self.settings.window_secs)
        {
            self.summarize(st);
        }
    }

    /// Moves the current window's counts into summary events and empties
    /// the tables.
    fn summarize(&self, st: &mut AuthState) {
        let mut rest = std::mem::take(&mut st.evicted);
        let mut rest_peers = std::mem::take(&mut st.evicted_peers);
        let mut written = 0;
        for (peer, count) in st.peers.iter() {
            if count.quiet.total() == 0 {
                continue;
            }
            if written < MAX_SUMMARIES {
                st.pending.push(self.summary_event(
                    st.window_start_unix,
                    peer.to_string(),
                    &count.quiet,
                ));
                written += 1;
            } else {
                rest.merge(&count.quiet);
                rest_peers = rest_peers.saturating_add(1);
            }
        }
        if rest.total() > 0 {
            st.pending.push(self.summary_event(
                st.window_start_unix,
                format!("{rest_peers} other addresses"),
                &rest,
            ));
        }
        st.peers.clear();
        st.ids.clear();
        st.audited = 0;
        st.started = None;
        self.blocked.store(0, Ordering::Release);
    }

    fn summary_event(&self, start: i64, peer: String, tally: &Tally) -> AuditEvent {
        AuditEvent {
            event_type: "auth_failure".into(),
            auth: "none".into(),
            peer,
            outcome: "summary".into(),
            status_code: if tally.exhausted > 0 {
                tonic::Code::ResourceExhausted as i32
            } else {
                tonic::Code::Unauthenticated as i32
            },
            detail: format!(
                "{} window_start_unix={start} window_secs={}",
                tally.describe(),
                self.settings.window_secs
            ),
            ..Default::default()
        }
    }

    /// The summary events of the windows that have ended, to write now.
    pub fn due(&self) -> Vec<AuditEvent> {
        let mut st = self.lock();
        self.roll(&mut st, Instant::now());
        std::mem::take(&mut st.pending)
    }

    /// Every summary not yet written, the current window's too (at
    /// shutdown); the counts start again.
    pub fn flush(&self) -> Vec<AuditEvent> {
        let mut st = self.lock();
        self.summarize(&mut st);
        std::mem::take(&mut st.pending)
    }
}
