//! `Session`: the handle a handler uses to read and change its session.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;

use super::SessionId;
use super::error::SessionError;
use super::store::{Changes, Expiry, Fields, SessionStore, StoreError};

/// The current request's session, from the [`SessionLayer`](super::SessionLayer) (with the
/// `axum` feature it is an extractor).
///
/// Loading is lazy: the store is read on first use (one round trip), and the changes are written
/// once, after the handler returns (one round trip), only if something changed. Values are
/// stored per key as JSON, so two concurrent requests of one session that change *different*
/// keys both persist; for the *same* key the last request to finish wins.
///
/// Cloning is cheap and clones share state; changes made after the response was sent are not
/// saved.
///
/// ```
/// use tower_sticky::session::{Session, SessionError};
///
/// async fn add_to_cart(session: Session) -> Result<String, SessionError> {
///     let mut cart: Vec<u32> = session.get("cart").await?.unwrap_or_default();
///     cart.push(42);
///     session.insert("cart", &cart).await?;
///     Ok(format!("{} items", cart.len()))
/// }
/// ```
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn SessionStore>,
    /// The well-formed id the client presented, if any (not yet known to exist).
    presented: Option<SessionId>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// `None` until first use.
    loaded: Option<Loaded>,
    /// Key -> new serialized value, or `None` for removed.
    changes: BTreeMap<String, Option<String>>,
    clear: bool,
    cycle: bool,
    delete: bool,
}

struct Loaded {
    /// `None`: no session in the store yet (none presented, unknown or expired).
    id: Option<SessionId>,
    fields: Fields,
}

