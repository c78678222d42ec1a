//! The decision cache: one per loaded policy set, so a reload drops it.
//!
//! Keyed by everything a decision depends on: principal and role, action,
//! field, purpose and the subject's context (consent, restriction, policy
//! version). A look-up hashes the borrowed key once and allocates nothing;
//! the entry keeps the full key and is compared with it, so two keys that
//! share a hash never share a decision. Bounded: a full shard is cleared
//! (decisions are cheap to redo).

use super::{Action, SubjectContext};
use crate::model::{AuthMethod, Principal, Reveal};
use crate::schema::FieldDef;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};

const SHARDS: usize = 16;
/// Most decisions kept per shard.
const SHARD_CAPACITY: usize = 4096;

/// A decision's key, borrowed from the request.
#[derive(Debug, Clone, Copy)]
pub(super) struct Key<'a> {
    principal: &'a str,
    role: &'a str,
    /// How the principal authenticated (`principal.auth` in Cedar).
    method: AuthMethod,
    /// Whether the credential may act on personal data at all.
    data_capable: bool,
    /// `None` is the combined reveal decision.
    action: Option<Action>,
    field: &'a str,
    purpose: &'a str,
    consented: u128,
    restricted: bool,
    policy_version: &'a str,
}

impl<'a> Key<'a> {
    pub(super) fn new(
        principal: &'a Principal,
        action: Option<Action>,
        field: &'a FieldDef,
        purpose: &'a str,
        subject: &'a SubjectContext,
    ) -> Self {
        Self {
            principal: &principal.name,
            role: &principal.role,
            method: principal.method,
            data_capable: principal.data_capable,
            action,
            field: &field.name,
            purpose,
            consented: subject.consented,
            restricted: subject.restricted,
            policy_version: &subject.policy_version,
        }
    }

    /// The key of a subject, audit or system action (no field, purpose or
    /// subject context: no field is named "").
    pub(super) fn whole(principal: &'a Principal, action: Action) -> Self {
        Self {
            principal: &principal.name,
            role: &principal.role,
            method: principal.method,
            data_capable: principal.data_capable,
            action: Some(action),
            field: "",
            purpose: "",
            consented: 0,
            restricted: false,
            policy_version: "",
        }
    }

    fn to_owned(self) -> OwnedKey {
        OwnedKey {
            principal: Arc::from(self.principal),
            role: Arc::from(self.role),
            method: self.method,
            data_capable: self.data_capable,
            action: self.action,
            field: Arc::from(self.field),
            purpose: Arc::from(self.purpose),
            consented: self.consented,
            restricted: self.restricted,
            policy_version: Arc::from(self.policy_version),
        }
    }

    fn hash_with(&self, state: &impl BuildHasher) -> u64 {
        let mut h = state.build_hasher();
        self.principal.hash(&mut h);
        self.role.hash(&mut h);
        self.method.hash(&mut h);
        self.data_capable.hash(&mut h);
        self.action.hash(&mut h);
        self.field.hash(&mut h);
        self.purpose.hash(&mut h);
        self.consented.hash(&mut h);
        self.restricted.hash(&mut h);
        self.policy_version.hash(&mut h);
        h.finish()
    }
}

/// The key kept with a cached decision.
#[derive(Debug)]
struct OwnedKey {
    principal: Arc<str>,
    role: Arc<str>,
    method: AuthMethod,
    data_capable: bool,
    action: Option<Action>,
    field: Arc<str>,
    purpose: Arc<str>,
    consented: u128,
    restricted: bool,
    policy_version: Arc<str>,
}

impl OwnedKey {
    fn matches(&self, k: &Key<'_>) -> bool {
        self.action == k.action
            && self.method == k.method
            && self.data_capable == k.data_capable
            && self.consented == k.consented
            && self.restricted == k.restricted
            && *self.field == *k.field
            && *self.purpose == *k.purpose
            && *self.principal == *k.principal
            && *self.role == *k.role
            && *self.policy_version == *k.policy_version
    }
}

