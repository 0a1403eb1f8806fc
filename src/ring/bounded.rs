//! Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam, SODA 2018).
//!
//! Each key still has its preference order on a ring, but a member may take a request only while
//! its load stays within `ceil(c x average)`, the average counting the request being placed. A
//! key whose primary is full walks on to its next candidates, so keys stay sticky while loads are
//! even and spill over deterministically when one member gets hot.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Ring, RingError};

/// How often [`BoundedLoad::acquire`] re-reads the total and walks again when racing placements
/// filled every member it was offered (each retry sees a larger total, so a larger bound).
const ACQUIRE_ATTEMPTS: usize = 8;

/// The bounded-load factor `c >= 1.0`: no member takes a request that would put it above
/// `ceil(c x (in_flight + 1) / usable)`.
///
/// `c = 1.0` keeps loads perfectly even (at the cost of stickiness); `1.25` is the usual
/// compromise (Vimeo, HAProxy's `hash-balance-factor 125`); larger values move fewer keys.
///
/// ```
/// use tower_sticky::ring::BoundedLoad;
///
/// let bound = BoundedLoad::new(1.25)?;
/// // 9 requests in flight over 4 members, placing the 10th: average 2.5, bound ceil(3.125) = 4.
/// assert_eq!(bound.capacity(9, 4), 4);
/// assert!(BoundedLoad::new(0.9).is_err());
/// # Ok::<(), tower_sticky::ring::RingError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoundedLoad {
    factor: f64,
}

impl BoundedLoad {
    /// A bound with factor `c`; refuses `c < 1.0`, NaN and infinity.
    pub fn new(factor: f64) -> Result<Self, RingError> {
        if factor.is_finite() && factor >= 1.0 {
            Ok(Self { factor })
        } else {
            Err(RingError::InvalidLoadFactor { factor })
        }
    }

    /// The factor `c`.
    pub fn factor(&self) -> f64 {
        self.factor
    }

    /// The most requests one member may hold once the request being placed is counted:
    /// `ceil(c x (in_flight + 1) / usable)`, at least 1. `in_flight` is the total over the
    /// `usable` members.
    pub fn capacity(&self, in_flight: u64, usable: usize) -> u64 {
        self.weighted_capacity(in_flight, 1, usable as u64)
    }

    /// The bound of one member of weight `weight` when the usable members weigh `total_weight`
    /// together: its share of the average, `ceil(c x (in_flight + 1) x weight / total_weight)`,
    /// at least 1. Equal weights give [`capacity`](Self::capacity).
    pub fn weighted_capacity(&self, in_flight: u64, weight: u32, total_weight: u64) -> u64 {
        let share = f64::from(weight.max(1)) / total_weight.max(1) as f64;
        let bound = (self.factor * (in_flight as f64 + 1.0) * share).ceil();
        // Exact for totals below 2^53; the cast saturates above.
        (bound as u64).max(1)
    }

    /// Walks `ring` for `key` and returns the first usable member whose load is below its bound,
    /// together with the first usable member offered (the key's sticky choice).
    ///
    /// [`LoadView::totals`] is only called when the first candidate is busy, so an idle set costs
    /// one plain lookup. When every usable member is at its bound (only possible when loads
    /// change during the walk), the first usable member is returned: load is never a reason to
    /// refuse a request outright. `None` means no member is usable.
    pub fn find(&self, ring: &dyn Ring, key: &[u8], view: &dyn LoadView) -> Option<BoundedChoice> {
        let mut first_usable = None;
        let mut totals = None;
        let found = ring.find(key, &mut |position| {
            if !view.usable(position) {
                return false;
            }
            first_usable.get_or_insert(position);
            let current = view.load(position);
            // An idle member is always within the bound (every bound is at least 1).
            if current == 0 {
                return true;
            }
            let (in_flight, total_weight) = *totals.get_or_insert_with(|| view.totals());
            current < self.weighted_capacity(in_flight, view.weight(position), total_weight)
        });
        let first_usable = first_usable?;
        Some(BoundedChoice {
            position: found.unwrap_or(first_usable),
            first_usable,
        })
    }

