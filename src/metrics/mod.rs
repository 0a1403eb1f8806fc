//! Metrics: a snapshot API ([`Backends::stats`](crate::Backends::stats),
//! [`Sticky::stats`](crate::Sticky::stats)) and, with the `metrics` feature, the same numbers
//! through the [`metrics`](https://docs.rs/metrics) facade so any exporter (Prometheus, StatsD)
//! shows them.
//!
//! | facade name (label `backend`) | kind | meaning |
//! |---|---|---|
//! | `tower_sticky_requests_total` | counter | requests sent to the backend (retries included) |
//! | `tower_sticky_responses_total` | counter | responses it returned to clients |
//! | `tower_sticky_errors_total` | counter | failed requests (errors, counted 5xx) |
//! | `tower_sticky_new_assignments_total` | counter | clients with no affinity assigned to it |
//! | `tower_sticky_reassignments_total` | counter | requests it took over from another backend |
//! | `tower_sticky_ejections_total` | counter | passive-health ejections |
//! | `tower_sticky_in_flight` | gauge | requests in flight |
//! | `tower_sticky_healthy` | gauge | 1 when routable, 0 when not |
//! | `tower_sticky_latency_seconds` | histogram | time to the response head |
//!
//! Facade handles are registered on a backend's first request, so install the recorder before
//! serving.

pub(crate) mod facade;
pub(crate) mod histogram;

pub use histogram::LatencySummary;

use crate::BackendId;
use crate::backends::MemberInfo;
use crate::health::HealthState;

/// Counters of every backend of a set at one moment.
///
/// ```
/// use tower_sticky::Backends;
/// # let svc = tower::service_fn(|_r: http::Request<String>| async {
/// #     Ok::<_, std::convert::Infallible>(http::Response::new(String::new())) });
/// let backends = Backends::new().with("a", svc);
/// let stats = backends.stats();
/// let a = stats.backend("a").unwrap();
/// assert_eq!((a.requests, a.in_flight, a.health.as_str()), (0, 0, "healthy"));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct StickyStats {
    /// One entry per backend, sorted by id.
    pub backends: Vec<BackendStats>,
}

impl StickyStats {
    /// The entry of backend `id`.
    pub fn backend(&self, id: &str) -> Option<&BackendStats> {
        self.backends.iter().find(|b| b.id == *id)
    }

    /// Sum of one counter over all backends.
    pub fn total(&self, counter: impl Fn(&BackendStats) -> u64) -> u64 {
        self.backends.iter().map(counter).sum()
    }
}

/// Counters of one backend.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BackendStats {
    /// The backend's id.
    pub id: BackendId,
    /// Its weight.
    pub weight: u32,
    /// Requests sent to it (each attempt of a retried request counts where it was sent).
    pub requests: u64,
    /// Responses it returned to clients (any status).
    pub responses: u64,
    /// Requests in flight now.
    pub in_flight: u64,
    /// Failed requests: inner-service errors and responses the passive-health rule counts.
    pub errors: u64,
    /// Health now.
    pub health: HealthState,
    /// Draining: takes no new clients.
    pub draining: bool,
    /// Clients with no affinity yet that were assigned here.
    pub new_assignments: u64,
    /// Requests that came here because their own backend was unusable or failed.
    pub reassignments: u64,
    /// Passive-health ejections so far.
    pub ejections: u64,
    /// Latency to the response head.
    pub latency: LatencySummary,
}

impl BackendStats {
    pub(crate) fn of(member: &MemberInfo) -> Self {
        let s = member.state();
        Self {
            id: member.id().clone(),
            weight: member.weight(),
            requests: s.requests(),
            responses: s.responses(),
            in_flight: s.in_flight(),
            errors: s.errors(),
            health: s.health(),
            draining: s.is_draining(),
            new_assignments: s.new_assignments(),
            reassignments: s.reassignments(),
            ejections: s.ejections(),
            latency: s.latency.summary(),
        }
    }
}
