//! Health: passive ejection after consecutive failures ([`PassiveHealth`]) and active probes
//! ([`ActiveHealth`]).
//!
//! A backend is routable when it is not marked down (by a [`BackendsHandle`](crate::BackendsHandle)
//! or by the active probes) and not inside a passive-health back-off. A request whose backend is
//! not routable goes to its strategy's next candidate (for hashed strategies: one deterministic
//! substitute per client).

mod active;
mod passive;

pub use active::{ActiveHealth, HealthError, InvalidProbePath};
pub use passive::PassiveHealth;

pub(crate) use active::spawn as spawn_active;

use std::fmt;
use std::time::Duration;

/// The health of one backend, as [`BackendState::health`](crate::BackendState::health) and the
/// metrics report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HealthState {
    /// Routable.
    Healthy,
    /// Passively ejected after consecutive failures; routable again after `remaining`.
    Ejected {
        /// Time left in the back-off.
        remaining: Duration,
    },
    /// The back-off is over: routable, and one success readmits it for good.
    Probation,
    /// Marked down by the active probes or the handle.
    Down,
}

impl HealthState {
    /// Whether requests may be routed to it.
    pub fn is_routable(&self) -> bool {
        matches!(self, HealthState::Healthy | HealthState::Probation)
    }

    /// Lower-case name: `healthy`, `ejected`, `probation`, `down`.
    pub fn as_str(&self) -> &'static str {
        match self {
            HealthState::Healthy => "healthy",
            HealthState::Ejected { .. } => "ejected",
            HealthState::Probation => "probation",
            HealthState::Down => "down",
        }
    }
}

impl fmt::Display for HealthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
