//! The `SessionStore` trait: what a place that keeps sessions must do, and its typed errors.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use super::SessionId;

/// A session's data: key -> serialized value (JSON text). Stores keep values opaque.
pub type Fields = HashMap<String, String>;

/// The future returned by [`SessionStore`] methods (boxed so the trait is object-safe).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store could not be reached or did not answer (connection refused, reset, timeout).
    /// Retrying later may succeed; at the HTTP edge this is a `503`.
    #[error("session store unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The store is at its configured session cap and cannot create another session.
    #[error("session store is full ({cap} sessions)")]
    Full {
        /// The configured cap.
        cap: usize,
    },
    /// The store answered with something this crate cannot read (a foreign key with the same
    /// name, a script error).
    #[error("session store returned an unexpected reply: {0}")]
    Backend(String),
}

/// When a session ends. Both limits are enforced by the store itself (memory: checked on every
/// read and swept; Redis: key TTL), not only by the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    /// Ends after this long without a write or touch (sliding).
    pub idle: Duration,
    /// Ends this long after creation, however active (fixed). `None`: no absolute limit.
    pub absolute: Option<Duration>,
}

impl Default for Expiry {
    /// 24 hours idle, 7 days absolute.
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(24 * 3600),
            absolute: Some(Duration::from_secs(7 * 24 * 3600)),
        }
    }
}

/// A loaded session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionRecord {
    /// The data, key by key.
    pub fields: Fields,
    /// Bumped by the store on every [`SessionStore::save`]; lets a cache tell whether its copy is
    /// still current.
    pub version: u64,
}

/// The changes one request made to an existing session. Only these keys are written, so two
/// concurrent requests that change *different* keys both persist; for the *same* key the last
/// save wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Remove every key first (applied before `set` and `remove`).
    pub clear: bool,
    /// Keys to write (serialized values).
    pub set: Vec<(String, String)>,
    /// Keys to remove.
    pub remove: Vec<String>,
}

impl Changes {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        !self.clear && self.set.is_empty() && self.remove.is_empty()
    }

    /// Applies these changes to a local copy of the fields (what the store does server-side).
    pub fn apply_to(&self, fields: &mut Fields) {
        if self.clear {
            fields.clear();
        }
        for (k, v) in &self.set {
            fields.insert(k.clone(), v.clone());
        }
        for k in &self.remove {
            fields.remove(k);
        }
    }
}

/// The answer to [`SessionStore::load_if_changed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadIfChanged {
    /// The session still has the version the caller knows.
    Unchanged,
    /// The session changed; here it is.
    Changed(SessionRecord),
    /// No such session (never existed, expired or deleted).
    Missing,
}

/// A place that keeps sessions: [`MemoryStore`](super::MemoryStore), `RedisStore` (feature
/// `redis`), [`CachedStore`](super::CachedStore) in front of either, or your own.
///
/// Contract, which the session layer relies on:
/// - [`load`](Self::load) never returns an expired session, even before any sweep.
/// - [`create`](Self::create) inserts only if the id is free (`Ok(false)` otherwise), records the
///   creation time, and sets expiry per [`Expiry`].
/// - [`save`](Self::save) applies [`Changes`] key by key to an *existing* session, bumps its
///   version, extends idle expiry (never past the absolute one) and returns the new version; it
///   returns `Ok(None)` and writes nothing if the session no longer exists, so a request racing a
///   logout cannot resurrect it.
/// - [`touch`](Self::touch) extends expiry without writing data.
/// - Each call should cost one round trip to a remote store.
///
/// The methods return boxed futures so that `dyn SessionStore` works; implement them with
/// `Box::pin(async move { .. })`.
///
/// ```
/// use tower_sticky::session::{Changes, Expiry, MemoryStore, SessionId, SessionStore};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = MemoryStore::default();
/// let id = SessionId::generate();
/// let fields = [("user".to_owned(), "\"alice\"".to_owned())].into();
/// assert!(store.create(&id, &fields, &Expiry::default()).await?);
/// let changes = Changes { set: vec![("cart".into(), "[1]".into())], ..Changes::default() };
/// let version = store.save(&id, &changes, &Expiry::default()).await?;
/// assert_eq!(version, Some(2));
/// let record = store.load(&id).await?.expect("session exists");
/// assert_eq!(record.fields.len(), 2);
/// # Ok(()) }
/// ```
pub trait SessionStore: Send + Sync + fmt::Debug + 'static {
    /// Loads a session, or `None` if it does not exist or has expired.
    fn load<'a>(&'a self, id: &'a SessionId) -> StoreFuture<'a, Option<SessionRecord>>;

    /// Loads a session only if its version differs from `known` (one round trip either way).
    /// The default calls [`load`](Self::load) and compares.
    fn load_if_changed<'a>(
        &'a self,
        id: &'a SessionId,
        known: u64,
    ) -> StoreFuture<'a, LoadIfChanged> {
        Box::pin(async move {
            Ok(match self.load(id).await? {
                None => LoadIfChanged::Missing,
                Some(r) if r.version == known => LoadIfChanged::Unchanged,
                Some(r) => LoadIfChanged::Changed(r),
            })
        })
    }

    /// Creates a session with `fields` at version 1 if `id` is free; `Ok(false)` if it is taken.
    fn create<'a>(
        &'a self,
        id: &'a SessionId,
        fields: &'a Fields,
        expiry: &'a Expiry,
    ) -> StoreFuture<'a, bool>;

    /// Applies `changes` to an existing session; the new version, or `None` if it is gone.
    fn save<'a>(
        &'a self,
        id: &'a SessionId,
        changes: &'a Changes,
        expiry: &'a Expiry,
    ) -> StoreFuture<'a, Option<u64>>;

    /// Extends idle expiry without writing data; `false` if the session is gone.
    fn touch<'a>(&'a self, id: &'a SessionId, expiry: &'a Expiry) -> StoreFuture<'a, bool>;

    /// Deletes a session (no error if it does not exist).
    fn delete<'a>(&'a self, id: &'a SessionId) -> StoreFuture<'a, ()>;
}

impl<T: SessionStore + ?Sized> SessionStore for std::sync::Arc<T> {
    fn load<'a>(&'a self, id: &'a SessionId) -> StoreFuture<'a, Option<SessionRecord>> {
        (**self).load(id)
    }
    fn load_if_changed<'a>(
        &'a self,
        id: &'a SessionId,
        known: u64,
    ) -> StoreFuture<'a, LoadIfChanged> {
        (**self).load_if_changed(id, known)
    }
    fn create<'a>(
        &'a self,
        id: &'a SessionId,
        fields: &'a Fields,
        expiry: &'a Expiry,
    ) -> StoreFuture<'a, bool> {
        (**self).create(id, fields, expiry)
    }
    fn save<'a>(
        &'a self,
        id: &'a SessionId,
        changes: &'a Changes,
        expiry: &'a Expiry,
    ) -> StoreFuture<'a, Option<u64>> {
        (**self).save(id, changes, expiry)
    }
    fn touch<'a>(&'a self, id: &'a SessionId, expiry: &'a Expiry) -> StoreFuture<'a, bool> {
        (**self).touch(id, expiry)
    }
    fn delete<'a>(&'a self, id: &'a SessionId) -> StoreFuture<'a, ()> {
        (**self).delete(id)
    }
}
