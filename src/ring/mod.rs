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

mod bounded;
mod continuum;
mod error;
mod ketama;
mod ketama_compat;
mod maglev;

pub use bounded::{BoundedChoice, BoundedLoad, LoadCounters, LoadGuard, LoadView};
pub use error::RingError;
pub use ketama::{KetamaRing, POINTS_PER_WEIGHT};
pub use ketama_compat::{COMPAT_POINTS_PER_WEIGHT, KetamaCompatRing};
pub use maglev::{MaglevRing, MaglevTableSize};

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
///
/// | kind | lookup | spread at 1,000 members | movement on +1/-1 | interoperates |
/// |---|---|---|---|---|
/// | [`Ketama`](Self::Ketama) | XXH3 + bucket index | max/avg ~1.25 | ideal; removal moves only the removed member's keys | no |
/// | [`KetamaCompat`](Self::KetamaCompat) | CRC32 + bucket index | max/avg ~1.25 | as Ketama | nginx `hash .. consistent`, `pingora-ketama` |
/// | [`Maglev`](Self::Maglev) | XXH3 + one table read | max/avg ~1.01 of key space | 1.0-1.6x ideal up to 100 members, ~6x at 1,000 | no |
///
/// ```
/// use tower_sticky::ring::{MaglevTableSize, RingKind};
///
/// let default_maglev = RingKind::maglev();
/// let big = RingKind::maglev_with_table_size(655_373)?;
/// assert_ne!(default_maglev, big);
/// assert!(RingKind::maglev_with_table_size(100_000).is_err()); // not prime
/// # Ok::<(), tower_sticky::ring::RingError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RingKind {
    /// [`KetamaRing`]: 160 virtual nodes per unit of weight, XXH3 point and key hashes.
    Ketama,
    /// [`KetamaCompatRing`]: nginx / `pingora-ketama` compatible (ids are `ip:port`).
    KetamaCompat,
    /// [`MaglevRing`] with a table of this many slots.
    Maglev {
        /// Slots in the lookup table (a prime, larger than the member count).
        table_size: MaglevTableSize,
    },
}

impl RingKind {
    /// Maglev with the default table size, 65,537.
    pub fn maglev() -> Self {
        RingKind::Maglev {
            table_size: MaglevTableSize::DEFAULT,
        }
    }

    /// Maglev with `table_size` slots; refuses sizes that are not prime.
    pub fn maglev_with_table_size(table_size: u32) -> Result<Self, RingError> {
        Ok(RingKind::Maglev {
            table_size: MaglevTableSize::new(table_size)?,
        })
    }

