//! [`RoundRobin`]: smooth weighted round robin over the usable members.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Affinity, Choice, Reason, RouteContext, Selection, Unavailable};

/// Smooth weighted round robin (nginx's algorithm): over one cycle each member gets as many
/// requests as its weight, interleaved. Members that are unhealthy or draining are skipped.
///
/// It has no key, so it never sticks by itself; use it for clients without a key and for the
/// shared-session set-up where any backend can serve any user.
///
/// ```
/// use tower_sticky::{StickyLayer, affinity::RoundRobin};
/// let layer = StickyLayer::new(RoundRobin::new());
/// # let _ = layer;
/// ```
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    /// A round robin starting at the first member.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Affinity for RoundRobin {
    fn select(&self, _req: &http::request::Parts, ctx: &RouteContext<'_>) -> Selection {
        let schedule = ctx.members().schedule();
        if schedule.is_empty() {
            return Selection::Unavailable(Unavailable::NoBackends);
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for step in 0..schedule.len() {
            let position = schedule[(start.wrapping_add(step)) % schedule.len()] as usize;
            if ctx.accepts_new(position) {
                return Selection::Chosen(Choice::new(position, Reason::Balanced));
            }
        }
        Selection::Unavailable(Unavailable::NoHealthyBackend)
    }

    fn name(&self) -> &'static str {
        "round-robin"
    }

    fn edits_requests(&self) -> bool {
        false
    }
}
