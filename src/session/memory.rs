//! `MemoryStore`: sessions in this process, sharded, merged key by key, swept in the background.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use fnv::FnvHasher;
use tokio::time::Instant;

use super::SessionId;
use super::store::{Changes, Expiry, Fields, SessionRecord, SessionStore, StoreError, StoreFuture};

/// Lock striping: requests for different sessions rarely wait on each other.
const SHARDS: usize = 32;

/// Sessions kept in this process: the embedded default, and the store to use when several
/// in-process workers share sessions (clones share the same data).
///
/// - Concurrent: the map is split into shards, each behind its own short-held lock.
/// - No lost writes: [`save`](SessionStore::save) merges the changed keys into the stored map.
/// - Expired sessions are never returned (checked on every read) and are swept by a background
///   task (started on first use inside a Tokio runtime; it stops when the last clone is dropped).
/// - Optional cap on the number of sessions: at the cap, expired ones are swept first, and if
///   none can go, creating a session fails with [`StoreError::Full`] rather than evicting a live
///   user.
///
/// ```
/// use std::time::Duration;
/// use tower_sticky::session::MemoryStore;
///
/// let store = MemoryStore::new()
///     .with_max_sessions(100_000)
///     .with_sweep_interval(Duration::from_secs(30));
/// assert_eq!(store.len(), 0);
/// ```
#[derive(Clone, Debug)]
pub struct MemoryStore {
    inner: Arc<Inner>,
    sweep_interval: Duration,
}

#[derive(Debug)]
struct Inner {
    shards: Vec<Mutex<HashMap<SessionId, Entry>>>,
    len: AtomicUsize,
    max_sessions: Option<usize>,
    sweeper_started: AtomicBool,
}

#[derive(Debug)]
struct Entry {
    fields: Fields,
    version: u64,
    expires_at: Instant,
    deadline: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        now < self.expires_at
    }

    fn extend(&mut self, now: Instant, idle: Duration) {
        let by_idle = now + idle;
        self.expires_at = self.deadline.map_or(by_idle, |d| d.min(by_idle));
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store without a cap, swept every 60 seconds.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
                len: AtomicUsize::new(0),
                max_sessions: None,
                sweeper_started: AtomicBool::new(false),
            }),
            sweep_interval: Duration::from_secs(60),
        }
    }

    /// Caps the number of sessions held (configure before sharing the store).
    pub fn with_max_sessions(mut self, cap: usize) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.max_sessions = Some(cap);
        }
        self
    }

    /// How often the background task removes expired sessions.
    pub fn with_sweep_interval(mut self, every: Duration) -> Self {
        self.sweep_interval = every.max(Duration::from_millis(10));
        self
    }

    /// Sessions held, including expired ones not yet swept.
    pub fn len(&self) -> usize {
        self.inner.len.load(Ordering::Relaxed)
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes expired sessions now; returns how many went.
    pub fn sweep(&self) -> usize {
        self.inner.sweep(Instant::now())
    }

    fn shard(&self, id: &SessionId) -> MutexGuard<'_, HashMap<SessionId, Entry>> {
        let hash = BuildHasherDefault::<FnvHasher>::default().hash_one(id.as_str());
        // The modulo keeps the index in range, so the lookup cannot fail.
        let shard = &self.inner.shards[(hash as usize) % SHARDS];
        crate::sync::lock(shard)
    }

    /// Starts the sweeper once, from inside a Tokio runtime (store methods are async, so the
    /// first call is normally inside one). It holds only a weak reference.
    fn ensure_sweeper(&self) {
        if self.inner.sweeper_started.load(Ordering::Relaxed) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.inner.sweeper_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let every = self.sweep_interval;
        handle.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let removed = inner.sweep(Instant::now());
                if removed > 0 {
                    tracing::debug!(removed, "swept expired sessions");
                }
            }
        });
    }
}

impl Inner {
    fn sweep(&self, now: Instant) -> usize {
        let mut removed = 0;
        for shard in &self.shards {
            let mut map = crate::sync::lock(shard);
            let before = map.len();
            map.retain(|_, e| e.live(now));
            removed += before - map.len();
        }
        self.len.fetch_sub(removed, Ordering::Relaxed);
        removed
    }
}

impl SessionStore for MemoryStore {
    fn load<'a>(&'a self, id: &'a SessionId) -> StoreFuture<'a, Option<SessionRecord>> {
        Box::pin(async move {
            self.ensure_sweeper();
            let now = Instant::now();
            let map = self.shard(id);
            Ok(map.get(id).filter(|e| e.live(now)).map(|e| SessionRecord {
                fields: e.fields.clone(),
                version: e.version,
            }))
        })
    }