    /// Places one unit of load for `key` on `counters`, exactly within the bound even when many
    /// threads place at once: the total is reserved first and a member's slot is taken with a
    /// compare-and-swap, so no member ever exceeds its bound computed from the total at the
    /// moment it is given the request. Every member of `ring` is treated as usable; `counters`
    /// must have one counter per ring member.
    ///
    /// Returns `None` for an empty ring, or when racing placements kept every member full
    /// through several re-reads of the total.
    pub fn acquire<'a>(
        &self,
        ring: &dyn Ring,
        key: &[u8],
        counters: &'a LoadCounters,
    ) -> Option<LoadGuard<'a>> {
        if ring.is_empty() || counters.loads.len() < ring.len() {
            return None;
        }
        for _ in 0..ACQUIRE_ATTEMPTS {
            // Reserve in the total first (and release a member before the total on drop), so
            // the sum of member loads never exceeds the total anyone reads.
            let before = counters.total.fetch_add(1, Ordering::AcqRel);
            let found = ring.find(key, &mut |position| {
                let (Some(slot), Some(&weight)) =
                    (counters.loads.get(position), counters.weights.get(position))
                else {
                    return false;
                };
                let cap = self.weighted_capacity(before, weight, counters.total_weight);
                let mut current = slot.load(Ordering::Acquire);
                while current < cap {
                    match slot.compare_exchange_weak(
                        current,
                        current + 1,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => return true,
                        Err(actual) => current = actual,
                    }
                }
                false
            });
            match found {
                Some(position) => return Some(LoadGuard { counters, position }),
                None => {
                    counters.total.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
        None
    }
}

/// What [`BoundedLoad::find`] reads: which members are usable, their loads and weights.
///
/// [`RouteContext`](crate::affinity::RouteContext) implements it over the live in-flight
/// counters of a [`Backends`](crate::Backends) set.
pub trait LoadView {
    /// May member `position` take requests at all?
    fn usable(&self, position: usize) -> bool;

    /// Member `position`'s current load (requests in flight).
    fn load(&self, position: usize) -> u64;

    /// Member `position`'s weight (its share of the average); 1 unless overridden.
    fn weight(&self, position: usize) -> u32 {
        let _ = position;
        1
    }

    /// The total load over the usable members and their total weight.
    fn totals(&self) -> (u64, u64);
}

/// What [`BoundedLoad::find`] chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundedChoice {
    /// The member to send the request to.
    pub position: usize,
    /// The first usable member in the key's order: where the request would go without the bound.
    pub first_usable: usize,
}

impl BoundedChoice {
    /// `true` when the bound moved the request off its sticky member.
    pub fn overflowed(&self) -> bool {
        self.position != self.first_usable
    }
}

/// Per-member load counters and their total, for [`BoundedLoad::acquire`].
///
/// ```
/// use tower_sticky::ring::{BoundedLoad, LoadCounters, RingKind, RingMember};
/// use tower_sticky::BackendId;
///
/// let ids: Vec<BackendId> = ["a", "b", "c"].into_iter().map(BackendId::from).collect();
/// let members: Vec<_> = ids.iter().map(|id| RingMember { id, weight: 1 }).collect();
/// let ring = RingKind::Ketama.build(&members);
/// let counters = LoadCounters::new(ring.len());
/// let bound = BoundedLoad::new(1.0)?;
/// // One hot key: with c = 1.0 its requests are spread evenly over all three members.
/// let held: Vec<_> = (0..6).map(|_| bound.acquire(&*ring, b"hot", &counters).unwrap()).collect();
/// assert_eq!((0..3).map(|m| counters.load(m)).collect::<Vec<_>>(), [2, 2, 2]);
/// drop(held);
/// assert_eq!(counters.total(), 0);
/// # Ok::<(), tower_sticky::ring::RingError>(())
/// ```
#[derive(Debug)]
pub struct LoadCounters {
    loads: Box<[AtomicU64]>,
    weights: Box<[u32]>,
    total_weight: u64,
    total: AtomicU64,
}

impl LoadCounters {
    /// Zeroed counters for `members` members of weight 1.
    pub fn new(members: usize) -> Self {
        Self::with_weights(vec![1; members])
    }

    /// Zeroed counters for members of these weights (ring positions order; 0 counts as 1).
    pub fn with_weights(weights: Vec<u32>) -> Self {
        let weights: Box<[u32]> = weights.into_iter().map(|w| w.max(1)).collect();
        Self {
            loads: weights.iter().map(|_| AtomicU64::new(0)).collect(),
            total_weight: weights.iter().map(|&w| u64::from(w)).sum(),
            weights,
            total: AtomicU64::new(0),
        }
    }

    /// Number of members counted.
    pub fn len(&self) -> usize {
        self.loads.len()
    }

    /// `true` when no member is counted.
    pub fn is_empty(&self) -> bool {
        self.loads.is_empty()
    }

    /// Current load of member `position` (0 for an unknown position).
    pub fn load(&self, position: usize) -> u64 {
        self.loads
            .get(position)
            .map_or(0, |l| l.load(Ordering::Acquire))
    }

    /// Current total load.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Acquire)
    }
}

/// One unit of load held on one member; released when dropped.
#[derive(Debug)]
pub struct LoadGuard<'a> {
    counters: &'a LoadCounters,
    position: usize,
}

impl LoadGuard<'_> {
    /// The member holding this load.
    pub fn position(&self) -> usize {
        self.position
    }
}

impl Drop for LoadGuard<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.counters.loads.get(self.position) {
            slot.fetch_sub(1, Ordering::AcqRel);
        }
        self.counters.total.fetch_sub(1, Ordering::AcqRel);
    }
}
