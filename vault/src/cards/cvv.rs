//! Card verification values (PCI DSS 3.3.1: never stored after
//! authorisation, not even encrypted).
//!
//! A CVV lives only here: in memory, in a buffer that is zeroed when it is
//! dropped, for at most its time to live (`cvv_ttl_secs`, 15 minutes by
//! default). It is handed out at most once ([`CvvVault::take`]) and then
//! gone. Nothing of it reaches the store, the audit trail or a log; the
//! subject record keeps only that a CVV token exists, so that asking for it
//! later answers `EXPIRED` rather than looking like an unknown token. A
//! restart drops every pending CVV.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use zeroize::Zeroizing;

/// One CVV waiting for its single reveal.
struct Pending {
    subject: Arc<str>,
    value: Zeroizing<String>,
    expires_at: i64,
}

/// A CVV taken out of the vault for one reveal: give it back with
/// [`CvvVault::put_back`] if the reveal cannot be completed; dropping it
/// zeroes the value.
pub struct Held {
    token: String,
    pending: Pending,
}

impl Held {
    /// The value, for the one response that carries it.
    pub fn value(&self) -> &str {
        &self.pending.value
    }
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Held(CVV, redacted)")
    }
}

/// Pending CVVs by token.
pub struct CvvVault {
    pending: Mutex<HashMap<String, Pending>>,
    ttl_secs: i64,
    max_pending: usize,
}

impl std::fmt::Debug for CvvVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CvvVault")
            .field("pending", &self.len())
            .field("ttl_secs", &self.ttl_secs)
            .field("max_pending", &self.max_pending)
            .finish()
    }
}

impl CvvVault {
    /// An empty vault whose CVVs live `ttl_secs` and of which at most
    /// `max_pending` wait at a time.
    pub fn new(ttl_secs: u64, max_pending: usize) -> Self {
        Self {
            pending: Mutex::new(HashMap::new()),
            ttl_secs: i64::try_from(ttl_secs).unwrap_or(i64::MAX),
            max_pending,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Pending>> {
        // A panic while holding the lock cannot leave a half-written entry
        // (every change is one insert or remove), so the map stays usable.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `n` more CVVs fit under the limit (checked before a
    /// Tokenize writes anything; concurrent requests may overshoot the limit
    /// by their own count).
    pub fn has_room(&self, n: usize) -> bool {
        self.lock().len().saturating_add(n) <= self.max_pending
    }

    /// Keeps `value` for one reveal of `token`, a token of `subject`, from
    /// `now` (Unix seconds) for the time to live.
    pub fn put(&self, token: &str, subject: Arc<str>, value: Zeroizing<String>, now: i64) {
        let pending = Pending {
            subject,
            value,
            expires_at: now.saturating_add(self.ttl_secs),
        };
        self.lock().insert(token.to_owned(), pending);
    }

    /// Takes the CVV of `token` (of `subject`) out for its one reveal, or
    /// `None` if there is none: already revealed, expired, or lost in a
    /// restart.
    pub fn take(&self, token: &str, subject: &str, now: i64) -> Option<Held> {
        let mut map = self.lock();
        let p = map.remove(token)?;
        // An expired CVV is dropped (and zeroed) here; one of another
        // subject cannot happen (tokens are unique) but is left in place.
        if p.expires_at <= now {
            return None;
        }
        if &*p.subject != subject {
            map.insert(token.to_owned(), p);
            return None;
        }
        Some(Held {
            token: token.to_owned(),
            pending: p,
        })
    }

    /// Whether `token` (of `subject`) still has a CVV waiting.
    pub fn is_pending(&self, token: &str, subject: &str, now: i64) -> bool {
        self.lock()
            .get(token)
            .is_some_and(|p| p.expires_at > now && &*p.subject == subject)
    }

    /// Returns a CVV whose reveal failed (its audit event could not be
    /// written), unless it expired meanwhile.
    pub fn put_back(&self, held: Held, now: i64) {
        if held.pending.expires_at > now {
            self.lock().insert(held.token, held.pending);
        }
    }

    /// Drops (and zeroes) every CVV past its time to live; returns how many.
    pub fn sweep(&self, now: i64) -> usize {
        let mut map = self.lock();
        let before = map.len();
        map.retain(|_, p| p.expires_at > now);
        before - map.len()
    }

    /// How many CVVs are waiting.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no CVV is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault() -> CvvVault {
        CvvVault::new(900, 2)
    }

    #[test]
    fn a_cvv_is_revealed_once() {
        let v = vault();
        v.put("t1", Arc::from("s1"), Zeroizing::new("123".into()), 1000);
        assert!(v.is_pending("t1", "s1", 1000));
        assert!(
            v.take("t1", "s2", 1000).is_none(),
            "another subject's token"
        );
        let held = v.take("t1", "s1", 1000).unwrap();
        assert_eq!(held.value(), "123");
        assert!(!format!("{held:?}").contains("123"));
        assert!(v.take("t1", "s1", 1000).is_none());
        assert!(!v.is_pending("t1", "s1", 1000));
    }

    #[test]
    fn a_failed_reveal_puts_it_back_until_it_expires() {
        let v = vault();
        v.put("t1", Arc::from("s1"), Zeroizing::new("123".into()), 1000);
        let held = v.take("t1", "s1", 1000).unwrap();
        v.put_back(held, 1001);
        let held = v.take("t1", "s1", 1002).unwrap();
        v.put_back(held, 1900);
        assert!(v.is_empty(), "expired while held: not put back");
    }

    #[test]
    fn cvvs_expire_after_their_time_to_live() {
        let v = vault();
        v.put("t1", Arc::from("s1"), Zeroizing::new("123".into()), 1000);
        v.put("t2", Arc::from("s1"), Zeroizing::new("456".into()), 1500);
        assert!(!v.has_room(1));
        assert!(v.take("t1", "s1", 1900).is_none());
        assert_eq!(v.len(), 1, "an expired CVV is dropped when asked for");
        assert_eq!(v.sweep(2399), 0);
        assert_eq!(v.sweep(2400), 1);
        assert!(v.is_empty() && v.has_room(2));
    }
}
