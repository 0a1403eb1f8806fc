//! A Ketama-style ring: many virtual nodes per backend on a 64-bit circle.

use super::{Ring, RingMember, Visited};
use crate::hash::key_hash;

/// Virtual nodes per unit of weight. 160 is the Ketama convention (40 MD5 digests x 4 points).
pub const POINTS_PER_WEIGHT: u32 = 160;

/// A consistent hash ring with [`POINTS_PER_WEIGHT`] points per unit of weight per member.
///
/// Point `i` of member `id` sits at `xxh3_64("{id}-{i}")`; a key sits at `xxh3_64(key)` and belongs
/// to the first point clockwise. Adding a member to `n` moves about `1/(n+1)` of keys, all to the
/// new member; removing one moves only its keys.
#[derive(Debug, Clone)]
pub struct KetamaRing {
    /// Point positions, sorted ascending; kept apart from `owners` so the binary search touches
    /// only this array.
    points: Vec<u64>,
    /// `owners[k]` is the member position of `points[k]`.
    owners: Vec<u32>,
    members: usize,
}

impl KetamaRing {
    /// Builds the ring over `members` (positions in that slice are what lookups return).
    pub fn new(members: &[RingMember<'_>]) -> Self {
        let total: usize = members
            .iter()
            .map(|m| (m.weight.max(1) * POINTS_PER_WEIGHT) as usize)
            .sum();
        let mut pairs: Vec<(u64, u32)> = Vec::with_capacity(total);
        let mut label = String::new();
        for (position, member) in members.iter().enumerate() {
            for point in 0..member.weight.max(1) * POINTS_PER_WEIGHT {
                label.clear();
                label.push_str(member.id.as_str());
                label.push('-');
                label.push_str(&point.to_string());
                pairs.push((key_hash(label.as_bytes()), position as u32));
            }
        }
        // Ties (astronomically rare) are broken by member position, i.e. by id: deterministic.
        pairs.sort_unstable();
        let (points, owners) = pairs.into_iter().unzip();
        Self {
            points,
            owners,
            members: members.len(),
        }
    }
}

impl Ring for KetamaRing {
    fn len(&self) -> usize {
        self.members
    }

    fn find(&self, key: &[u8], accept: &mut dyn FnMut(usize) -> bool) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let hash = key_hash(key);
        let start = self.points.partition_point(|&p| p < hash) % self.points.len();
        let first = self.owners[start] as usize;
        if accept(first) {
            return Some(first);
        }
        // Failover path: keep walking clockwise, offering each further member once.
        let mut visited = Visited::new(self.members);
        visited.insert(first);
        for step in 1..self.points.len() {
            if visited.distinct() == self.members {
                break;
            }
            let owner = self.owners[(start + step) % self.points.len()] as usize;
            if visited.insert(owner) && accept(owner) {
                return Some(owner);
            }
        }
        None
    }
}
