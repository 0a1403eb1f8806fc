//! [`MemberSet`]: the read-only view of one membership snapshot that strategies route over.

use std::sync::Arc;

use fnv::FnvHashMap;

use super::state::BackendState;
use crate::BackendId;
use crate::ring::{Ring, RingKind, RingMember};

/// One backend as strategies see it.
#[derive(Debug, Clone)]
pub struct MemberInfo {
    id: BackendId,
    weight: u32,
    state: Arc<BackendState>,
}

impl MemberInfo {
    /// The backend's stable id.
    pub fn id(&self) -> &BackendId {
        &self.id
    }

    /// Its relative weight (>= 1).
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// Its live counters and health flags.
    pub fn state(&self) -> &BackendState {
        &self.state
    }

    pub(crate) fn shared_state(&self) -> &Arc<BackendState> {
        &self.state
    }
}

/// An immutable snapshot of the membership: members sorted by id, with the rings and schedules
/// derived from them. Rebuilt on every change and swapped in atomically; positions are only
/// meaningful within one snapshot.
#[derive(Debug)]
pub struct MemberSet {
    members: Vec<MemberInfo>,
    by_id: FnvHashMap<BackendId, usize>,
    rings: Vec<(RingKind, Arc<dyn Ring>)>,
    /// Smooth weighted round-robin order: member positions, each appearing `weight` times,
    /// interleaved so no member gets a burst.
    schedule: Vec<u32>,
    /// `weight_ends[i]` is the sum of weights of members `0..=i`, for weighted modulo mapping.
    weight_ends: Vec<u64>,
    version: u64,
}

impl MemberSet {
    pub(crate) fn build(
        entries: impl IntoIterator<Item = (BackendId, u32, Arc<BackendState>)>,
        kinds: &[RingKind],
        version: u64,
    ) -> Self {
        let members: Vec<MemberInfo> = entries
            .into_iter()
            .map(|(id, weight, state)| MemberInfo { id, weight, state })
            .collect();
        let by_id = members
            .iter()
            .enumerate()
            .map(|(i, m)| (m.id.clone(), i))
            .collect();
        let ring_members: Vec<RingMember<'_>> = members
            .iter()
            .map(|m| RingMember {
                id: &m.id,
                weight: m.weight,
            })
            .collect();
        let rings = kinds
            .iter()
            .map(|kind| (*kind, kind.build(&ring_members)))
            .collect();
        let weight_ends = members
            .iter()
            .scan(0u64, |sum, m| {
                *sum += u64::from(m.weight);
                Some(*sum)
            })
            .collect();
        let schedule = smooth_weighted_schedule(&members);
        Self {
            members,
            by_id,
            rings,
            schedule,
            weight_ends,
            version,
        }
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// `true` when there are no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// All members, sorted by id.
    pub fn members(&self) -> &[MemberInfo] {
        &self.members
    }

    /// The member at `position`.
    // Inlined: on every request's path, with callers in other codegen units and crates.
    #[inline]
    pub fn get(&self, position: usize) -> Option<&MemberInfo> {
        self.members.get(position)
    }

    /// The position of the member with this id.
    pub fn position(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    /// The ring of this kind, if the snapshot was built with it.
    #[inline]
    pub fn ring(&self, kind: RingKind) -> Option<&Arc<dyn Ring>> {
        self.rings.iter().find(|(k, _)| *k == kind).map(|(_, r)| r)
    }

    /// The weighted round-robin schedule (member positions).
    pub fn schedule(&self) -> &[u32] {
        &self.schedule
    }

    /// Sum of all weights.
    pub fn total_weight(&self) -> u64 {
        self.weight_ends.last().copied().unwrap_or(0)
    }

    /// Maps a slot in `0..total_weight()` to the member owning it (members own consecutive slots
    /// in id order, as many as their weight).
    pub fn weighted_slot(&self, slot: u64) -> Option<usize> {
        let position = self.weight_ends.partition_point(|&end| end <= slot);
        (position < self.members.len()).then_some(position)
    }

    /// Increases by one with every change of the set.
    pub fn version(&self) -> u64 {
        self.version
    }
}

/// nginx's smooth weighted round robin, run for one full cycle (sum of weights picks).
fn smooth_weighted_schedule(members: &[MemberInfo]) -> Vec<u32> {
    let total: i64 = members.iter().map(|m| i64::from(m.weight)).sum();
    let mut current = vec![0i64; members.len()];
    let mut schedule = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, m) in members.iter().enumerate() {
            current[i] += i64::from(m.weight);
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        schedule.push(best as u32);
    }
    schedule
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(weights: &[(&str, u32)]) -> MemberSet {
        MemberSet::build(
            weights
                .iter()
                .map(|(id, w)| (BackendId::from(*id), *w, Arc::default())),
            &[],
            1,
        )
    }

    #[test]
    fn schedule_interleaves_by_weight() {
        let s = set(&[("a", 5), ("b", 1), ("c", 1)]);
        // nginx's documented example for weights 5, 1, 1.
        assert_eq!(s.schedule(), &[0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn weighted_slots_follow_weights() {
        let s = set(&[("a", 1), ("b", 2)]);
        assert_eq!(s.total_weight(), 3);
        assert_eq!(s.weighted_slot(0), Some(0));
        assert_eq!(s.weighted_slot(1), Some(1));
        assert_eq!(s.weighted_slot(2), Some(1));
        assert_eq!(s.weighted_slot(3), None);
    }
}
