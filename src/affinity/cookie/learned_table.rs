//! [`LearnedTable`]: application cookie -> backend, bounded in entries and in time.
//!
//! Keys are the 128-bit XXH3 hash of the cookie value, never the value: entries have a fixed
//! size (so the cap bounds memory), and the table (or Redis) never holds session ids that could be
//! replayed. The table is split into shards, each an LRU behind its own mutex, so requests for
//! different keys rarely meet on one lock.

use std::num::NonZeroUsize;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use lru::LruCache;

use crate::BackendId;

/// Shards of the table (fewer when the cap is smaller, so the cap stays exact).
const MAX_SHARDS: usize = 16;

/// The hash that keys an application cookie value.
pub(crate) fn key_of(value: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(value.as_bytes())
}

#[derive(Debug, Clone)]
struct Entry {
    backend: BackendId,
    expires: Instant,
}

/// A bounded map with least-recently-used eviction and a sliding time to live.
#[derive(Debug)]
pub(crate) struct LearnedTable {
    shards: Box<[Mutex<LruCache<u128, Entry>>]>,
    ttl: Duration,
}

impl LearnedTable {
    /// A table of at most `capacity` entries (>= 1), each living `ttl` after its last use.
    pub(crate) fn new(capacity: NonZeroUsize, ttl: Duration) -> Self {
        let shards = capacity.get().min(MAX_SHARDS);
        let per_shard = NonZeroUsize::new(capacity.get() / shards).unwrap_or(NonZeroUsize::MIN);
        Self {
            shards: (0..shards)
                .map(|_| Mutex::new(LruCache::new(per_shard)))
                .collect(),
            ttl,
        }
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    fn shard(&self, key: u128) -> MutexGuard<'_, LruCache<u128, Entry>> {
        // The low bits of XXH3 are as good as any.
        let index = (key as usize) % self.shards.len();
        // A panic while holding a shard cannot leave an entry half-written (LruCache operations
        // complete or do nothing), so a poisoned shard is safe to keep using.
        crate::sync::lock(&self.shards[index])
    }

    /// The backend for `key`, refreshing its age; expired entries are dropped here.
    pub(crate) fn get(&self, key: u128, now: Instant) -> Option<BackendId> {
        let mut shard = self.shard(key);
        let entry = shard.get_mut(&key)?;
        if entry.expires <= now {
            shard.pop(&key);
            return None;
        }
        entry.expires = now + self.ttl;
        Some(entry.backend.clone())
    }

    /// The backend for `key` without refreshing or promoting it (for inspection).
    pub(crate) fn peek(&self, key: u128, now: Instant) -> Option<BackendId> {
        let shard = self.shard(key);
        let entry = shard.peek(&key)?;
        (entry.expires > now).then(|| entry.backend.clone())
    }

    /// Records `key -> backend`; returns `false` when it was already recorded so (nothing to
    /// share).
    pub(crate) fn insert(&self, key: u128, backend: BackendId, now: Instant) -> bool {
        self.insert_until(key, backend, now + self.ttl)
    }

    /// Records an entry with a given expiry (entries loaded from a shared table keep theirs).
    pub(crate) fn insert_until(&self, key: u128, backend: BackendId, expires: Instant) -> bool {
        let mut shard = self.shard(key);
        if let Some(entry) = shard.get_mut(&key) {
            let changed = entry.backend != backend;
            entry.backend = backend;
            entry.expires = expires;
            return changed;
        }
        shard.put(key, Entry { backend, expires });
        true
    }

    /// Forgets `key`; returns whether it was there.
    pub(crate) fn remove(&self, key: u128) -> bool {
        self.shard(key).pop(&key).is_some()
    }

    /// Entries held now (expired ones not yet dropped included).
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| crate::sync::lock(s).len()).sum()
    }

    /// The most entries the table will ever hold.
    pub(crate) fn capacity(&self) -> usize {
        self.shards
            .iter()
            .map(|s| crate::sync::lock(s).cap().get())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn table(cap: usize, ttl_ms: u64) -> LearnedTable {
        LearnedTable::new(
            NonZeroUsize::new(cap).unwrap(),
            Duration::from_millis(ttl_ms),
        )
    }

    #[test]
    fn ttl_expires_and_use_refreshes() {
        let t = table(100, 1000);
        let t0 = Instant::now();
        assert!(t.insert(1, "a".into(), t0));
        assert!(!t.insert(1, "a".into(), t0));
        assert_eq!(t.get(1, t0 + Duration::from_millis(900)).unwrap(), "a");
        // Refreshed at 900 ms: still there at 1800 ms.
        assert_eq!(t.get(1, t0 + Duration::from_millis(1800)).unwrap(), "a");
        assert!(t.get(1, t0 + Duration::from_millis(2900)).is_none());
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn least_recently_used_is_evicted_within_a_shard() {
        let t = table(1, 60_000);
        let now = Instant::now();
        t.insert(1, "a".into(), now);
        t.insert(2, "b".into(), now);
        assert!(t.get(1, now).is_none());
        assert_eq!(t.get(2, now).unwrap(), "b");
    }

    proptest! {
        #[test]
        fn never_holds_more_than_its_cap(cap in 1usize..200, keys in proptest::collection::vec(any::<u128>(), 0..600)) {
            let t = table(cap, 60_000);
            let now = Instant::now();
            for k in &keys {
                t.insert(*k, "x".into(), now);
                prop_assert!(t.len() <= cap);
            }
            prop_assert!(t.capacity() <= cap);
        }
    }
}
