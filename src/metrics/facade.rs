//! The `metrics` facade (feature `metrics`): per-backend handles registered on first use and
//! kept in the backend's state, so the request path never builds labels. Without the feature
//! every function here is an empty inline call.

use std::time::Duration;

#[cfg(feature = "metrics")]
use crate::BackendId;
use crate::backends::BackendState;
use crate::backends::MemberInfo;

#[cfg(feature = "metrics")]
pub(crate) struct Handles {
    requests: metrics::Counter,
    responses: metrics::Counter,
    errors: metrics::Counter,
    new_assignments: metrics::Counter,
    reassignments: metrics::Counter,
    ejections: metrics::Counter,
    in_flight: metrics::Gauge,
    healthy: metrics::Gauge,
    latency: metrics::Histogram,
}

#[cfg(feature = "metrics")]
impl std::fmt::Debug for Handles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Handles")
    }
}

#[cfg(feature = "metrics")]
fn handles<'s>(id: &BackendId, state: &'s BackendState) -> &'s Handles {
    state.facade.get_or_init(|| {
        let backend = id.to_string();
        Handles {
            requests: metrics::counter!("tower_sticky_requests_total", "backend" => backend.clone()),
            responses: metrics::counter!("tower_sticky_responses_total", "backend" => backend.clone()),
            errors: metrics::counter!("tower_sticky_errors_total", "backend" => backend.clone()),
            new_assignments: metrics::counter!("tower_sticky_new_assignments_total", "backend" => backend.clone()),
            reassignments: metrics::counter!("tower_sticky_reassignments_total", "backend" => backend.clone()),
            ejections: metrics::counter!("tower_sticky_ejections_total", "backend" => backend.clone()),
            in_flight: metrics::gauge!("tower_sticky_in_flight", "backend" => backend.clone()),
            healthy: metrics::gauge!("tower_sticky_healthy", "backend" => backend.clone()),
            latency: metrics::histogram!("tower_sticky_latency_seconds", "backend" => backend),
        }
    })
}

/// What happened to one request on one backend, for the facade.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) enum Event {
    Begin,
    NewAssignment,
    Reassignment,
    Response(Option<Duration>),
    Error,
    End,
    Ejected,
}

#[cfg(feature = "metrics")]
pub(crate) fn record(id: &crate::BackendId, state: &BackendState, event: Event) {
    let h = handles(id, state);
    match event {
        Event::Begin => {
            h.requests.increment(1);
            h.in_flight.increment(1.0);
        }
        Event::NewAssignment => h.new_assignments.increment(1),
        Event::Reassignment => h.reassignments.increment(1),
        Event::Response(latency) => {
            h.responses.increment(1);
            if let Some(latency) = latency {
                h.latency.record(latency.as_secs_f64());
            }
        }
        Event::Error => h.errors.increment(1),
        Event::End => h.in_flight.decrement(1.0),
        Event::Ejected => {
            h.ejections.increment(1);
            h.healthy.set(0.0);
        }
    }
    if matches!(event, Event::Response(_)) && state.is_healthy() {
        h.healthy.set(1.0);
    }
}

#[cfg(not(feature = "metrics"))]
#[inline(always)]
pub(crate) fn record(_id: &crate::BackendId, _state: &BackendState, _event: Event) {}

/// A probe or the handle changed a backend's health.
#[cfg(feature = "metrics")]
pub(crate) fn health_changed(member: &MemberInfo) {
    let healthy = if member.state().is_healthy() {
        1.0
    } else {
        0.0
    };
    handles(member.id(), member.state()).healthy.set(healthy);
}

#[cfg(not(feature = "metrics"))]
#[inline(always)]
pub(crate) fn health_changed(_member: &MemberInfo) {}
