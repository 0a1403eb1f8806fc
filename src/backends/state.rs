//! Per-backend live state: counters, health flags, passive-health memory and the latency
//! histogram, shared by every snapshot and request.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::health::{HealthState, PassiveHealth};
use crate::metrics::histogram::Histogram;

/// Live state of one backend, shared by every [`Sticky`](crate::Sticky) clone and kept across
/// membership changes for as long as the id stays in the set.
#[derive(Debug)]
pub struct BackendState {
    // No in-flight counter of its own: it is `requests - responses - unanswered`, so a request
    // that is answered (nearly all of them) costs two atomic additions, not four (an uncontended
    // `lock xadd` costs about twenty cycles, a measurable part of `Sticky`'s per-request cost).
    requests: AtomicU64,
    responses: AtomicU64,
    /// Requests that finished without a response going back (errors, cancelled futures).
    unanswered: AtomicU64,
    errors: AtomicU64,
    new_assignments: AtomicU64,
    reassignments: AtomicU64,
    ejections: AtomicU64,
    /// Up as far as the operator (handle) and the active probes know.
    healthy: AtomicBool,
    draining: AtomicBool,
    /// Consecutive failed requests (passive health).
    failures: AtomicU32,
    /// Set while passively ejected or on probation; the clock is only read when it is set.
    ejected: AtomicBool,
    /// While `ejected`: milliseconds since [`epoch`] at which the back-off ends.
    ejected_until: AtomicU64,
    /// Ejections since the backend last succeeded: sets the length of the next back-off.
    ejection_streak: AtomicU32,
    probe_successes: AtomicU32,
    probe_failures: AtomicU32,
    pub(crate) latency: Histogram,
    #[cfg(feature = "metrics")]
    pub(crate) facade: OnceLock<crate::metrics::facade::Handles>,
}

impl Default for BackendState {
    fn default() -> Self {
        Self {
            requests: AtomicU64::new(0),
            responses: AtomicU64::new(0),
            unanswered: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            new_assignments: AtomicU64::new(0),
            reassignments: AtomicU64::new(0),
            ejections: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            draining: AtomicBool::new(false),
            failures: AtomicU32::new(0),
            ejected: AtomicBool::new(false),
            ejected_until: AtomicU64::new(0),
            ejection_streak: AtomicU32::new(0),
            probe_successes: AtomicU32::new(0),
            probe_failures: AtomicU32::new(0),
            latency: Histogram::default(),
            #[cfg(feature = "metrics")]
            facade: OnceLock::new(),
        }
    }
}