#[derive(Debug, Clone, Copy)]
enum Cached {
    Reveal(Reveal),
    Allowed(bool),
}

/// Hashes a `u64` that is already a hash: itself.
#[derive(Default)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Shard = HashMap<u64, (OwnedKey, Cached), std::hash::BuildHasherDefault<PreHashed>>;

pub(super) struct DecisionCache {
    shards: Vec<Mutex<Shard>>,
    hasher: std::collections::hash_map::RandomState,
}

impl DecisionCache {
    pub(super) fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: Default::default(),
        }
    }

    fn get(&self, key: &Key<'_>) -> Option<Cached> {
        let h = key.hash_with(&self.hasher);
        let shard = self.shards[usize::try_from(h % SHARDS as u64).unwrap_or(0)]
            .lock()
            .ok()?;
        match shard.get(&h) {
            Some((k, v)) if k.matches(key) => Some(*v),
            _ => None,
        }
    }

    fn put(&self, key: Key<'_>, value: Cached) {
        let h = key.hash_with(&self.hasher);
        if let Ok(mut shard) = self.shards[usize::try_from(h % SHARDS as u64).unwrap_or(0)].lock() {
            if shard.len() >= SHARD_CAPACITY {
                shard.clear();
            }
            shard.insert(h, (key.to_owned(), value));
        }
    }

    pub(super) fn get_reveal(&self, key: &Key<'_>) -> Option<Reveal> {
        match self.get(key)? {
            Cached::Reveal(r) => Some(r),
            Cached::Allowed(_) => None,
        }
    }

    pub(super) fn put_reveal(&self, key: Key<'_>, r: Reveal) {
        self.put(key, Cached::Reveal(r));
    }

    pub(super) fn get_allowed(&self, key: &Key<'_>) -> Option<bool> {
        match self.get(key)? {
            Cached::Allowed(a) => Some(a),
            Cached::Reveal(_) => None,
        }
    }

    pub(super) fn put_allowed(&self, key: Key<'_>, allowed: bool) {
        self.put(key, Cached::Allowed(allowed));
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |s| s.len()))
            .sum()
    }
}

// Keys hold no secret, but keep Debug short.
impl std::fmt::Debug for DecisionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DecisionCache")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Schema;

    #[test]
    fn a_decision_is_found_only_under_its_exact_key() {
        let schema = Schema::default_schema(4096).unwrap();
        let p = Principal {
            name: Arc::from("a"),
            role: Arc::from("r"),
            method: AuthMethod::Bearer,
            credential_id: None,
            data_capable: true,
        };
        let email = schema.field("email").unwrap();
        let phone = schema.field("phone").unwrap();
        let ctx = SubjectContext::new(&schema, ["booking"], false, "v1");
        let other = SubjectContext::new(&schema, ["booking"], true, "v1");
        let c = DecisionCache::new();
        c.put_reveal(Key::new(&p, None, email, "booking", &ctx), Reveal::Masked);
        assert_eq!(
            c.get_reveal(&Key::new(&p, None, email, "booking", &ctx)),
            Some(Reveal::Masked)
        );
        assert_eq!(
            c.get_reveal(&Key::new(&p, None, phone, "booking", &ctx)),
            None
        );
        assert_eq!(
            c.get_reveal(&Key::new(&p, None, email, "billing", &ctx)),
            None
        );
        // The same name and role over mTLS is another principal to Cedar
        // (`principal.auth`), so another key.
        let mtls = Principal {
            method: AuthMethod::Mtls,
            ..p.clone()
        };
        assert_eq!(
            c.get_reveal(&Key::new(&mtls, None, email, "booking", &ctx)),
            None
        );
        let single = Principal {
            data_capable: false,
            ..p.clone()
        };
        assert_eq!(
            c.get_reveal(&Key::new(&single, None, email, "booking", &ctx)),
            None
        );
        assert_eq!(
            c.get_reveal(&Key::new(&p, None, email, "booking", &other)),
            None
        );
        assert_eq!(
            c.get_allowed(&Key::new(&p, Some(Action::Lookup), email, "booking", &ctx)),
            None
        );
    }
}
