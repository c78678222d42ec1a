//! Throttling under hostile load: failed authentications counted per peer
//! address and per credential id, failed unseal attempts per peer and
//! overall, in fixed windows and bounded tables; beyond a bound, refusals
//! are summed into summary audit events instead of one event each.
//!
//! **Authentication** ([`AuthThrottle`]). Only failures count, so a peer
//! full of good callers (a NAT, a sidecar, every test on 127.0.0.1) is never
//! slowed down by its own success. In each window:
//!
//! - a peer's first `audited_per_peer` failures (and at most
//!   `audited_total` over all peers) get their own `auth_failure` event and
//!   log line; the rest are only counted, and one `auth_failure` event with
//!   outcome `summary` per peer says how many, with which credential ids
//!   (never a secret), when the window ends;
//! - after `per_peer` failures, the peer's failures are answered
//!   `RESOURCE_EXHAUSTED` instead of `UNAUTHENTICATED` (its good credentials
//!   still work);
//! - after `per_credential` failures with one credential id (from any
//!   peers), an attempt with that id from a peer that has itself failed in
//!   this window is refused `RESOURCE_EXHAUSTED` before its secret is
//!   checked (no HMAC, no audit event, no log line). The id's holder on an
//!   address that has not failed is still checked as usual, so that one peer
//!   cannot lock a credential out for everybody. Ids are counted whether or
//!   not they were ever issued, so the answers never tell whether one exists.
//!
//! A window opens at the first failure after the last one closed and lasts
//! `window_secs`; then its summaries are written (within a second) and its
//! counts dropped. The tables hold at most `entries` peers and `entries`
//! credential ids each (least recently used first out; what an evicted peer
//! had counted goes into a summary all the same): about 4 MB at the default
//! of 10 000.
//!
//! **Unsealing** ([`UnsealThrottle`], in the sealed vault's one lock). After
//! `per_peer` failed attempts from a peer, or `total` from all peers, in a
//! window, a further attempt from a peer that has failed in the window is
//! refused `RESOURCE_EXHAUSTED` without looking at its share. At most
//! [`MAX_UNSEAL_EVENTS`] attempts are kept as events for the audit trail
//! (it opens only once unsealed); the refusals, and any attempts beyond
//! that, are summed in one `unseal` event with outcome `summary`.
//!
//! IPv6 peers are counted per /64 network (what one host usually holds).

use crate::audit::AuditEvent;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// Where attempts come from: an IPv4 address, an IPv6 /64 network, or
/// unknown (no address: all such attempts share one count).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerKey(Option<IpAddr>);

impl PeerKey {
    /// The key of a request from `addr`.
    pub fn of(addr: Option<SocketAddr>) -> Self {
        Self(addr.map(|a| match a.ip().to_canonical() {
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & (u128::MAX << 64))),
            v4 => v4,
        }))
    }
}

impl std::fmt::Display for PeerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            None => f.write_str("unknown"),
            Some(IpAddr::V4(a)) => write!(f, "{a}"),
            Some(IpAddr::V6(a)) => write!(f, "{a}/64"),
        }
    }
}

/// A credential id as counted: the 16 base64url characters of a
/// well-formed token's middle part.
type CredId = [u8; 16];

fn cred_id(id: &str) -> Option<CredId> {
    let bytes: CredId = id.as_bytes().try_into().ok()?;
    bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        .then_some(bytes)
}

fn cred_text(id: &CredId) -> &str {
    std::str::from_utf8(id).unwrap_or("?")
}

/// Counts per key for the first [`Top::KEYS`] keys, and one count for the rest.
#[derive(Debug, Clone)]
struct Top<K> {
    counts: Vec<(K, u64)>,
    other: u64,
}

impl<K> Default for Top<K> {
    fn default() -> Self {
        Self {
            counts: Vec::new(),
            other: 0,
        }
    }
}

impl<K: PartialEq + Copy> Top<K> {
    const KEYS: usize = 8;

    fn add(&mut self, key: K, n: u64) {
        if let Some((_, c)) = self.counts.iter_mut().find(|(k, _)| *k == key) {
            *c = c.saturating_add(n);
        } else if self.counts.len() < Self::KEYS {
            self.counts.push((key, n));
        } else {
            self.other = self.other.saturating_add(n);
        }
    }

    fn merge(&mut self, other: &Self) {
        for (k, n) in &other.counts {
            self.add(*k, *n);
        }
        self.other = self.other.saturating_add(other.other);
    }
}

/// Failed authentications counted rather than audited one by one.
#[derive(Debug, Clone, Default)]
struct Tally {
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
struct PeerCount {
    failures: u32,
    audited: u32,
    quiet: Tally,
}

#[derive(Debug)]
struct AuthState {
    /// When the current window began (its first failure), if one is open.
    started: Option<Instant>,
    window_start_unix: i64,
    peers: lru::LruCache<PeerKey, PeerCount>,
    ids: lru::LruCache<CredId, u32>,
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

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn capacity(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN)
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