/// A process-wide origin for the millisecond clock passive health stores in atomics.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl BackendState {
    /// Requests sent to this backend that have not finished yet.
    pub fn in_flight(&self) -> u64 {
        // The finished counts first, with acquire loads of the release increments: every request
        // they count was counted in `requests` before, so reading `requests` after them does not
        // see fewer starts than ends. Saturating all the same: it is a load estimate.
        let answered = self.responses.load(Ordering::Acquire);
        let unanswered = self.unanswered.load(Ordering::Acquire);
        self.requests
            .load(Ordering::Relaxed)
            .saturating_sub(answered)
            .saturating_sub(unanswered)
    }

    /// Requests (attempts, retries included) sent to this backend so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Requests this backend answered with a response that went back to the client.
    pub fn responses(&self) -> u64 {
        self.responses.load(Ordering::Relaxed)
    }

    /// Requests that failed here: an error of the inner service, or a response the passive health
    /// rule counts as a failure.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Clients with no affinity yet that were assigned to this backend.
    pub fn new_assignments(&self) -> u64 {
        self.new_assignments.load(Ordering::Relaxed)
    }

    /// Requests that came here because their own backend was unusable or failed (failovers).
    pub fn reassignments(&self) -> u64 {
        self.reassignments.load(Ordering::Relaxed)
    }

    /// How many times passive health ejected this backend.
    pub fn ejections(&self) -> u64 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// Whether the backend may be routed to now: not marked down (by the handle or the active
    /// probes) and not inside a passive-health back-off.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed) && !self.in_backoff()
    }

    /// Whether the backend refuses new clients while keeping its sticky ones.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// The health state in detail.
    pub fn health(&self) -> HealthState {
        if !self.healthy.load(Ordering::Relaxed) {
            return HealthState::Down;
        }
        if !self.ejected.load(Ordering::Relaxed) {
            return HealthState::Healthy;
        }
        let until = self.ejected_until.load(Ordering::Relaxed);
        match until.checked_sub(now_ms()) {
            Some(left) if left > 0 => HealthState::Ejected {
                remaining: Duration::from_millis(left),
            },
            _ => HealthState::Probation,
        }
    }

    /// The fast path reads one flag; only an ejected backend costs a clock read.
    fn in_backoff(&self) -> bool {
        self.ejected.load(Ordering::Relaxed)
            && now_ms() < self.ejected_until.load(Ordering::Relaxed)
    }

    pub(crate) fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    pub(crate) fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::Relaxed);
    }

    pub(crate) fn count_new_assignment(&self) {
        self.new_assignments.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_reassignment(&self) {
        self.reassignments.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request as started; the returned guard counts it as finished when dropped, so a
    /// cancelled response future is counted too.
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        let n = self.requests.fetch_add(1, Ordering::Relaxed);
        InFlight {
            state: Arc::clone(self),
            timed: n % LATENCY_SAMPLE_EVERY == 0,
            answered: false,
        }
    }

    /// A request succeeded: forget earlier failures; a backend on probation is readmitted.
    /// Returns `true` when this readmitted it.
    pub(crate) fn record_success(&self) -> bool {
        // Reads first: the common case (no failures, not ejected) writes nothing shared.
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if self.ejected.load(Ordering::Relaxed) && !self.in_backoff() {
            self.readmit();
            return true;
        }
        false
    }

    /// A request failed. Returns the back-off when this failure ejected the backend.
    pub(crate) fn record_failure(&self, policy: &PassiveHealth) -> Option<Duration> {
        let failures = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let now = now_ms();
        if self.ejected.load(Ordering::Relaxed) {
            // Inside the back-off (a request routed before the ejection): nothing new.
            let until = self.ejected_until.load(Ordering::Relaxed);
            if now < until {
                return None;
            }
            // On probation and failed again: eject for longer. Only one racing failure wins.
            return self.eject_from(until, now, policy);
        }
        if failures < policy.threshold {
            return None;
        }
        if self
            .ejected
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return None;
        }
        let until = self.ejected_until.load(Ordering::Relaxed);
        self.eject_from(until, now, policy)
    }

    fn eject_from(&self, seen_until: u64, now: u64, policy: &PassiveHealth) -> Option<Duration> {
        let streak = self
            .ejection_streak
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let backoff = policy.backoff_for(streak);
        let until = now.saturating_add(u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX));
        self.ejected_until
            .compare_exchange(seen_until, until, Ordering::AcqRel, Ordering::Relaxed)
            .ok()?;
        self.ejections.fetch_add(1, Ordering::Relaxed);
        Some(backoff)
    }

    fn readmit(&self) {
        self.ejected.store(false, Ordering::Relaxed);
        self.ejection_streak.store(0, Ordering::Relaxed);
        self.failures.store(0, Ordering::Relaxed);
    }

    /// An active probe answered. Returns the new health flag when this probe changed it.
    pub(crate) fn record_probe(&self, ok: bool, rise: u32, fall: u32) -> Option<bool> {
        if ok {
            self.probe_failures.store(0, Ordering::Relaxed);
            let n = self.probe_successes.fetch_add(1, Ordering::Relaxed) + 1;
            let down = !self.healthy.load(Ordering::Relaxed);
            let ejected = self.ejected.load(Ordering::Relaxed);
            if n >= rise && (down || ejected) {
                // A backend the probes see up for `rise` checks is readmitted at once, even
                // inside a passive back-off: it is back (e.g. restarted).
                self.readmit();
                self.healthy.store(true, Ordering::Relaxed);
                return down.then_some(true);
            }
        } else {
            self.probe_successes.store(0, Ordering::Relaxed);
            let n = self.probe_failures.fetch_add(1, Ordering::Relaxed) + 1;
            if n >= fall && self.healthy.swap(false, Ordering::Relaxed) {
                return Some(false);
            }
        }
        None
    }
}