/// What the layer must tell the client after saving.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CookieAction {
    Nothing,
    Set(SessionId),
    Remove,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("presented", &self.inner.presented)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A session for one request: `presented` is the id from the client's cookie, if well formed.
    pub(crate) fn new(store: Arc<dyn SessionStore>, presented: Option<SessionId>) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                presented,
                state: Mutex::new(State::default()),
            }),
        }
    }

    async fn loaded(&self) -> Result<tokio::sync::MutexGuard<'_, State>, SessionError> {
        let mut state = self.inner.state.lock().await;
        if state.loaded.is_none() {
            let loaded = match &self.inner.presented {
                Some(id) => match self.inner.store.load(id).await? {
                    Some(record) => Loaded {
                        id: Some(id.clone()),
                        fields: record.fields,
                    },
                    // Unknown or expired: never adopt the client's id.
                    None => Loaded {
                        id: None,
                        fields: Fields::new(),
                    },
                },
                None => Loaded {
                    id: None,
                    fields: Fields::new(),
                },
            };
            state.loaded = Some(loaded);
        }
        Ok(state)
    }

    /// The value stored under `key`, if any.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        let state = self.loaded().await?;
        let Some(raw) = state.current(key) else {
            return Ok(None);
        };
        serde_json::from_str(raw)
            .map(Some)
            .map_err(|source| SessionError::Deserialize {
                key: key.to_owned(),
                source,
            })
    }

    /// The keys this session holds, sorted (as this request sees them, its own changes included).
    pub async fn keys(&self) -> Result<Vec<String>, SessionError> {
        let state = self.loaded().await?;
        let mut keys: Vec<String> = state
            .loaded
            .iter()
            .filter(|_| !state.clear)
            .flat_map(|l| l.fields.keys())
            .filter(|k| !state.changes.contains_key(*k))
            .chain(
                state
                    .changes
                    .iter()
                    .filter(|(_, v)| v.is_some())
                    .map(|(k, _)| k),
            )
            .cloned()
            .collect();
        keys.sort();
        Ok(keys)
    }

    /// Stores `value` under `key` (saved after the handler returns).
    pub async fn insert<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<(), SessionError> {
        let raw = serde_json::to_string(value).map_err(|source| SessionError::Serialize {
            key: key.to_owned(),
            source,
        })?;
        let mut state = self.loaded().await?;
        state.changes.insert(key.to_owned(), Some(raw));
        Ok(())
    }

    /// Removes `key`, returning its previous value.
    pub async fn remove<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        let old = self.get(key).await;
        let mut state = self.loaded().await?;
        state.changes.insert(key.to_owned(), None);
        old
    }

    /// Removes every key; the session (and its id) stays.
    pub async fn clear(&self) -> Result<(), SessionError> {
        let mut state = self.loaded().await?;
        state.clear = true;
        state.changes.clear();
        Ok(())
    }

    /// Ends the session (logout): it is deleted from the store and the cookie removed.
    pub async fn delete(&self) {
        let mut state = self.inner.state.lock().await;
        state.delete = true;
        state.changes.clear();
    }

    /// Gives the session a new id, keeping its data (call it at login and on privilege changes:
    /// an id an attacker planted before login then stops working). The old id is deleted. Its
    /// absolute lifetime starts again from the new id's creation.
    pub async fn cycle_id(&self) -> Result<(), SessionError> {
        let mut state = self.loaded().await?;
        state.cycle = true;
        Ok(())
    }

    /// The id of the stored session, `None` if it does not exist yet (it is created, with a new
    /// id, when the handler first stores something).
    pub async fn id(&self) -> Result<Option<SessionId>, SessionError> {
        let state = self.loaded().await?;
        Ok(state.loaded.as_ref().and_then(|l| l.id.clone()))
    }

    /// Writes the changes after the handler has returned; says what to do with the cookie.
    pub(crate) async fn commit(
        &self,
        expiry: &Expiry,
        touch_every_request: bool,
    ) -> Result<CookieAction, StoreError> {
        let store = &self.inner.store;
        let mut state = self.inner.state.lock().await;
        if state.delete {
            return match &self.inner.presented {
                Some(id) => {
                    store.delete(id).await?;
                    Ok(CookieAction::Remove)
                }
                None => Ok(CookieAction::Nothing),
            };
        }
        let modified = state.clear || !state.changes.is_empty();
        let changes = state.take_changes();
        let cycle = state.cycle;
        let Some(loaded) = state.loaded.as_mut() else {
            // The handler never used the session.
            if let (true, Some(id)) = (touch_every_request, &self.inner.presented) {
                if store.touch(id, expiry).await? {
                    return Ok(CookieAction::Set(id.clone()));
                }
            }
            return Ok(CookieAction::Nothing);
        };
        match loaded.id.clone() {
            // The client presented an id the store does not know (expired, logged out, forged):
            // drop the useless cookie so it stops costing a lookup on every request.
            None if !modified && self.inner.presented.is_some() => Ok(CookieAction::Remove),
            None if !modified => Ok(CookieAction::Nothing),
            None => {
                changes.apply_to(&mut loaded.fields);
                if loaded.fields.is_empty() {
                    return Ok(CookieAction::Nothing);
                }
                let id = create(store.as_ref(), &loaded.fields, expiry).await?;
                Ok(CookieAction::Set(id))
            }
            Some(old) if cycle => {
                changes.apply_to(&mut loaded.fields);
                let id = create(store.as_ref(), &loaded.fields, expiry).await?;
                store.delete(&old).await?;
                Ok(CookieAction::Set(id))
            }
            Some(id) if modified => match store.save(&id, &changes, expiry).await? {
                Some(_) => Ok(CookieAction::Set(id)),
                None => {
                    // Expired or deleted (e.g. a concurrent logout) while this request ran:
                    // its changes are dropped rather than resurrecting the session.
                    tracing::warn!(session = ?id, "session vanished during the request; changes dropped");
                    Ok(CookieAction::Remove)
                }
            },
            Some(id) => {
                if touch_every_request && store.touch(&id, expiry).await? {
                    return Ok(CookieAction::Set(id));
                }
                Ok(CookieAction::Nothing)
            }
        }
    }
}

/// Creates a session under a fresh id (retrying in the astronomically unlikely case of a clash).
async fn create(
    store: &dyn SessionStore,
    fields: &Fields,
    expiry: &Expiry,
) -> Result<SessionId, StoreError> {
    for _ in 0..3 {
        let id = SessionId::generate();
        if store.create(&id, fields, expiry).await? {
            return Ok(id);
        }
    }
    Err(StoreError::Backend(
        "could not create a session: ids kept clashing".into(),
    ))
}

impl State {
    /// The value of `key` as this request sees it (its own changes over the loaded data).
    fn current(&self, key: &str) -> Option<&str> {
        match self.changes.get(key) {
            Some(change) => change.as_deref(),
            None if self.clear => None,
            None => self
                .loaded
                .as_ref()
                .and_then(|l| l.fields.get(key))
                .map(String::as_str),
        }
    }

    fn take_changes(&mut self) -> Changes {
        let mut changes = Changes {
            clear: std::mem::take(&mut self.clear),
            ..Changes::default()
        };
        for (key, value) in std::mem::take(&mut self.changes) {
            match value {
                Some(v) => changes.set.push((key, v)),
                None => changes.remove.push(key),
            }
        }
        changes
    }
}