    /// Builds a ring of this kind over `members` (sorted by id, weights >= 1), or says why it
    /// cannot (a Maglev table not larger than the member count).
    pub fn try_build(&self, members: &[RingMember<'_>]) -> Result<Arc<dyn Ring>, RingError> {
        Ok(match self {
            RingKind::Ketama => Arc::new(KetamaRing::new(members)),
            RingKind::KetamaCompat => Arc::new(KetamaCompatRing::new(members)),
            RingKind::Maglev { table_size } => Arc::new(MaglevRing::new(members, *table_size)?),
        })
    }

    /// Builds a ring of this kind over `members` (sorted by id, weights >= 1).
    ///
    /// Never fails: membership changes at run time, so a Maglev table that turns out too small
    /// for the members is replaced (with a warning) by the next prime at or above 100 x the member
    /// count, which every balancer replica picks alike.
    pub fn build(&self, members: &[RingMember<'_>]) -> Arc<dyn Ring> {
        match self.try_build(members) {
            Ok(ring) => ring,
            Err(error) => {
                let wanted = u32::try_from(members.len().saturating_mul(100)).unwrap_or(u32::MAX);
                let size = MaglevTableSize::next_prime(wanted);
                tracing::warn!(%error, table_size = size.get(), "growing the Maglev table");
                match MaglevRing::new(members, size) {
                    Ok(ring) => Arc::new(ring),
                    // More members than the largest table: a ring that needs no table.
                    Err(_) => Arc::new(KetamaRing::new(members)),
                }
            }
        }
    }
}

/// How many members a walk remembers in a fixed array before it needs a bit set.
const INLINE_VISITED: usize = 16;

/// Tracks which members a walk has already offered, so each is offered once. Up to 64 members fit
/// one machine word; larger sets remember the first few offered in an inline array and allocate a
/// bit set only when a walk goes further, which only happens deep in failover.
pub(crate) struct Visited {
    word: u64,
    inline: [u32; INLINE_VISITED],
    bits: Vec<u64>,
    members: usize,
    distinct: usize,
}

impl Visited {
    pub(crate) fn new(members: usize) -> Self {
        Self {
            word: 0,
            inline: [0; INLINE_VISITED],
            bits: Vec::new(),
            members,
            distinct: 0,
        }
    }

    /// Marks `index`; returns `true` the first time it is seen.
    pub(crate) fn insert(&mut self, index: usize) -> bool {
        if index >= self.members {
            return false;
        }
        if self.members <= 64 {
            let mask = 1u64 << index;
            if self.word & mask != 0 {
                return false;
            }
            self.word |= mask;
        } else if self.bits.is_empty() {
            let seen = self.inline.get(..self.distinct).unwrap_or(&[]);
            if seen.contains(&(index as u32)) {
                return false;
            }
            if let Some(slot) = self.inline.get_mut(self.distinct) {
                *slot = index as u32;
            } else {
                // Spill: move what the array holds into a bit set, then mark `index` there.
                self.bits = vec![0; self.members.div_ceil(64)];
                for &seen in &self.inline {
                    set_bit(&mut self.bits, seen as usize);
                }
                set_bit(&mut self.bits, index);
            }
        } else if !set_bit(&mut self.bits, index) {
            return false;
        }
        self.distinct += 1;
        true
    }

    pub(crate) fn distinct(&self) -> usize {
        self.distinct
    }
}

/// Sets bit `index`; returns `true` when it was clear.
fn set_bit(bits: &mut [u64], index: usize) -> bool {
    let Some(word) = bits.get_mut(index / 64) else {
        return false;
    };
    let mask = 1u64 << (index % 64);
    let fresh = *word & mask == 0;
    *word |= mask;
    fresh
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `primary` is overridden by every ring for speed; it must stay `find`'s first offer.
    #[test]
    fn primary_is_the_first_member_find_offers() {
        let ids: Vec<crate::BackendId> = (0..7).map(|i| format!("10.0.0.{i}:80").into()).collect();
        let members: Vec<RingMember<'_>> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| RingMember {
                id,
                weight: 1 + (i as u32 % 3),
            })
            .collect();
        for kind in [RingKind::Ketama, RingKind::KetamaCompat, RingKind::maglev()] {
            let ring = kind.build(&members);
            let empty = kind.build(&[]);
            assert_eq!(empty.primary(b"k"), None, "{kind:?}");
            for n in 0..2_000u32 {
                let key = n.to_be_bytes();
                let mut first = None;
                ring.find(&key, &mut |p| {
                    first.get_or_insert(p);
                    true
                });
                assert_eq!(ring.primary(&key), first, "{kind:?} key {n}");
            }
        }
    }

    #[test]
    fn visited_counts_each_member_once_in_every_mode() {
        for members in [1usize, 10, 64, 65, 200, 5000] {
            let mut v = Visited::new(members);
            let mut order: Vec<usize> = (0..members).rev().collect();
            order.extend(0..members);
            let fresh = order.iter().filter(|&&i| v.insert(i)).count();
            assert_eq!(fresh, members, "members={members}");
            assert_eq!(v.distinct(), members);
            assert!(!v.insert(members), "out of range is never fresh");
        }
    }
}
