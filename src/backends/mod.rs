//! [`Backends`]: a keyed set of inner services that a [`Sticky`](crate::Sticky) routes over.
//!
//! ```
//! use tower_sticky::Backends;
//! use tower::service_fn;
//!
//! # fn main() -> Result<(), tower_sticky::BackendsError> {
//! let svc = service_fn(|_req: http::Request<String>| async {
//!     Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
//! });
//! let backends = Backends::new()
//!     .with("a", svc.clone())
//!     .with("b", svc.clone())
//!     .with_weight("c", svc.clone(), 2)?;
//! assert_eq!(backends.len(), 3);
//!
//! // Change it at run time through a cloneable handle.
//! let handle = backends.handle();
//! handle.remove("a");
//! handle.insert("d", svc);
//! assert_eq!(backends.ids(), ["b", "c", "d"]);
//! # Ok(())
//! # }
//! ```

mod discover;
mod handle;
mod members;
mod state;

pub use handle::BackendsHandle;
pub use members::{MemberInfo, MemberSet};
pub use state::BackendState;
pub(crate) use state::InFlight;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use crate::sync::lock;

use arc_swap::ArcSwap;

use crate::health::{ActiveHealth, HealthError};
use crate::metrics::{BackendStats, StickyStats};
use crate::ring::RingKind;
use crate::{BackendId, BackendsError};

/// A keyed set of inner services, in the spirit of `tower::balance`: each has a stable
/// [`BackendId`], a weight (>= 1), live state, and can be added, removed or re-weighted at run
/// time while requests are in flight.
///
/// Cloning a `Backends` gives another handle to the same set. Reads (one per request) take no lock:
/// the current membership is an immutable snapshot behind an [`ArcSwap`]. Writes rebuild the
/// snapshot (including its hash rings) and swap it in; requests already routed keep the clone of
/// the inner service they were given, so removing a backend lets its in-flight requests finish.
///
/// Members are kept sorted by id, so every replica that knows the same ids and weights builds the
/// same rings and schedules regardless of insertion order. Inserting an id that is present replaces
/// its service and weight but keeps its counters and health.
pub struct Backends<S> {
    shared: Arc<Shared<S>>,
}

impl<S> Clone for Backends<S> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

pub(crate) struct Shared<S> {
    current: ArcSwap<Snapshot<S>>,
    writer: Mutex<Writer<S>>,
    discover: discover::Slot<S>,
}

/// One membership snapshot: the routing view plus the services, position for position.
pub(crate) struct Snapshot<S> {
    pub(crate) set: MemberSet,
    pub(crate) services: Vec<S>,
}

struct Entry<S> {
    service: S,
    weight: u32,
    state: Arc<BackendState>,
}

struct Writer<S> {
    entries: BTreeMap<BackendId, Entry<S>>,
    ring_kinds: Vec<RingKind>,
    version: u64,
}

impl<S: Clone> Writer<S> {
    fn snapshot(&mut self) -> Snapshot<S> {
        self.version += 1;
        let set = MemberSet::build(
            self.entries
                .iter()
                .map(|(id, e)| (id.clone(), e.weight, Arc::clone(&e.state))),
            &self.ring_kinds,
            self.version,
        );
        let services = self.entries.values().map(|e| e.service.clone()).collect();
        Snapshot { set, services }
    }

    fn insert(&mut self, id: BackendId, service: S, weight: u32) -> Result<(), BackendsError> {
        if weight == 0 {
            return Err(BackendsError::ZeroWeight { id });
        }
        match self.entries.get_mut(&id) {
            Some(entry) => {
                entry.service = service;
                entry.weight = weight;
            }
            None => {
                self.entries.insert(
                    id,
                    Entry {
                        service,
                        weight,
                        state: Arc::default(),
                    },
                );
            }
        }
        Ok(())
    }
}

impl<S: Clone> Default for Backends<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Clone> Backends<S> {
    /// An empty set. A [`Sticky`](crate::Sticky) over an empty set answers 503.
    pub fn new() -> Self {
        let mut writer = Writer {
            entries: BTreeMap::new(),
            ring_kinds: Vec::new(),
            version: 0,
        };
        let snapshot = writer.snapshot();
        Self {
            shared: Arc::new(Shared {
                current: ArcSwap::from_pointee(snapshot),
                writer: Mutex::new(writer),
                discover: discover::Slot::default(),
            }),
        }
    }