    fn lock(&self) -> std::sync::MutexGuard<'_, AuthState> {
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

/// The settings of [`UnsealThrottle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnsealSettings {
    /// Length of a window, in seconds.
    pub window_secs: u64,
    /// Failed attempts per peer per window before refusals.
    pub per_peer: u32,
    /// Failed attempts per window, from all peers, before refusals.
    pub total: u32,
}

impl Default for UnsealSettings {
    fn default() -> Self {
        Self {
            window_secs: 60,
            per_peer: 10,
            total: 100,
        }
    }
}

/// Most unseal attempts kept as events while sealed; beyond, a summary
/// counts them.
pub const MAX_UNSEAL_EVENTS: usize = 1000;

/// Most peers whose failed unseal attempts are counted in a window.
const UNSEAL_PEERS: usize = 4096;

/// Failed unseal attempts, per peer and overall (used under the sealed
/// vault's lock).
#[derive(Debug)]
pub struct UnsealThrottle {
    settings: UnsealSettings,
    /// When the current window began (its first failure), if one is open.
    started: Option<Instant>,
    peers: lru::LruCache<PeerKey, u32>,
    failures: u32,
    /// Attempts refused unchecked, per peer, since sealed.
    refused: Top<PeerKey>,
    refused_total: u64,
    /// Attempts checked but not kept as events (over [`MAX_UNSEAL_EVENTS`]).
    unrecorded: u64,
    /// Whether this window's first refusal was logged.
    warned: bool,
}

impl UnsealThrottle {
    /// A throttle with `settings`, its first window starting now.
    pub fn new(settings: UnsealSettings) -> Self {
        Self {
            settings: UnsealSettings {
                window_secs: settings.window_secs.max(1),
                ..settings
            },
            started: None,
            peers: lru::LruCache::new(capacity(UNSEAL_PEERS)),
            failures: 0,
            refused: Top::default(),
            refused_total: 0,
            unrecorded: 0,
            warned: false,
        }
    }

    fn roll(&mut self) {
        if self
            .started
            .is_some_and(|s| s.elapsed().as_secs() >= self.settings.window_secs)
        {
            self.started = None;
            self.peers.clear();
            self.failures = 0;
            self.warned = false;
        }
    }

    /// Whether an attempt from `peer` is refused before its share is
    /// looked at (and counts it if so).
    pub fn refuse(&mut self, peer: PeerKey) -> bool {
        self.roll();
        let mine = self.peers.peek(&peer).copied().unwrap_or(0);
        let refused =
            mine >= self.settings.per_peer || (mine > 0 && self.failures >= self.settings.total);
        if refused {
            self.refused.add(peer, 1);
            self.refused_total = self.refused_total.saturating_add(1);
            if !self.warned {
                self.warned = true;
                tracing::warn!(%peer, "too many failed unseal attempts: refusing them until the window ends");
            }
        }
        refused
    }

    /// Counts a failed attempt from `peer`.
    pub fn failed(&mut self, peer: PeerKey) {
        self.roll();
        self.started.get_or_insert_with(Instant::now);
        self.failures = self.failures.saturating_add(1);
        match self.peers.get_mut(&peer) {
            Some(n) => *n = n.saturating_add(1),
            None => {
                self.peers.push(peer, 1);
            }
        }
    }

    /// Whether one more checked attempt may be kept as an event, `kept`
    /// being kept already; counts it if not.
    pub fn may_record(&mut self, kept: usize) -> bool {
        if kept < MAX_UNSEAL_EVENTS {
            true
        } else {
            self.unrecorded = self.unrecorded.saturating_add(1);
            false
        }
    }