    fn create<'a>(
        &'a self,
        id: &'a SessionId,
        fields: &'a Fields,
        expiry: &'a Expiry,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            self.ensure_sweeper();
            let now = Instant::now();
            if let Some(cap) = self.inner.max_sessions {
                if self.len() >= cap && self.inner.sweep(now) == 0 && self.len() >= cap {
                    return Err(StoreError::Full { cap });
                }
            }
            let mut map = self.shard(id);
            if let Some(old) = map.get(id) {
                if old.live(now) {
                    return Ok(false);
                }
                // An expired leftover with the same id: replace it (the count stays the same).
                map.remove(id);
                self.inner.len.fetch_sub(1, Ordering::Relaxed);
            }
            let mut entry = Entry {
                fields: fields.clone(),
                version: 1,
                expires_at: now,
                deadline: expiry.absolute.map(|a| now + a),
            };
            entry.extend(now, expiry.idle);
            map.insert(id.clone(), entry);
            self.inner.len.fetch_add(1, Ordering::Relaxed);
            Ok(true)
        })
    }

    fn save<'a>(
        &'a self,
        id: &'a SessionId,
        changes: &'a Changes,
        expiry: &'a Expiry,
    ) -> StoreFuture<'a, Option<u64>> {
        Box::pin(async move {
            let now = Instant::now();
            let mut map = self.shard(id);
            let Some(entry) = map.get_mut(id).filter(|e| e.live(now)) else {
                return Ok(None);
            };
            changes.apply_to(&mut entry.fields);
            entry.version += 1;
            entry.extend(now, expiry.idle);
            Ok(Some(entry.version))
        })
    }

    fn touch<'a>(&'a self, id: &'a SessionId, expiry: &'a Expiry) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let now = Instant::now();
            let mut map = self.shard(id);
            match map.get_mut(id).filter(|e| e.live(now)) {
                Some(entry) => {
                    entry.extend(now, expiry.idle);
                    Ok(true)
                }
                None => Ok(false),
            }
        })
    }

    fn delete<'a>(&'a self, id: &'a SessionId) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            if self.shard(id).remove(id).is_some() {
                self.inner.len.fetch_sub(1, Ordering::Relaxed);
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expiry(idle_ms: u64, abs_ms: Option<u64>) -> Expiry {
        Expiry {
            idle: Duration::from_millis(idle_ms),
            absolute: abs_ms.map(Duration::from_millis),
        }
    }

    fn set(k: &str, v: &str) -> Changes {
        Changes {
            set: vec![(k.into(), v.into())],
            ..Changes::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn idle_and_absolute_expiry_are_enforced_on_read() {
        let store = MemoryStore::new();
        let id = SessionId::generate();
        let e = expiry(1000, Some(2500));
        assert!(store.create(&id, &Fields::new(), &e).await.unwrap());
        // Keep it alive with writes and touches past the idle limit...
        for _ in 0..2 {
            tokio::time::advance(Duration::from_millis(800)).await;
            assert!(store.touch(&id, &e).await.unwrap());
        }
        tokio::time::advance(Duration::from_millis(800)).await;
        assert!(store.save(&id, &set("a", "1"), &e).await.unwrap().is_some());
        assert!(store.load(&id).await.unwrap().is_some());
        // ... but never past the absolute deadline (2.5 s after creation).
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(store.load(&id).await.unwrap().is_none());
        assert_eq!(store.save(&id, &set("b", "2"), &e).await.unwrap(), None);
        // Idle expiry alone.
        let id2 = SessionId::generate();
        assert!(store.create(&id2, &Fields::new(), &e).await.unwrap());
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert!(store.load(&id2).await.unwrap().is_none());
        assert!(!store.touch(&id2, &e).await.unwrap());
    }

    #[tokio::test]
    async fn background_sweeper_removes_expired_sessions() {
        let store = MemoryStore::new().with_sweep_interval(Duration::from_millis(20));
        let e = expiry(30, None);
        for _ in 0..50 {
            assert!(
                store
                    .create(&SessionId::generate(), &Fields::new(), &e)
                    .await
                    .unwrap()
            );
        }
        assert_eq!(store.len(), 50);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !store.is_empty() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(store.len(), 0);
    }

    #[tokio::test]
    async fn cap_rejects_new_sessions_but_reuses_expired_slots() {
        let store = MemoryStore::new().with_max_sessions(3);
        let long = expiry(60_000, None);
        for _ in 0..2 {
            assert!(
                store
                    .create(&SessionId::generate(), &Fields::new(), &long)
                    .await
                    .unwrap()
            );
        }
        let short = expiry(1, None);
        assert!(
            store
                .create(&SessionId::generate(), &Fields::new(), &short)
                .await
                .unwrap()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
        // At the cap, the expired session makes room...
        assert!(
            store
                .create(&SessionId::generate(), &Fields::new(), &long)
                .await
                .unwrap()
        );
        // ... but live sessions are never evicted.
        assert!(matches!(
            store
                .create(&SessionId::generate(), &Fields::new(), &long)
                .await,
            Err(StoreError::Full { cap: 3 })
        ));
    }

    #[tokio::test]
    async fn create_refuses_a_taken_id_and_save_merges_keys() {
        let store = MemoryStore::new();
        let id = SessionId::generate();
        let e = Expiry::default();
        let fields: Fields = [("a".to_owned(), "1".to_owned())].into();
        assert!(store.create(&id, &fields, &e).await.unwrap());
        assert!(!store.create(&id, &Fields::new(), &e).await.unwrap());
        assert_eq!(store.save(&id, &set("b", "2"), &e).await.unwrap(), Some(2));
        assert_eq!(store.save(&id, &set("c", "3"), &e).await.unwrap(), Some(3));
        let rec = store.load(&id).await.unwrap().unwrap();
        assert_eq!(rec.fields.len(), 3);
        assert_eq!(rec.version, 3);
        store.delete(&id).await.unwrap();
        assert!(store.load(&id).await.unwrap().is_none());
        assert_eq!(store.len(), 0);
    }
}
