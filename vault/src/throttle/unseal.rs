//! Failed unseal attempts, per peer and overall (see the module
//! documentation of [`crate::throttle`]).

use super::*;

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
