//! The decision cache: one per loaded policy set, so a reload drops it.
//!
//! Keyed by everything a decision depends on: principal and role, action,
//! field, purpose and the subject's context (consent, restriction, policy
//! version). Bounded: a full shard is cleared (decisions are cheap to redo).

use super::{Action, Reveal, SubjectContext};
use crate::auth::Principal;
use crate::schema::FieldDef;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::{Arc, Mutex};

const SHARDS: usize = 16;
/// Most decisions kept per shard.
const SHARD_CAPACITY: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Key {
    principal: Arc<str>,
    role: Arc<str>,
    /// `None` is the combined reveal decision.
    action: Option<Action>,
    field: String,
    purpose: String,
    consented: u128,
    restricted: bool,
    policy_version: String,
}

impl Key {
    pub(super) fn new(
        principal: &Principal,
        action: Option<Action>,
        field: &FieldDef,
        purpose: &str,
        subject: &SubjectContext,
    ) -> Self {
        Self {
            principal: principal.name.clone(),
            role: principal.role.clone(),
            action,
            field: field.name.clone(),
            purpose: purpose.to_owned(),
            consented: subject.consented,
            restricted: subject.restricted,
            policy_version: subject.policy_version.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Cached {
    Reveal(Reveal),
    Allowed(bool),
}

pub(super) struct DecisionCache {
    shards: Vec<Mutex<HashMap<Key, Cached>>>,
    hasher: std::collections::hash_map::RandomState,
}

impl DecisionCache {
    pub(super) fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
        }
    }

    fn shard(&self, key: &Key) -> &Mutex<HashMap<Key, Cached>> {
        let h = self.hasher.hash_one(key);
        &self.shards[usize::try_from(h % SHARDS as u64).unwrap_or(0)]
    }

    fn get(&self, key: &Key) -> Option<Cached> {
        self.shard(key).lock().ok()?.get(key).copied()
    }

    fn put(&self, key: Key, value: Cached) {
        if let Ok(mut shard) = self.shard(&key).lock() {
            if shard.len() >= SHARD_CAPACITY {
                shard.clear();
            }
            shard.insert(key, value);
        }
    }

    pub(super) fn get_reveal(&self, key: &Key) -> Option<Reveal> {
        match self.get(key)? {
            Cached::Reveal(r) => Some(r),
            Cached::Allowed(_) => None,
        }
    }

    pub(super) fn put_reveal(&self, key: Key, r: Reveal) {
        self.put(key, Cached::Reveal(r));
    }

    pub(super) fn get_allowed(&self, key: &Key) -> Option<bool> {
        match self.get(key)? {
            Cached::Allowed(a) => Some(a),
            Cached::Reveal(_) => None,
        }
    }

    pub(super) fn put_allowed(&self, key: Key, allowed: bool) {
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
