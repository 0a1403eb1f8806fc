//! Per-backend live state: counters and health flags shared by every snapshot and request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Live state of one backend, shared by every [`Sticky`](crate::Sticky) clone and kept across
/// membership changes for as long as the id stays in the set.
#[derive(Debug)]
pub struct BackendState {
    in_flight: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    healthy: AtomicBool,
    draining: AtomicBool,
}

impl Default for BackendState {
    fn default() -> Self {
        Self {
            in_flight: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            draining: AtomicBool::new(false),
        }
    }
}

impl BackendState {
    /// Requests sent to this backend that have not finished yet.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Requests sent to this backend so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Requests that ended in an error of the inner service.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Whether the backend may be routed to at all.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Whether the backend refuses new clients while keeping its sticky ones.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub(crate) fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    pub(crate) fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::Relaxed);
    }

    /// Counts a request as started; the returned guard counts it as finished when dropped, so a
    /// cancelled response future is counted too.
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }
}

/// One request in flight on one backend.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<BackendState>);

impl InFlight {
    pub(crate) fn failed(&self) {
        self.0.errors.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
