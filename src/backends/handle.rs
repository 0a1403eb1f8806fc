//! [`BackendsHandle`]: run-time changes to a [`Backends`](super::Backends) set.

use std::fmt;
use std::sync::Arc;

use super::{Shared, Writer};
use crate::sync::lock;
use crate::{BackendId, BackendsError};

/// A cloneable handle that changes a [`Backends`](super::Backends) set at run time: add, remove,
/// re-weight, mark healthy or not, drain. Every change rebuilds the routing snapshot (rings
/// included) off the request path and swaps it in atomically; requests in flight are not touched.
///
/// ```
/// use tower_sticky::Backends;
/// # let svc = tower::service_fn(|_r: http::Request<String>| async {
/// #     Ok::<_, std::convert::Infallible>(http::Response::new(String::new())) });
/// let backends = Backends::new().with("a", svc.clone());
/// let handle = backends.handle();
/// handle.insert_weighted("b", svc, 3).unwrap();
/// assert!(handle.set_weight("b", 0).is_err());
/// handle.set_draining("a", true).unwrap();
/// assert!(handle.remove("a"));
/// assert_eq!(backends.ids(), ["b"]);
/// ```
pub struct BackendsHandle<S> {
    shared: Arc<Shared<S>>,
}

impl<S> Clone for BackendsHandle<S> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S> fmt::Debug for BackendsHandle<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendsHandle")
            .field("version", &self.shared.current.load().set.version())
            .finish()
    }
}

impl<S: Clone> BackendsHandle<S> {
    pub(super) fn new(shared: Arc<Shared<S>>) -> Self {
        Self { shared }
    }

    /// Runs `change` under the writer lock, then publishes a new snapshot if it succeeded.
    pub(super) fn apply<T>(
        &self,
        change: impl FnOnce(&mut Writer<S>) -> Result<T, BackendsError>,
    ) -> Result<T, BackendsError> {
        let mut writer = lock(&self.shared.writer);
        let value = change(&mut writer)?;
        let snapshot = writer.snapshot();
        self.shared.current.store(Arc::new(snapshot));
        Ok(value)
    }

    /// Adds backend `id` with weight 1, or replaces its service (keeping weight, counters and
    /// health) if present.
    pub fn insert(&self, id: impl Into<BackendId>, service: S) {
        let id = id.into();
        // Weight >= 1 always, so this cannot be refused.
        let _ = self.apply(|w| {
            let weight = w.entries.get(&id).map_or(1, |e| e.weight);
            w.insert(id, service, weight)
        });
    }

    /// Adds or replaces backend `id` with `weight`; 0 is refused.
    pub fn insert_weighted(
        &self,
        id: impl Into<BackendId>,
        service: S,
        weight: u32,
    ) -> Result<(), BackendsError> {
        let id = id.into();
        self.apply(|w| w.insert(id, service, weight))
    }

    /// Removes backend `id`; returns whether it was present. Its in-flight requests finish on the
    /// service clone they hold.
    pub fn remove(&self, id: &str) -> bool {
        self.apply(|w| Ok(w.entries.remove(id).is_some()))
            .unwrap_or(false)
    }

    /// Changes the weight of backend `id`; 0 is refused.
    pub fn set_weight(&self, id: &str, weight: u32) -> Result<(), BackendsError> {
        self.apply(|w| {
            if weight == 0 {
                return Err(BackendsError::ZeroWeight { id: id.into() });
            }
            let entry = w
                .entries
                .get_mut(id)
                .ok_or_else(|| BackendsError::UnknownBackend { id: id.into() })?;
            entry.weight = weight;
            Ok(())
        })
    }

    /// Marks backend `id` healthy (routable) or not. Takes effect on the next request; no
    /// snapshot rebuild is needed, so the rings stay as they are and a backend that comes back
    /// gets exactly its old keys back.
    pub fn set_healthy(&self, id: &str, healthy: bool) -> Result<(), BackendsError> {
        self.with_member(id, |member| {
            member.state().set_healthy(healthy);
            crate::metrics::facade::health_changed(member);
        })
    }

    /// Drains backend `id` (no new clients; clients already pinned to it stay) or undrains it.
    pub fn set_draining(&self, id: &str, draining: bool) -> Result<(), BackendsError> {
        self.with_member(id, |member| member.state().set_draining(draining))
    }

    /// The ids now in the set, sorted.
    pub fn ids(&self) -> Vec<BackendId> {
        let snapshot = self.shared.current.load();
        snapshot
            .set
            .members()
            .iter()
            .map(|m| m.id().clone())
            .collect()
    }

    fn with_member(
        &self,
        id: &str,
        f: impl FnOnce(&super::MemberInfo),
    ) -> Result<(), BackendsError> {
        let snapshot = self.shared.current.load();
        let position = snapshot
            .set
            .position(id)
            .ok_or_else(|| BackendsError::UnknownBackend { id: id.into() })?;
        let member = snapshot
            .set
            .get(position)
            .ok_or_else(|| BackendsError::UnknownBackend { id: id.into() })?;
        f(member);
        Ok(())
    }
}
