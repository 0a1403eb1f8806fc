//! Maglev hashing (Eisenbud et al., NSDI 2016): a lookup table filled from per-member
//! permutations, so a lookup is one hash and one array read.

use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::{Ring, RingError, RingMember, Visited};
use crate::hash::key_hash;

/// Seeds of the two member hashes that define a member's permutation (offset and skip).
const OFFSET_SEED: u64 = 0x6d61_676c_6576_6f66; // "maglevof"
const SKIP_SEED: u64 = 0x6d61_676c_6576_736b; // "maglevsk"

/// Marks a slot not yet claimed while the table is being filled.
const EMPTY: u32 = u32::MAX;

/// The number of slots of a Maglev table: a prime, checked when it is made.
///
/// The default, 65,537, keeps the spread within about 1% for up to ~650 members of equal weight
/// (each gets `65537 / n` slots, give or take one); use a prime about 100 times the member count
/// for larger sets.
///
/// ```
/// use tower_sticky::ring::MaglevTableSize;
///
/// assert_eq!(MaglevTableSize::default().get(), 65_537);
/// assert!(MaglevTableSize::new(655_373).is_ok());
/// assert!(MaglevTableSize::new(65_536).is_err()); // not prime
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MaglevTableSize(u32);

impl MaglevTableSize {
    /// 65,537 slots (the Maglev paper's small table).
    pub const DEFAULT: Self = Self(65_537);

    /// The largest accepted size, 16,777,213 (the largest prime below 2^24: 64 MiB of table).
    pub const MAX: u32 = 16_777_213;

    /// A table size of `size` slots, which must be a prime in `3..=MAX`.
    pub fn new(size: u32) -> Result<Self, RingError> {
        if !(3..=Self::MAX).contains(&size) {
            return Err(RingError::TableSizeOutOfRange {
                size,
                max: Self::MAX,
            });
        }
        if !is_prime(size) {
            return Err(RingError::TableSizeNotPrime { size });
        }
        Ok(Self(size))
    }

    /// The smallest valid size at or above `at_least` (capped at [`MAX`](Self::MAX)).
    pub fn next_prime(at_least: u32) -> Self {
        let mut size = at_least.clamp(3, Self::MAX);
        while !is_prime(size) {
            size += 1;
        }
        Self(size)
    }

    /// The number of slots.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for MaglevTableSize {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Trial division: sizes are at most 2^24, so at most ~2,000 odd divisors.
fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    if n % 2 == 0 {
        return n == 2;
    }
    let n = u64::from(n);
    let mut d = 3u64;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 2;
    }
    true
}

/// Member positions per slot; two bytes each while positions fit, halving the cache footprint.
#[derive(Debug, Clone)]
enum Table {
    Narrow(Box<[u16]>),
    Wide(Box<[u32]>),
}

impl Table {
    #[inline]
    fn get(&self, slot: usize) -> Option<usize> {
        match self {
            Table::Narrow(t) => t.get(slot).map(|&m| m as usize),
            Table::Wide(t) => t.get(slot).map(|&m| m as usize),
        }
    }

    fn len(&self) -> usize {
        match self {
            Table::Narrow(t) => t.len(),
            Table::Wide(t) => t.len(),
        }
    }
}

/// A Maglev lookup table over a member list.
///
/// Each member has a permutation of the slots, `offset + j * skip (mod size)`, from two XXH3
/// hashes of its id. Members take turns claiming their next free slot until the table is full; a
/// member of weight `w` takes `w / max_weight` of a turn per round (every member takes at least
/// its first slot). A key's slot is `xxh3_64(key)` scaled to the table size; its owner is the
/// primary, and failover walks on through the following slots, offering each further member once
/// (so a member's keys spread over the others and every key of one slot fails over alike).
///
/// Properties: at equal weights every member owns `size / n` slots give or take one (max/avg
/// load 1.0 + n/size); adding or removing one of `n` members moves more than the ideal `1/(n+1)`
/// of keys: ~1.0-1.6x up to n = 100 with the default table, but ~6x at n = 1,000 (~4x with a
/// 655,373-slot table), as in the Maglev paper. Prefer Ketama where movement matters more than
/// balance. Building is `O(size x log size)` probes whatever `n`.
///
/// ```
/// use tower_sticky::ring::{MaglevRing, MaglevTableSize, Ring, RingMember};
/// use tower_sticky::BackendId;
///
/// let ids: Vec<BackendId> = ["a", "b", "c"].into_iter().map(BackendId::from).collect();
/// let members: Vec<_> = ids.iter().map(|id| RingMember { id, weight: 1 }).collect();
/// let ring = MaglevRing::new(&members, MaglevTableSize::new(1009)?)?;
/// let slots = ring.slots_per_member();
/// assert_eq!(slots.iter().sum::<usize>(), 1009);
/// assert!(slots.iter().all(|&s| (336..=337).contains(&s)));
/// # Ok::<(), tower_sticky::ring::RingError>(())
/// ```
#[derive(Debug, Clone)]
pub struct MaglevRing {
    table: Table,
    members: usize,
}

