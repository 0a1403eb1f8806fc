//! Errors of the routing half of the crate.

use crate::BackendId;

/// A change to a [`Backends`](crate::Backends) set that was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BackendsError {
    /// Weights are relative shares of traffic; 0 would mean "never", which is what removing or
    /// draining a backend is for.
    #[error(
        "backend {id:?}: weight must be at least 1 (use remove or drain to take it out of rotation)"
    )]
    ZeroWeight {
        /// The backend the change named.
        id: BackendId,
    },
    /// The change named a backend the set does not hold.
    #[error("backend {id:?} is not in the set")]
    UnknownBackend {
        /// The backend the change named.
        id: BackendId,
    },
}
