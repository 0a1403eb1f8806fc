//! [`PassiveHealth`]: eject a backend after consecutive failed requests.

use std::time::Duration;

use http::StatusCode;

/// Passive health checking ("outlier detection"): every request is a health check.
///
/// After `threshold` consecutive failures a backend is ejected for a back-off period; while it
/// keeps failing after each back-off, the period doubles up to [`max_backoff`](Self::max_backoff).
/// When a back-off ends the backend is routable again, on probation: one success readmits it for
/// good (and resets the back-off), one failure ejects it again for longer.
///
/// A failure is an error of the inner service (connect refused, reset, timeout) or a response
/// whose status the [`failure_status`](Self::failure_status) rule counts; by default `502`, `503`
/// and `504` (the gateway failures a dead or overloaded backend produces), not the application's
/// own `500`s.
///
/// ```
/// use std::time::Duration;
/// use tower_sticky::{StickyLayer, health::PassiveHealth, affinity::IpHash};
///
/// let layer = StickyLayer::builder()
///     .affinity(IpHash::new())
///     .passive_health(
///         PassiveHealth::consecutive_failures(3)
///             .backoff(Duration::from_secs(1))
///             .max_backoff(Duration::from_secs(60))
///             .failure_status(|s| s.is_server_error()),
///     )
///     .build();
/// # let _ = layer;
/// ```
#[derive(Clone)]
pub struct PassiveHealth {
    pub(crate) threshold: u32,
    pub(crate) backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) failure_status: fn(StatusCode) -> bool,
}

impl std::fmt::Debug for PassiveHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassiveHealth")
            .field("threshold", &self.threshold)
            .field("backoff", &self.backoff)
            .field("max_backoff", &self.max_backoff)
            .finish_non_exhaustive()
    }
}

fn gateway_failure(status: StatusCode) -> bool {
    matches!(status.as_u16(), 502..=504)
}

impl PassiveHealth {
    /// Ejects after `n` consecutive failures (at least 1), for 1 s at first, up to 30 s.
    pub fn consecutive_failures(n: u32) -> Self {
        Self {
            threshold: n.max(1),
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            failure_status: gateway_failure,
        }
    }

    /// The first back-off period (default 1 s).
    pub fn backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff.max(Duration::from_millis(1));
        self.max_backoff = self.max_backoff.max(self.backoff);
        self
    }

    /// The longest back-off period (default 30 s).
    pub fn max_backoff(mut self, max: Duration) -> Self {
        self.max_backoff = max.max(self.backoff);
        self
    }

    /// Which response statuses count as failures (default: 502, 503, 504).
    pub fn failure_status(mut self, rule: fn(StatusCode) -> bool) -> Self {
        self.failure_status = rule;
        self
    }

    /// The back-off for the `ejections`-th consecutive ejection (1-based): doubling, capped.
    pub(crate) fn backoff_for(&self, ejections: u32) -> Duration {
        let doublings = ejections.saturating_sub(1).min(31);
        self.backoff
            .checked_mul(1u32 << doublings)
            .map_or(self.max_backoff, |d| d.min(self.max_backoff))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = PassiveHealth::consecutive_failures(2)
            .backoff(Duration::from_millis(100))
            .max_backoff(Duration::from_millis(500));
        assert_eq!(p.backoff_for(1), Duration::from_millis(100));
        assert_eq!(p.backoff_for(2), Duration::from_millis(200));
        assert_eq!(p.backoff_for(3), Duration::from_millis(400));
        assert_eq!(p.backoff_for(4), Duration::from_millis(500));
        assert_eq!(p.backoff_for(u32::MAX), Duration::from_millis(500));
        assert!((p.failure_status)(StatusCode::BAD_GATEWAY));
        assert!(!(p.failure_status)(StatusCode::INTERNAL_SERVER_ERROR));
    }
}
