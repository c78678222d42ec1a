//! The engine's caches of subject records and token pointers: sharded,
//! bounded, and never filled with a record older than one written since
//! the read began.

use super::*;

/// Caches of what reads need from the store: token → subject pointers (which
/// never change while the token exists) and decoded subject records. They
/// hold ciphertexts and wrapped keys only, never a plaintext value.
///
/// Writers put the record they committed (under the subject's lock) and bump
/// their shard's generation; readers that missed fill the cache only if no
/// write reached the shard since their read began, so a slow reader can never
/// put back a record older than one a writer committed.
pub(super) struct RecordCache {
    pointers: Vec<std::sync::Mutex<lru::LruCache<String, Arc<str>>>>,
    subjects: Vec<std::sync::Mutex<SubjectShard>>,
    hasher: std::collections::hash_map::RandomState,
}

pub(super) struct SubjectShard {
    records: lru::LruCache<Arc<str>, Arc<SubjectRecord>>,
    /// Bumped by every write-through and every forget.
    generation: u64,
}

/// Either a cached record, or the generation a reader must quote to fill.
pub(super) enum CacheRead {
    Hit(Arc<SubjectRecord>),
    Miss(u64),
}

impl RecordCache {
    pub(super) fn new(entries: usize) -> Self {
        let per = std::num::NonZeroUsize::new((entries / CACHE_SHARDS).max(1))
            .unwrap_or(std::num::NonZeroUsize::MIN);
        Self {
            pointers: (0..CACHE_SHARDS)
                .map(|_| std::sync::Mutex::new(lru::LruCache::new(per)))
                .collect(),
            subjects: (0..CACHE_SHARDS)
                .map(|_| {
                    std::sync::Mutex::new(SubjectShard {
                        records: lru::LruCache::new(per),
                        generation: 0,
                    })
                })
                .collect(),
            hasher: Default::default(),
        }
    }

    pub(super) fn shard(&self, key: &str) -> usize {
        usize::try_from(self.hasher.hash_one(key) % CACHE_SHARDS as u64).unwrap_or(0)
    }

    pub(super) fn pointer(&self, token: &str) -> Option<Arc<str>> {
        self.pointers[self.shard(token)]
            .lock()
            .ok()?
            .get(token)
            .cloned()
    }

    pub(super) fn put_pointer(&self, token: &str, subject: Arc<str>) {
        if let Ok(mut c) = self.pointers[self.shard(token)].lock() {
            c.put(token.to_owned(), subject);
        }
    }

    /// A cached record, or the generation to quote in [`RecordCache::fill`].
    pub(super) fn read(&self, subject: &str) -> CacheRead {
        match self.subjects[self.shard(subject)].lock() {
            Ok(mut shard) => match shard.records.get(subject) {
                Some(r) => CacheRead::Hit(r.clone()),
                None => CacheRead::Miss(shard.generation),
            },
            // A poisoned shard is never filled: quote an impossible generation.
            Err(_) => CacheRead::Miss(u64::MAX),
        }
    }

    /// Caches a record a reader loaded, unless a write reached the shard
    /// since the reader's [`RecordCache::read`] returned `generation`.
    pub(super) fn fill(&self, subject: &str, record: Arc<SubjectRecord>, generation: u64) {
        if let Ok(mut shard) = self.subjects[self.shard(subject)].lock()
            && shard.generation == generation
        {
            shard.records.put(Arc::from(subject), record);
        }
    }

    /// The shard generation of `subject` now (to quote in
    /// [`RecordCache::write_through_since`]).
    pub(super) fn generation(&self, subject: &str) -> u64 {
        self.subjects[self.shard(subject)]
            .lock()
            .map_or(u64::MAX, |s| s.generation)
    }

    /// Caches the record a writer just committed, unless the shard was
    /// told of a change since `generation` (on a shared store, another
    /// node's change, newer than this one, may have been dropped from the
    /// cache meanwhile): then the subject is forgotten instead.
    pub(super) fn write_through_since(
        &self,
        subject: &str,
        record: Arc<SubjectRecord>,
        generation: u64,
    ) {
        if let Ok(mut shard) = self.subjects[self.shard(subject)].lock() {
            let unchanged = shard.generation == generation;
            shard.generation = shard.generation.wrapping_add(1);
            if unchanged {
                shard.records.put(Arc::from(subject), record);
            } else {
                shard.records.pop(subject);
            }
        }
    }

    /// Caches the record a writer just committed.
    pub(super) fn write_through(&self, subject: &str, record: Arc<SubjectRecord>) {
        if let Ok(mut shard) = self.subjects[self.shard(subject)].lock() {
            shard.generation = shard.generation.wrapping_add(1);
            shard.records.put(Arc::from(subject), record);
        }
    }

    /// Drops a token's pointer.
    pub(super) fn forget_pointer(&self, token: &str) {
        if let Ok(mut c) = self.pointers[self.shard(token)].lock() {
            c.pop(token);
        }
    }

    /// Drops a subject's record (its state in the store is unknown).
    pub(super) fn forget_subject(&self, subject: &str) {
        if let Ok(mut shard) = self.subjects[self.shard(subject)].lock() {
            shard.generation = shard.generation.wrapping_add(1);
            shard.records.pop(subject);
        }
    }

    /// Forgets `subject`'s record and the pointers of the tokens it held
    /// (another node changed or erased it).
    pub(super) fn forget_subject_and_tokens(&self, subject: &str) {
        let record = self.subjects[self.shard(subject)]
            .lock()
            .ok()
            .and_then(|mut shard| {
                shard.generation = shard.generation.wrapping_add(1);
                shard.records.pop(subject)
            });
        if let Some(record) = record {
            for e in &record.entries {
                self.forget_pointer(&e.token);
            }
        }
    }

    /// Forgets everything.
    pub(super) fn clear(&self) {
        for p in &self.pointers {
            if let Ok(mut p) = p.lock() {
                p.clear();
            }
        }
        for s in &self.subjects {
            if let Ok(mut s) = s.lock() {
                s.generation = s.generation.wrapping_add(1);
                s.records.clear();
            }
        }
    }
}

// Values never reach a log or a panic message through Debug.
