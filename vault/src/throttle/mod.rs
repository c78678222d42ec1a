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

mod auth;
mod unseal;

pub use auth::{AuthSettings, AuthThrottle, MAX_SUMMARIES, Verdict};
pub use unseal::{MAX_UNSEAL_EVENTS, UnsealSettings, UnsealThrottle};

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

pub(super) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

pub(super) fn capacity(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN)
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
