//! [`RouteContext`]: what a strategy may look at while choosing.

use std::sync::Arc;

use crate::backends::{MemberInfo, MemberSet};
use crate::ring::{LoadView, Ring, RingKind};

/// The membership snapshot a request is routed over, with the usability rules applied.
///
/// *Usable* means healthy and not excluded for this request (a retry excludes the backend that
/// already failed); in panic mode health is ignored. A usable backend that is *draining* still serves its sticky clients but takes
/// no new ones: strategies assigning a new client use [`accepts_new`](Self::accepts_new).
#[derive(Debug, Clone, Copy)]
pub struct RouteContext<'a> {
    set: &'a MemberSet,
    excluded: &'a [usize],
    panic: bool,
}

impl<'a> RouteContext<'a> {
    /// A context over `set`, with `excluded` positions treated as unusable.
    // Inlined: on every request's path, with callers in other codegen units and crates.
    #[inline]
    pub fn new(set: &'a MemberSet, excluded: &'a [usize]) -> Self {
        Self {
            set,
            excluded,
            panic: false,
        }
    }

    /// The same context in *panic mode* (Envoy's panic threshold): too few members are healthy,
    /// so health is ignored and every member not excluded is usable.
    pub fn ignoring_health(mut self) -> Self {
        self.panic = true;
        self
    }

    /// Whether health is being ignored (see [`ignoring_health`](Self::ignoring_health)).
    pub fn is_panicking(&self) -> bool {
        self.panic
    }

    /// Number of members (usable or not).
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// `true` when there are no members.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// The whole snapshot.
    pub fn members(&self) -> &'a MemberSet {
        self.set
    }

    /// The member at `position`.
    pub fn member(&self, position: usize) -> Option<&'a MemberInfo> {
        self.set.get(position)
    }

    /// The position of the member with this id.
    pub fn position(&self, id: &str) -> Option<usize> {
        self.set.position(id)
    }

    /// May this member serve this request?
    #[inline]
    pub fn is_usable(&self, position: usize) -> bool {
        self.set
            .get(position)
            .is_some_and(|m| self.panic || m.state().is_healthy())
            && !self.excluded.contains(&position)
    }

    /// May this member take a client that has no affinity yet?
    pub fn accepts_new(&self, position: usize) -> bool {
        self.is_usable(position)
            && self
                .set
                .get(position)
                .is_some_and(|m| !m.state().is_draining())
    }

    /// The ring of this kind over the current members. Built when membership changed, for the
    /// kinds the strategies named in [`Affinity::rings`](super::Affinity::rings); a kind nobody
    /// named is built here on first use (slow, but correct).
    #[inline]
    pub fn ring(&self, kind: RingKind) -> RingRef<'a> {
        match self.set.ring(kind) {
            Some(ring) => RingRef::Borrowed(&**ring),
            None => {
                let ids: Vec<_> = self.set.members().iter().map(|m| m.id().clone()).collect();
                let members: Vec<_> = ids
                    .iter()
                    .zip(self.set.members())
                    .map(|(id, m)| crate::ring::RingMember {
                        id,
                        weight: m.weight(),
                    })
                    .collect();
                RingRef::Owned(kind.build(&members))
            }
        }
    }
}

/// Loads are the members' live in-flight counters; the totals cover the usable members. Summing
/// them is linear in the member count, which is why [`BoundedLoad`](crate::ring::BoundedLoad)
/// asks for the totals only when a key's first candidate is busy.
impl LoadView for RouteContext<'_> {
    fn usable(&self, position: usize) -> bool {
        self.is_usable(position)
    }

    fn load(&self, position: usize) -> u64 {
        self.set.get(position).map_or(0, |m| m.state().in_flight())
    }

    fn weight(&self, position: usize) -> u32 {
        self.set.get(position).map_or(1, MemberInfo::weight)
    }

    fn totals(&self) -> (u64, u64) {
        (0..self.set.len())
            .filter(|&p| self.is_usable(p))
            .filter_map(|p| self.set.get(p))
            .fold((0, 0), |(load, weight), m| {
                (load + m.state().in_flight(), weight + u64::from(m.weight()))
            })
    }
}

/// A ring borrowed from the snapshot (the normal case, no reference counting on the request path)
/// or built on the spot for a kind no strategy announced.
#[derive(Debug)]
pub enum RingRef<'a> {
    /// Kept in the snapshot.
    Borrowed(&'a (dyn Ring + 'static)),
    /// Built for this request only.
    Owned(Arc<dyn Ring>),
}

impl std::ops::Deref for RingRef<'_> {
    type Target = dyn Ring;

    fn deref(&self) -> &Self::Target {
        match self {
            RingRef::Borrowed(ring) => *ring,
            RingRef::Owned(ring) => &**ring,
        }
    }
}
