//! [`LeastInFlight`]: the member with the fewest requests in flight per unit of weight.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Affinity, Choice, Reason, RouteContext, Selection, Unavailable};

/// Picks the usable member with the fewest in-flight requests relative to its weight; ties are
/// broken by a rotating start so equal members share the load.
///
/// ```
/// use tower_sticky::{StickyLayer, affinity::LeastInFlight};
/// let layer = StickyLayer::new(LeastInFlight::new());
/// # let _ = layer;
/// ```
#[derive(Debug, Default)]
pub struct LeastInFlight {
    rotate: AtomicUsize,
}

impl LeastInFlight {
    /// A new least-in-flight picker.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Affinity for LeastInFlight {
    fn select(&self, _req: &http::request::Parts, ctx: &RouteContext<'_>) -> Selection {
        let n = ctx.len();
        if n == 0 {
            return Selection::Unavailable(Unavailable::NoBackends);
        }
        let start = self.rotate.fetch_add(1, Ordering::Relaxed);
        // (in_flight, weight, position) of the best so far; compare a/wa < b/wb as a*wb < b*wa.
        let mut best: Option<(u64, u64, usize)> = None;
        for step in 0..n {
            let position = start.wrapping_add(step) % n;
            if !ctx.accepts_new(position) {
                continue;
            }
            let Some(member) = ctx.member(position) else {
                continue;
            };
            let load = member.state().in_flight();
            let weight = u64::from(member.weight());
            let better = match best {
                None => true,
                Some((best_load, best_weight, _)) => {
                    u128::from(load) * u128::from(best_weight)
                        < u128::from(best_load) * u128::from(weight)
                }
            };
            if better {
                best = Some((load, weight, position));
            }
        }
        match best {
            Some((_, _, position)) => Selection::Chosen(Choice::new(position, Reason::Balanced)),
            None => Selection::Unavailable(Unavailable::NoHealthyBackend),
        }
    }

    fn name(&self) -> &'static str {
        "least-in-flight"
    }

    fn edits_requests(&self) -> bool {
        false
    }
}
