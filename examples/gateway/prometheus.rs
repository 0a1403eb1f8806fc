//! `--metrics-listen`: the stats snapshot in the Prometheus text format.

use std::fmt::Write;

use tower_sticky::health::HealthState;
use tower_sticky::metrics::{BackendStats, StickyStats};

/// One exported series: name, Prometheus type, and how to read it from a backend's stats.
type Series = (&'static str, &'static str, fn(&BackendStats) -> f64);

/// Renders every per-backend counter of `stats` as Prometheus text.
pub(crate) fn render(stats: &StickyStats) -> String {
    let mut out = String::new();
    let counters: [Series; 10] = [
        ("tower_sticky_requests_total", "counter", |b| {
            b.requests as f64
        }),
        ("tower_sticky_responses_total", "counter", |b| {
            b.responses as f64
        }),
        ("tower_sticky_errors_total", "counter", |b| b.errors as f64),
        ("tower_sticky_in_flight", "gauge", |b| b.in_flight as f64),
        ("tower_sticky_new_assignments_total", "counter", |b| {
            b.new_assignments as f64
        }),
        ("tower_sticky_reassignments_total", "counter", |b| {
            b.reassignments as f64
        }),
        ("tower_sticky_ejections_total", "counter", |b| {
            b.ejections as f64
        }),
        ("tower_sticky_healthy", "gauge", |b| {
            f64::from(u8::from(!matches!(
                b.health,
                HealthState::Down | HealthState::Ejected { .. }
            )))
        }),
        ("tower_sticky_latency_p50_seconds", "gauge", |b| {
            b.latency.p50.as_secs_f64()
        }),
        ("tower_sticky_latency_p99_seconds", "gauge", |b| {
            b.latency.p99.as_secs_f64()
        }),
    ];
    for (name, kind, value) in counters {
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for backend in &stats.backends {
            let _ = writeln!(
                out,
                "{name}{{backend=\"{}\"}} {}",
                backend.id,
                value(backend)
            );
        }
    }
    out
}