/// Latency is measured on one request in this many per backend (the first, then every n-th):
/// reading the clock twice per request costs more than the rest of the bookkeeping together on
/// some machines, and a systematic 1-in-8 sample gives the same quantiles.
pub(crate) const LATENCY_SAMPLE_EVERY: u64 = 8;

/// One request in flight on one backend.
#[derive(Debug)]
pub(crate) struct InFlight {
    state: Arc<BackendState>,
    /// Whether this request's latency is measured (see [`LATENCY_SAMPLE_EVERY`]).
    timed: bool,
    /// Counted in `responses`, so it is no longer in flight; otherwise dropping it counts it in
    /// `unanswered`.
    answered: bool,
}

impl InFlight {
    pub(crate) fn state(&self) -> &BackendState {
        &self.state
    }

    /// Whether this request's latency should be measured.
    pub(crate) fn is_timed(&self) -> bool {
        self.timed
    }

    /// The backend answered with a response that goes back to the client; `latency` is given
    /// for timed requests.
    pub(crate) fn responded(&mut self, latency: Option<Duration>) {
        if !self.answered {
            self.answered = true;
            self.state.responses.fetch_add(1, Ordering::Release);
        }
        if let Some(latency) = latency {
            self.state.latency.record(latency);
        }
    }

    /// The request failed on this backend (error, or a response counted as a failure).
    pub(crate) fn failed(&self) {
        self.state.errors.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.answered {
            self.state.unanswered.fetch_add(1, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_failures_eject_and_one_success_after_backoff_readmits() {
        let policy = PassiveHealth::consecutive_failures(3).backoff(Duration::from_millis(40));
        let s = BackendState::default();
        assert_eq!(s.record_failure(&policy), None);
        assert_eq!(s.record_failure(&policy), None);
        // A success in between resets the count.
        assert!(!s.record_success());
        assert_eq!(s.record_failure(&policy), None);
        assert_eq!(s.record_failure(&policy), None);
        assert_eq!(s.record_failure(&policy), Some(Duration::from_millis(40)));
        assert!(!s.is_healthy());
        assert!(matches!(s.health(), HealthState::Ejected { .. }));
        std::thread::sleep(Duration::from_millis(60));
        assert!(s.is_healthy(), "back-off over: on probation, routable");
        assert_eq!(s.health(), HealthState::Probation);
        // Fails on probation: ejected again, for twice as long.
        assert_eq!(s.record_failure(&policy), Some(Duration::from_millis(80)));
        assert!(!s.is_healthy());
        std::thread::sleep(Duration::from_millis(100));
        assert!(s.record_success(), "one success readmits");
        assert_eq!(s.health(), HealthState::Healthy);
        assert_eq!(s.ejections(), 2);
    }

    #[test]
    fn in_flight_counts_each_request_until_it_is_answered_or_dropped() {
        let s = Arc::new(BackendState::default());
        let mut answered = s.begin();
        let failed = s.begin();
        let cancelled = s.begin();
        assert_eq!(s.in_flight(), 3);
        answered.responded(None);
        answered.responded(None);
        assert_eq!(
            (s.in_flight(), s.responses()),
            (2, 1),
            "answered once, counted once"
        );
        drop(answered);
        assert_eq!(
            s.in_flight(),
            2,
            "dropping an answered request counts nothing more"
        );
        failed.failed();
        drop(failed);
        drop(cancelled);
        assert_eq!((s.in_flight(), s.requests(), s.errors()), (0, 3, 1));
    }

    #[test]
    fn probes_rise_and_fall() {
        let s = BackendState::default();
        assert_eq!(s.record_probe(false, 2, 2), None);
        assert_eq!(s.record_probe(false, 2, 2), Some(false));
        assert_eq!(s.health(), HealthState::Down);
        assert_eq!(s.record_probe(true, 2, 2), None);
        assert_eq!(s.record_probe(false, 2, 2), None);
        assert_eq!(s.record_probe(true, 2, 2), None);
        assert_eq!(s.record_probe(true, 2, 2), Some(true));
        assert!(s.is_healthy());
    }
}
