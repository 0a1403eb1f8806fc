//! Consistent hash rings: "key -> ordered candidate backends".
//!
//! A ring is built from the member list of a [`Backends`](crate::Backends) snapshot (ids and
//! weights, sorted by id) whenever membership or weights change, off the request path, and swapped
//! in atomically. A lookup takes no lock and allocates nothing on the common path.
//!
//! ```
//! use tower_sticky::ring::{RingKind, RingMember};
//! use tower_sticky::BackendId;
//!
//! let ids: Vec<BackendId> = ["a", "b", "c"].into_iter().map(BackendId::from).collect();
//! let members: Vec<RingMember<'_>> = ids.iter().map(|id| RingMember { id, weight: 1 }).collect();
//! let ring = RingKind::Ketama.build(&members);
//! let primary = ring.primary(b"user-42").unwrap();
//! // The same key always lands on the same member...
//! assert_eq!(ring.primary(b"user-42"), Some(primary));
//! // ...and when that member is refused, the walk goes on to a different one.
//! let substitute = ring.find(b"user-42", &mut |i| i != primary).unwrap();
//! assert_ne!(substitute, primary);
//! ```

mod ketama;

pub use ketama::{KetamaRing, POINTS_PER_WEIGHT};

use std::fmt;
use std::sync::Arc;

use crate::BackendId;

/// One member as a ring sees it: its id and weight. Members are given sorted by id; a ring answers
/// with positions in that list.
#[derive(Debug, Clone, Copy)]
pub struct RingMember<'a> {
    /// The backend's stable id: the only thing (with the weight) a ring hashes.
    pub id: &'a BackendId,
    /// Relative weight, at least 1.
    pub weight: u32,
}

/// A consistent hash ring over a fixed member list.
///
/// Implementations map a key to a preference order of *distinct* members. `find` walks that order
/// and returns the first member `accept` takes, so failover is deterministic: every request with
/// the same key that finds its primary refused goes to the same substitute.
pub trait Ring: Send + Sync + fmt::Debug {
    /// How many distinct members the ring was built from.
    fn len(&self) -> usize;

    /// `true` when the ring has no members.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Walks the distinct members for `key` in preference order and returns the position of the
    /// first one `accept` returns `true` for, or `None` when it refuses them all.
    fn find(&self, key: &[u8], accept: &mut dyn FnMut(usize) -> bool) -> Option<usize>;

    /// The first choice for `key`, ignoring health.
    fn primary(&self, key: &[u8]) -> Option<usize> {
        self.find(key, &mut |_| true)
    }
}

/// Which ring to build. A strategy names the kind it reads; the [`Backends`](crate::Backends) it is
/// layered over keeps one ring of each kind up to date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RingKind {
    /// [`KetamaRing`]: 160 virtual nodes per unit of weight, XXH3 point and key hashes.
    Ketama,
}

impl RingKind {
    /// Builds a ring of this kind over `members` (sorted by id, weights >= 1).
    pub fn build(&self, members: &[RingMember<'_>]) -> Arc<dyn Ring> {
        match self {
            RingKind::Ketama => Arc::new(KetamaRing::new(members)),
        }
    }
}

/// Tracks which members a walk has already offered, so each is offered once. Small member counts
/// use one machine word; larger ones allocate, which only happens on the failover path.
pub(crate) struct Visited {
    small: u64,
    large: Vec<u64>,
    distinct: usize,
}

impl Visited {
    pub(crate) fn new(len: usize) -> Self {
        let large = if len > 64 {
            vec![0; len.div_ceil(64)]
        } else {
            Vec::new()
        };
        Self {
            small: 0,
            large,
            distinct: 0,
        }
    }

    /// Marks `index`; returns `true` the first time it is seen.
    pub(crate) fn insert(&mut self, index: usize) -> bool {
        let (word, bit) = if self.large.is_empty() {
            (&mut self.small, index)
        } else {
            match self.large.get_mut(index / 64) {
                Some(word) => (word, index % 64),
                None => return false,
            }
        };
        let mask = 1u64 << bit;
        if *word & mask != 0 {
            return false;
        }
        *word |= mask;
        self.distinct += 1;
        true
    }

    pub(crate) fn distinct(&self) -> usize {
        self.distinct
    }
}
