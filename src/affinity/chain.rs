//! [`Chain`]: "cookie, else IP, else round robin".

use std::sync::Arc;

use super::{Affinity, RouteContext, Selection};
use crate::ring::RingKind;

/// Strategies asked in order; the first that has a key for the request decides.
///
/// A strategy answering [`Selection::NoKey`] passes the request to the next one. When none has a
/// key, the chain answers `NoKey` too ([`StickyLayer`](crate::StickyLayer) always ends its chain
/// with [`RoundRobin`](super::RoundRobin), so a request is never left without a backend).
///
/// ```
/// use tower_sticky::affinity::{Chain, IpHash, KeyHash, RoundRobin};
/// let chain = Chain::new()
///     .then(KeyHash::header("x-user"))
///     .then(IpHash::new())
///     .then(RoundRobin::new());
/// assert_eq!(chain.len(), 3);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Chain {
    strategies: Vec<Arc<dyn Affinity>>,
    /// Whether any strategy edits requests: most chains have none, and then preparing a request
    /// is one branch instead of a virtual call per strategy.
    edits: bool,
}

impl Chain {
    /// An empty chain.
    pub const fn new() -> Self {
        Self {
            strategies: Vec::new(),
            edits: false,
        }
    }

    /// Appends a strategy, asked after the ones already in the chain.
    pub fn then(mut self, strategy: impl Affinity) -> Self {
        self.edits |= strategy.edits_requests();
        self.strategies.push(Arc::new(strategy));
        self
    }

    /// Appends a shared strategy.
    pub fn then_shared(mut self, strategy: Arc<dyn Affinity>) -> Self {
        self.edits |= strategy.edits_requests();
        self.strategies.push(strategy);
        self
    }

    /// Number of strategies.
    pub fn len(&self) -> usize {
        self.strategies.len()
    }

    /// `true` when the chain holds no strategy.
    pub fn is_empty(&self) -> bool {
        self.strategies.is_empty()
    }

    /// Asks the strategies in order; returns the decision and the name of the strategy that made
    /// it.
    pub fn select_named(
        &self,
        req: &http::request::Parts,
        ctx: &RouteContext<'_>,
    ) -> (Selection, &'static str) {
        for strategy in &self.strategies {
            match strategy.select(req, ctx) {
                Selection::NoKey => continue,
                decided => return (decided, strategy.name()),
            }
        }
        (Selection::NoKey, "none")
    }
}

impl Affinity for Chain {
    fn select(&self, req: &http::request::Parts, ctx: &RouteContext<'_>) -> Selection {
        self.select_named(req, ctx).0
    }

    fn name(&self) -> &'static str {
        "chain"
    }

    fn rings(&self) -> Vec<RingKind> {
        let mut kinds: Vec<RingKind> = Vec::new();
        for kind in self.strategies.iter().flat_map(|s| s.rings()) {
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        kinds
    }

    fn prepare_request(&self, req: &mut http::request::Parts) {
        if !self.edits {
            return;
        }
        for strategy in &self.strategies {
            strategy.prepare_request(req);
        }
    }

    fn edits_requests(&self) -> bool {
        self.edits
    }
}