    /// Adds (or replaces) backend `id` with weight 1.
    pub fn with(self, id: impl Into<BackendId>, service: S) -> Self {
        self.handle().insert(id, service);
        self
    }

    /// Adds (or replaces) backend `id` with a relative `weight`; 0 is refused with
    /// [`BackendsError::ZeroWeight`].
    pub fn with_weight(
        self,
        id: impl Into<BackendId>,
        service: S,
        weight: u32,
    ) -> Result<Self, BackendsError> {
        self.handle().insert_weighted(id, service, weight)?;
        Ok(self)
    }

    /// Builds a set from `(id, service, weight)` triples; the first zero weight is refused.
    pub fn try_from_weighted<I, K>(iter: I) -> Result<Self, BackendsError>
    where
        I: IntoIterator<Item = (K, S, u32)>,
        K: Into<BackendId>,
    {
        let backends = Self::new();
        backends.handle().apply(|writer| {
            for (id, service, weight) in iter {
                writer.insert(id.into(), service, weight)?;
            }
            Ok(())
        })?;
        Ok(backends)
    }

    /// A cloneable handle that changes this set at run time.
    pub fn handle(&self) -> BackendsHandle<S> {
        BackendsHandle::new(Arc::clone(&self.shared))
    }

    /// Number of backends now.
    pub fn len(&self) -> usize {
        self.shared.current.load().set.len()
    }

    /// `true` when the set is empty now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ids now in the set, sorted.
    pub fn ids(&self) -> Vec<BackendId> {
        self.handle().ids()
    }

    /// Makes every future snapshot carry a ring of each of these kinds (strategies call this
    /// through the layer, so rings are built on change, never on the request path).
    pub(crate) fn require_rings(&self, kinds: &[RingKind]) {
        let shared = &self.shared;
        let mut writer = lock(&shared.writer);
        let missing: Vec<RingKind> = kinds
            .iter()
            .filter(|k| !writer.ring_kinds.contains(k))
            .copied()
            .collect();
        if missing.is_empty() {
            return;
        }
        writer.ring_kinds.extend(missing);
        shared.current.store(Arc::new(writer.snapshot()));
    }

    pub(crate) fn shared(&self) -> &Arc<Shared<S>> {
        &self.shared
    }
}

impl<S> Shared<S> {
    pub(crate) fn load(&self) -> arc_swap::Guard<Arc<Snapshot<S>>> {
        self.current.load()
    }

    /// The current snapshot as an owned `Arc` (for work that outlives a guard: retries, probes).
    pub(crate) fn load_full(&self) -> Arc<Snapshot<S>> {
        self.current.load_full()
    }
}

impl<S> Backends<S> {
    /// Counters of every backend now: requests, in flight, errors, health, assignments,
    /// re-assignments, latency. See [`StickyStats`].
    pub fn stats(&self) -> StickyStats {
        let snapshot = self.shared.current.load();
        StickyStats {
            backends: snapshot
                .set
                .members()
                .iter()
                .map(BackendStats::of)
                .collect(),
        }
    }
}

impl<S: Clone + Send + Sync + 'static> Backends<S> {
    /// Starts active health checks of this set (see [`ActiveHealth`]): a background task probes
    /// every backend each interval, marking it down after `fall` failed probes and up after `rise`
    /// good ones. Backends added later are probed from the next round. The task stops once the
    /// last clone of this set (and every `Sticky` over it) is dropped.
    ///
    /// Fails with [`HealthError::NoRuntime`] outside a Tokio runtime.
    pub fn with_active_health(self, health: ActiveHealth<S>) -> Result<Self, HealthError> {
        crate::health::spawn_active(Arc::downgrade(&self.shared), health)?;
        Ok(self)
    }
}

impl<S: Clone, K: Into<BackendId>> FromIterator<(K, S)> for Backends<S> {
    /// Builds a set from `(id, service)` pairs, each with weight 1.
    fn from_iter<I: IntoIterator<Item = (K, S)>>(iter: I) -> Self {
        let backends = Self::new();
        let handle = backends.handle();
        // Weight 1 is never refused.
        let _ = handle.apply(|writer| {
            for (id, service) in iter {
                writer.insert(id.into(), service, 1)?;
            }
            Ok(())
        });
        backends
    }
}

impl<S> fmt::Debug for Backends<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let snapshot = self.shared.current.load();
        f.debug_struct("Backends")
            .field("members", &snapshot.set.members())
            .field("version", &snapshot.set.version())
            .finish()
    }
}
