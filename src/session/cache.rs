//! `CachedStore`: a local copy of sessions in front of a shared store, never stale.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::SessionId;
use super::store::{
    Changes, Expiry, Fields, LoadIfChanged, SessionRecord, SessionStore, StoreFuture,
};

/// A local cache tier in front of a shared store (typically [`RedisStore`](super::RedisStore)),
/// for backends behind a sticky balancer where the same users keep coming back.
///
/// A cached session is revalidated on every load with one small round trip
/// ([`SessionStore::load_if_changed`]): if its version is unchanged the shared store sends back
/// only the version and the data is served from memory; if another backend modified the session
/// in the meantime (the user failed over and came back), the new data comes back in that same
/// round trip. So a hit saves transferring and decoding the session, and a session that moved
/// away, changed and came back is never served stale.
///
/// After its own save the cache applies the same changes locally, but only when the version the
/// store returns is exactly one above the cached one (nobody else wrote in between); otherwise
/// the entry is dropped and reloaded next time.
///
/// At most `capacity` sessions are held; past that an arbitrary entry is dropped (it is only a
/// cache).
///
/// ```
/// use tower_sticky::session::{CachedStore, MemoryStore};
///
/// let shared = MemoryStore::default(); // RedisStore in production
/// let local = CachedStore::new(shared, 10_000);
/// assert_eq!(local.hits(), 0);
/// ```
#[derive(Debug, Clone)]
pub struct CachedStore<S> {
    inner: S,
    cache: Arc<Mutex<HashMap<SessionId, SessionRecord>>>,
    capacity: usize,
    hits: Arc<AtomicU64>,
    misses: Arc<AtomicU64>,
}

impl<S: SessionStore> CachedStore<S> {
    /// A cache of up to `capacity` sessions in front of `inner`.
    pub fn new(inner: S, capacity: usize) -> Self {
        Self {
            inner,
            cache: Arc::default(),
            capacity: capacity.max(1),
            hits: Arc::default(),
            misses: Arc::default(),
        }
    }

    /// The shared store behind the cache.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Loads answered from the local copy (version confirmed unchanged).
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Loads that had to take the data from the shared store (not cached, or changed elsewhere).
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<SessionId, SessionRecord>> {
        crate::sync::lock(&self.cache)
    }

    fn remember(&self, id: &SessionId, record: SessionRecord) {
        let mut cache = self.lock();
        if cache.len() >= self.capacity && !cache.contains_key(id) {
            if let Some(victim) = cache.keys().next().cloned() {
                cache.remove(&victim);
            }
        }
        cache.insert(id.clone(), record);
    }

    fn forget(&self, id: &SessionId) {
        self.lock().remove(id);
    }
}

impl<S: SessionStore> SessionStore for CachedStore<S> {
    fn load<'a>(&'a self, id: &'a SessionId) -> StoreFuture<'a, Option<SessionRecord>> {
        Box::pin(async move {
            let known = self.lock().get(id).map(|r| r.version);
            let Some(known) = known else {
                self.misses.fetch_add(1, Ordering::Relaxed);
                let loaded = self.inner.load(id).await?;
                if let Some(record) = &loaded {
                    self.remember(id, record.clone());
                }
                return Ok(loaded);
            };
            match self.inner.load_if_changed(id, known).await? {
                LoadIfChanged::Unchanged => {
                    let cached = self.lock().get(id).filter(|r| r.version == known).cloned();
                    if let Some(record) = cached {
                        self.hits.fetch_add(1, Ordering::Relaxed);
                        return Ok(Some(record));
                    }
                    // Our own entry changed under us (a concurrent save here); read it afresh.
                    self.misses.fetch_add(1, Ordering::Relaxed);
                    let loaded = self.inner.load(id).await?;
                    match &loaded {
                        Some(record) => self.remember(id, record.clone()),
                        None => self.forget(id),
                    }
                    Ok(loaded)
                }
                LoadIfChanged::Changed(record) => {
                    self.misses.fetch_add(1, Ordering::Relaxed);
                    self.remember(id, record.clone());
                    Ok(Some(record))
                }
                LoadIfChanged::Missing => {
                    self.forget(id);
                    Ok(None)
                }
            }
        })
    }

    fn load_if_changed<'a>(
        &'a self,
        id: &'a SessionId,
        known: u64,
    ) -> StoreFuture<'a, LoadIfChanged> {
        self.inner.load_if_changed(id, known)
    }

    fn create<'a>(
        &'a self,
        id: &'a SessionId,
        fields: &'a Fields,
        expiry: &'a Expiry,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let created = self.inner.create(id, fields, expiry).await?;
            if created {
                self.remember(
                    id,
                    SessionRecord {
                        fields: fields.clone(),
                        version: 1,
                    },
                );
            }
            Ok(created)
        })
    }

    fn save<'a>(
        &'a self,
        id: &'a SessionId,
        changes: &'a Changes,
        expiry: &'a Expiry,
    ) -> StoreFuture<'a, Option<u64>> {
        Box::pin(async move {
            let saved = self.inner.save(id, changes, expiry).await;
            let mut cache = self.lock();
            match (&saved, cache.get_mut(id)) {
                (Ok(Some(version)), Some(entry)) if entry.version + 1 == *version => {
                    changes.apply_to(&mut entry.fields);
                    entry.version = *version;
                }
                _ => {
                    cache.remove(id);
                }
            }
            saved
        })
    }

    fn touch<'a>(&'a self, id: &'a SessionId, expiry: &'a Expiry) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let touched = self.inner.touch(id, expiry).await?;
            if !touched {
                self.forget(id);
            }
            Ok(touched)
        })
    }

    fn delete<'a>(&'a self, id: &'a SessionId) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.forget(id);
            self.inner.delete(id).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::MemoryStore;

    fn set(k: &str, v: &str) -> Changes {
        Changes {
            set: vec![(k.into(), v.into())],
            ..Changes::default()
        }
    }

    #[tokio::test]
    async fn a_session_changed_elsewhere_is_never_served_stale() {
        let shared = MemoryStore::new();
        let a = CachedStore::new(shared.clone(), 100);
        let b = CachedStore::new(shared.clone(), 100);
        let e = Expiry::default();
        let id = SessionId::generate();
        assert!(a.create(&id, &Fields::new(), &e).await.unwrap());
        a.save(&id, &set("cart", "1"), &e).await.unwrap();
        assert_eq!(a.load(&id).await.unwrap().unwrap().fields["cart"], "1");
        assert_eq!(a.hits(), 1);
        // The user moves to b, which changes the cart...
        assert_eq!(b.load(&id).await.unwrap().unwrap().fields["cart"], "1");
        b.save(&id, &set("cart", "2"), &e).await.unwrap();
        // ... and comes back to a: the cached copy must not be used.
        assert_eq!(a.load(&id).await.unwrap().unwrap().fields["cart"], "2");
        assert_eq!(a.hits(), 1);
        // Deleted elsewhere: gone here too.
        b.delete(&id).await.unwrap();
        assert!(a.load(&id).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn capacity_is_bounded() {
        let cache = CachedStore::new(MemoryStore::new(), 3);
        let e = Expiry::default();
        for _ in 0..10 {
            assert!(
                cache
                    .create(&SessionId::generate(), &Fields::new(), &e)
                    .await
                    .unwrap()
            );
        }
        assert_eq!(cache.lock().len(), 3);
    }
}
