//! The sorted circle of points shared by the Ketama rings, with a bucket index over it.
//!
//! A plain binary search over 160 points per member touches ~17 cache lines at 1,000 members.
//! The index maps the top bits of a hash to the range of points that share them, so a lookup
//! reads one index slot pair and then scans a handful of neighbouring points: two or three cache
//! lines whatever the ring size.

use super::Visited;

/// Average number of points per index bucket: small enough that the scan stays inside one or two
/// cache lines, large enough that the index is a quarter the size of the points.
const POINTS_PER_BUCKET: usize = 2;

/// Points sorted by hash, their owners, and the bucket index.
#[derive(Debug, Clone)]
pub(crate) struct Continuum {
    /// Point positions on the 64-bit circle, ascending, no duplicates.
    points: Box<[u64]>,
    /// `owners[k]` is the member position of `points[k]`.
    owners: Box<[u32]>,
    /// `index[b]` is the first point whose top `64 - shift` bits are `>= b`; one extra slot at the
    /// end holds `points.len()`.
    index: Box<[u32]>,
    shift: u32,
    members: usize,
}

impl Continuum {
    /// Builds from unsorted `(hash, owner)` pairs. Equal hashes keep the owner that comes first
    /// in member order (the lowest position), so ties are broken by id, deterministically.
    pub(crate) fn new(mut pairs: Vec<(u64, u32)>, members: usize) -> Self {
        pairs.sort_unstable();
        pairs.dedup_by_key(|pair| pair.0);
        let (points, owners): (Vec<u64>, Vec<u32>) = pairs.into_iter().unzip();
        let bits = index_bits(points.len());
        let shift = 64 - bits;
        let buckets = 1usize << bits;
        let mut index = Vec::with_capacity(buckets + 1);
        let mut next = 0usize;
        for bucket in 0..buckets as u64 {
            while next < points.len() && (points[next] >> shift) < bucket {
                next += 1;
            }
            index.push(next as u32);
        }
        index.push(points.len() as u32);
        Self {
            points: points.into_boxed_slice(),
            owners: owners.into_boxed_slice(),
            index: index.into_boxed_slice(),
            shift,
            members,
        }
    }

    /// Number of points on the circle.
    pub(crate) fn points(&self) -> usize {
        self.points.len()
    }

    /// How many distinct members the circle was built from.
    pub(crate) fn members(&self) -> usize {
        self.members
    }

    /// The sorted point positions and their owners.
    #[cfg(test)]
    pub(crate) fn raw(&self) -> (&[u64], &[u32]) {
        (&self.points, &self.owners)
    }

    /// Position of the first point at or after `hash`, wrapping past the end to 0.
    #[inline]
    fn start(&self, hash: u64) -> usize {
        let bucket = (hash >> self.shift) as usize;
        let (Some(&lo), Some(&hi)) = (self.index.get(bucket), self.index.get(bucket + 1)) else {
            return 0;
        };
        // Every point in lo..hi shares the bucket's top bits, every point from hi on is in a later
        // bucket and so above `hash`: the answer is in lo..=hi.
        let bucket_points = self.points.get(lo as usize..hi as usize).unwrap_or(&[]);
        let found = lo as usize + bucket_points.partition_point(|&p| p < hash);
        if found >= self.points.len() { 0 } else { found }
    }

    /// Walks the circle clockwise from `hash`, offering each member once, and returns the first
    /// one `accept` takes.
    /// The owner of the first point at or after `hash`: what [`find`](Self::find) offers first.
    #[inline]
    pub(crate) fn primary(&self, hash: u64) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        self.owners
            .get(self.start(hash))
            .map(|&owner| owner as usize)
    }

    pub(crate) fn find(&self, hash: u64, accept: &mut dyn FnMut(usize) -> bool) -> Option<usize> {
        let len = self.points.len();
        if len == 0 {
            return None;
        }
        let start = self.start(hash);
        let first = *self.owners.get(start)? as usize;
        if accept(first) {
            return Some(first);
        }
        // Failover path: keep walking clockwise, offering each further member once.
        let mut visited = Visited::new(self.members);
        visited.insert(first);
        for step in 1..len {
            if visited.distinct() == self.members {
                break;
            }
            let owner = *self.owners.get((start + step) % len)? as usize;
            if visited.insert(owner) && accept(owner) {
                return Some(owner);
            }
        }
        None
    }
}

/// log2 of the bucket count: about `points / POINTS_PER_BUCKET` buckets, at least 2.
fn index_bits(points: usize) -> u32 {
    let target = (points / POINTS_PER_BUCKET).max(2);
    (usize::BITS - 1 - target.leading_zeros()).clamp(1, 30)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The index must answer exactly what a binary search over the whole circle answers.
    #[test]
    fn index_agrees_with_binary_search() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for points in [1usize, 2, 3, 7, 100, 5000] {
            let pairs: Vec<(u64, u32)> = (0..points).map(|i| (next(), (i % 5) as u32)).collect();
            let c = Continuum::new(pairs, 5);
            let (sorted, _) = c.raw();
            for _ in 0..2000 {
                let h = next();
                let expected = sorted.partition_point(|&p| p < h) % sorted.len();
                assert_eq!(c.start(h), expected, "points={points} hash={h:#x}");
            }
            // Exact hits and the extremes.
            for &p in sorted.iter().take(50) {
                assert_eq!(sorted[c.start(p)], p);
            }
            assert_eq!(c.start(0), 0);
            assert_eq!(
                c.start(u64::MAX),
                sorted.partition_point(|&p| p < u64::MAX) % sorted.len()
            );
        }
    }

    #[test]
    fn ties_keep_the_first_member() {
        let c = Continuum::new(vec![(10, 2), (10, 0), (10, 1), (20, 1)], 3);
        assert_eq!(c.raw(), (&[10u64, 20][..], &[0u32, 1][..]));
    }
}