    /// The one event that sums up what was refused or not recorded since
    /// sealed, if anything was.
    pub fn summary(&self) -> Option<AuditEvent> {
        if self.refused_total == 0 && self.unrecorded == 0 {
            return None;
        }
        let mut peers = String::new();
        for (i, (p, n)) in self.refused.counts.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(peers, "{sep}{p}:{n}");
        }
        let mut ev = crate::audit::system_event(
            "unseal",
            "summary",
            format!(
                "refused={} not_recorded={} peers={peers} other_peers={} window_secs={} per_peer={} total={}",
                self.refused_total,
                self.unrecorded,
                self.refused.other,
                self.settings.window_secs,
                self.settings.per_peer,
                self.settings.total
            ),
        );
        // No rpc or peer: it sums up many calls from many addresses.
        ev.status_code = tonic::Code::ResourceExhausted as i32;
        ev.action = "unseal".into();
        Some(ev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(s: &str) -> PeerKey {
        PeerKey::of(Some(s.parse().unwrap()))
    }

    const ID: &str = "AAAAAAAAAAAAAAAA";

    #[test]
    fn ipv6_peers_are_counted_per_64() {
        assert_eq!(
            peer("[2001:db8:1:2::5]:1"),
            peer("[2001:db8:1:2:ffff::1]:9")
        );
        assert_ne!(peer("[2001:db8:1:2::5]:1"), peer("[2001:db8:1:3::5]:1"));
        assert_eq!(peer("[::ffff:192.0.2.1]:5"), peer("192.0.2.1:6"));
        assert_eq!(peer("127.0.0.1:5").to_string(), "127.0.0.1");
        assert_eq!(peer("[2001:db8::7]:5").to_string(), "2001:db8::/64");
    }

    #[test]
    fn a_peer_is_audited_then_counted_then_refused() {
        let t = AuthThrottle::new(AuthSettings {
            per_peer: 5,
            audited_per_peer: 2,
            window_secs: 3600,
            ..Default::default()
        });
        let p = peer("192.0.2.1:1");
        let v: Vec<Verdict> = (0..8).map(|_| t.failed(p, None)).collect();
        assert!(v[..2].iter().all(|v| v.audit && !v.exhausted));
        assert!(v[2..5].iter().all(|v| !v.audit && !v.exhausted));
        assert!(v[5..].iter().all(|v| !v.audit && v.exhausted));
        // Another peer is not affected.
        assert_eq!(
            t.failed(peer("192.0.2.2:1"), None),
            Verdict {
                exhausted: false,
                audit: true
            }
        );
        assert!(t.due().is_empty(), "the window has not ended");
        let s = t.flush();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].peer, "192.0.2.1");
        assert!(
            s[0].detail
                .starts_with("not_audited=6 unauthenticated=3 resource_exhausted=3"),
            "{}",
            s[0].detail
        );
        assert!(t.flush().is_empty());
    }

    #[test]
    fn a_credential_id_at_its_limit_is_refused_unchecked_from_failing_peers_only() {
        let t = AuthThrottle::new(AuthSettings {
            per_credential: 3,
            audited_per_peer: 0,
            window_secs: 3600,
            ..Default::default()
        });
        let (bad, clean) = (peer("192.0.2.1:1"), peer("192.0.2.9:1"));
        assert_eq!(t.refuse_early(bad, Some(ID)), None);
        for _ in 0..3 {
            assert!(!t.failed(bad, Some(ID)).exhausted);
        }
        assert!(t.refuse_early(bad, Some(ID)).is_some_and(|v| v.exhausted));
        // The holder on a clean address is checked as usual.
        assert_eq!(t.refuse_early(clean, Some(ID)), None);
        // Another id from the failing peer too.
        assert_eq!(t.refuse_early(bad, Some("BBBBBBBBBBBBBBBB")), None);
        let s = t.flush();
        assert!(
            s[0].detail.contains(
                "unauthenticated=3 resource_exhausted=1 credential_ids=AAAAAAAAAAAAAAAA:4 "
            ),
            "{}",
            s[0].detail
        );
        // A new window starts clean.
        assert_eq!(t.refuse_early(bad, Some(ID)), None);
    }

    #[test]
    fn the_tables_stay_bounded_and_evicted_counts_are_summarized() {
        let t = AuthThrottle::new(AuthSettings {
            audited_per_peer: 0,
            entries: 4,
            window_secs: 3600,
            ..Default::default()
        });
        for i in 0..100u8 {
            t.failed(
                peer(&format!("192.0.2.{i}:1")),
                Some(&format!("AAAAAAAAAAAAAA{i:02}")),
            );
        }
        {
            let st = t.lock();
            assert!(st.peers.len() <= 4 && st.ids.len() <= 4);
        }
        let s = t.flush();
        let total: u64 = s
            .iter()
            .map(|e| {
                e.detail
                    .strip_prefix("not_audited=")
                    .and_then(|d| d.split(' ').next())
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
            })
            .sum();
        assert_eq!(total, 100);
        assert!(s.len() <= MAX_SUMMARIES + 1);
    }

    #[test]
    fn unseal_attempts_are_capped_per_peer_and_overall() {
        let mut t = UnsealThrottle::new(UnsealSettings {
            window_secs: 3600,
            per_peer: 2,
            total: 3,
        });
        let (a, b, c) = (
            peer("192.0.2.1:1"),
            peer("192.0.2.2:1"),
            peer("192.0.2.3:1"),
        );
        assert!(!t.refuse(a));
        t.failed(a);
        assert!(!t.refuse(a));
        t.failed(a);
        assert!(t.refuse(a), "per peer");
        assert!(!t.refuse(b));
        t.failed(b);
        // Three failures overall: a failing peer is refused, a clean one is not.
        assert!(t.refuse(b));
        assert!(!t.refuse(c));
        let s = t.summary().unwrap();
        assert!(s.detail.starts_with("refused=2 "), "{}", s.detail);
    }
}
