//! A Ketama-style ring: many virtual nodes per backend on a 64-bit circle, XXH3 hashes.

use std::fmt::Write as _;

use super::continuum::Continuum;
use super::{Ring, RingMember};
use crate::hash::key_hash;

/// Virtual nodes per unit of weight. 160 is the Ketama convention (40 MD5 digests x 4 points).
pub const POINTS_PER_WEIGHT: u32 = 160;

/// A consistent hash ring with [`POINTS_PER_WEIGHT`] points per unit of weight per member.
///
/// Point `i` of member `id` sits at `xxh3_64("{id}-{i}")`; a key sits at `xxh3_64(key)` and belongs
/// to the first point clockwise. Adding a member to `n` moves about `1/(n+1)` of keys, all to the
/// new member; removing one moves only its keys. Failover walks on clockwise, so each member's keys
/// spread over the others in proportion to their weights.
///
/// This ring is not interchangeable with other Ketama implementations (they hash with MD5 or
/// CRC32); [`KetamaCompatRing`](super::KetamaCompatRing) is.
///
/// ```
/// use tower_sticky::ring::{KetamaRing, Ring, RingMember};
/// use tower_sticky::BackendId;
///
/// let ids = [BackendId::from("a"), BackendId::from("b")];
/// let ring = KetamaRing::new(&[
///     RingMember { id: &ids[0], weight: 1 },
///     RingMember { id: &ids[1], weight: 3 },
/// ]);
/// assert_eq!(ring.len(), 2);
/// assert_eq!(ring.points(), 4 * 160);
/// assert!(ring.primary(b"some key").is_some());
/// ```
#[derive(Debug, Clone)]
pub struct KetamaRing {
    circle: Continuum,
}

impl KetamaRing {
    /// Builds the ring over `members` (positions in that slice are what lookups return).
    pub fn new(members: &[RingMember<'_>]) -> Self {
        Self::with_points_per_weight(members, POINTS_PER_WEIGHT)
    }

    /// Builds the ring with `points` virtual nodes per unit of weight instead of 160 (at least
    /// 1). Fewer points build faster and balance worse; the demo shows the effect.
    pub fn with_points_per_weight(members: &[RingMember<'_>], points: u32) -> Self {
        let points_per_weight = points.max(1);
        let total: usize = members
            .iter()
            .map(|m| m.weight.max(1) as usize * points_per_weight as usize)
            .sum();
        let mut pairs: Vec<(u64, u32)> = Vec::with_capacity(total);
        let mut label = String::new();
        for (position, member) in members.iter().enumerate() {
            let points = member.weight.max(1).saturating_mul(points_per_weight);
            for point in 0..points {
                label.clear();
                label.push_str(member.id.as_str());
                label.push('-');
                // Writing into a String cannot fail.
                let _ = write!(label, "{point}");
                pairs.push((key_hash(label.as_bytes()), position as u32));
            }
        }
        Self {
            circle: Continuum::new(pairs, members.len()),
        }
    }

    /// Number of points on the circle (160 x total weight, less the rare exact collisions).
    pub fn points(&self) -> usize {
        self.circle.points()
    }
}

impl Ring for KetamaRing {
    fn len(&self) -> usize {
        self.circle.members()
    }

    fn find(&self, key: &[u8], accept: &mut dyn FnMut(usize) -> bool) -> Option<usize> {
        self.circle.find(key_hash(key), accept)
    }

    // Without the callback of the default: the routing fast path asks this first.
    fn primary(&self, key: &[u8]) -> Option<usize> {
        self.circle.primary(key_hash(key))
    }
}