impl MaglevRing {
    /// Fills a table of `size` slots for `members`; refuses a table that is not larger than the
    /// member count.
    pub fn new(members: &[RingMember<'_>], size: MaglevTableSize) -> Result<Self, RingError> {
        let n = members.len();
        let m = size.get() as usize;
        if n >= m {
            return Err(RingError::TableTooSmall {
                size: size.get(),
                members: n,
            });
        }
        if n == 0 {
            return Ok(Self {
                table: Table::Narrow(Box::new([])),
                members: 0,
            });
        }
        let slots = populate(members, m);
        let table = if n <= usize::from(u16::MAX) {
            Table::Narrow(slots.into_iter().map(|s| s as u16).collect())
        } else {
            Table::Wide(slots.into_boxed_slice())
        };
        Ok(Self { table, members: n })
    }

    /// The number of slots.
    pub fn table_size(&self) -> usize {
        self.table.len()
    }

    /// How many slots each member owns (its share of keys is its share of slots).
    pub fn slots_per_member(&self) -> Vec<usize> {
        let mut counts = vec![0usize; self.members];
        for slot in 0..self.table.len() {
            if let Some(count) = self.table.get(slot).and_then(|m| counts.get_mut(m)) {
                *count += 1;
            }
        }
        counts
    }

    #[inline]
    fn slot(&self, hash: u64) -> usize {
        // Lemire's multiply-shift maps the 64-bit hash onto 0..size without a division.
        ((u128::from(hash) * self.table.len() as u128) >> 64) as usize
    }
}

/// The Maglev population loop, with fractional turns for weights.
fn populate(members: &[RingMember<'_>], m: usize) -> Vec<u32> {
    let size = m as u64;
    let mut next: Vec<u64> = Vec::with_capacity(members.len());
    let mut skip: Vec<u64> = Vec::with_capacity(members.len());
    for member in members {
        let id = member.id.as_str().as_bytes();
        next.push(xxh3_64_with_seed(id, OFFSET_SEED) % size);
        skip.push(xxh3_64_with_seed(id, SKIP_SEED) % (size - 1) + 1);
    }
    let weights: Vec<u64> = members.iter().map(|m| u64::from(m.weight.max(1))).collect();
    let max_weight = weights.iter().copied().max().unwrap_or(1);
    // Credit starts at max - w so that every member takes a turn in the first round.
    let mut credit: Vec<u64> = weights.iter().map(|w| max_weight - w).collect();
    let mut table = vec![EMPTY; m];
    let mut filled = 0usize;
    // Each round the heaviest members take a turn, so `filled` grows every round; each turn ends
    // because a permutation with a skip in 1..size over a prime size visits every slot.
    while filled < m {
        for (position, weight) in weights.iter().enumerate() {
            credit[position] += weight;
            if credit[position] < max_weight {
                continue;
            }
            credit[position] -= max_weight;
            loop {
                let slot = next[position] as usize;
                next[position] += skip[position];
                if next[position] >= size {
                    next[position] -= size;
                }
                if table[slot] == EMPTY {
                    table[slot] = position as u32;
                    filled += 1;
                    break;
                }
            }
            if filled == m {
                break;
            }
        }
    }
    table
}

impl Ring for MaglevRing {
    fn len(&self) -> usize {
        self.members
    }

    // Without the callback of the default: the routing fast path asks this first.
    fn primary(&self, key: &[u8]) -> Option<usize> {
        if self.table.len() == 0 {
            return None;
        }
        self.table.get(self.slot(key_hash(key)))
    }

    fn find(&self, key: &[u8], accept: &mut dyn FnMut(usize) -> bool) -> Option<usize> {
        let size = self.table.len();
        if size == 0 {
            return None;
        }
        let hash = key_hash(key);
        let first = self.table.get(self.slot(hash))?;
        if accept(first) {
            return Some(first);
        }
        // Failover path. The slot after a member's slot is not an even draw over the others
        // (neighbouring slots are claimed in correlated turns), so substitutes come from fresh
        // slots drawn by re-mixing the key hash: each further member is then drawn in proportion
        // to its share of the table. A bounded number of draws, then a sweep of the table
        // guarantees every member is offered.
        let mut visited = Visited::new(self.members);
        visited.insert(first);
        for round in 1..=FAILOVER_DRAWS {
            if visited.distinct() == self.members {
                return None;
            }
            let owner = self.table.get(self.slot(remix(hash, round)))?;
            if visited.insert(owner) && accept(owner) {
                return Some(owner);
            }
        }
        let start = self.slot(hash);
        for step in 1..size {
            if visited.distinct() == self.members {
                break;
            }
            let owner = self.table.get((start + step) % size)?;
            if visited.insert(owner) && accept(owner) {
                return Some(owner);
            }
        }
        None
    }
}

/// Failover draws made by re-mixing the key hash before sweeping the table in order.
const FAILOVER_DRAWS: u64 = 64;

/// The `round`-th re-mix of a key hash: SplitMix64's output function (Steele et al., 2014) over
/// the hash advanced by `round` golden-ratio steps. Stable by specification.
#[inline]
fn remix(hash: u64, round: u64) -> u64 {
    let mut z = hash.wrapping_add(round.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primes() {
        let small: Vec<u32> = (0..30).filter(|&n| is_prime(n)).collect();
        assert_eq!(small, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
        assert!(is_prime(65_537));
        assert!(!is_prime(65_535));
        assert!(is_prime(MaglevTableSize::MAX));
        assert!(!is_prime(1 << 24));
        assert_eq!(MaglevTableSize::next_prime(65_536).get(), 65_537);
        assert_eq!(
            MaglevTableSize::next_prime(u32::MAX).get(),
            MaglevTableSize::MAX
        );
    }

    #[test]
    fn table_sizes_are_validated() {
        assert_eq!(
            MaglevTableSize::new(65_535),
            Err(RingError::TableSizeNotPrime { size: 65_535 })
        );
        assert!(matches!(
            MaglevTableSize::new(2),
            Err(RingError::TableSizeOutOfRange { size: 2, .. })
        ));
        assert!(matches!(
            MaglevTableSize::new(16_777_259),
            Err(RingError::TableSizeOutOfRange { .. })
        ));
        assert_eq!(MaglevTableSize::new(7).map(MaglevTableSize::get), Ok(7));
    }
}
