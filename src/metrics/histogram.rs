//! A lock-free latency histogram: log-linear buckets (4 per power of two), in microseconds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Buckets 0..4 hold 0..4 µs exactly; after that each power of two is split in 4, so a quantile
/// is off by at most 25 %. 160 buckets reach past 10^12 µs, far beyond any request.
const BUCKETS: usize = 160;

#[derive(Debug)]
pub(crate) struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    sum_micros: AtomicU64,
    max_micros: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_micros: AtomicU64::new(0),
            max_micros: AtomicU64::new(0),
        }
    }
}

fn bucket_of(micros: u64) -> usize {
    if micros < 4 {
        return micros as usize;
    }
    let exp = 63 - micros.leading_zeros() as usize; // >= 2
    let sub = ((micros >> (exp - 2)) & 3) as usize;
    (4 * (exp - 1) + sub).min(BUCKETS - 1)
}

/// The largest value that falls in `bucket` (what a quantile in that bucket reports).
fn upper_bound(bucket: usize) -> u64 {
    if bucket < 4 {
        return bucket as u64;
    }
    let exp = bucket / 4 + 1;
    let sub = (bucket % 4) as u64;
    let width = 1u64 << (exp - 2);
    ((4 + sub) << (exp - 2)) + width - 1
}

impl Histogram {
    pub(crate) fn record(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(micros)].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.max_micros.fetch_max(micros, Ordering::Relaxed);
    }

    pub(crate) fn summary(&self) -> LatencySummary {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let count: u64 = counts.iter().sum();
        let quantile = |q: f64| -> Duration {
            if count == 0 {
                return Duration::ZERO;
            }
            // The rank of the q-quantile, 1-based: the smallest value with at least q*count below.
            let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
            let mut seen = 0;
            for (bucket, n) in counts.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    return Duration::from_micros(upper_bound(bucket));
                }
            }
            Duration::from_micros(self.max_micros.load(Ordering::Relaxed))
        };
        let max = Duration::from_micros(self.max_micros.load(Ordering::Relaxed));
        LatencySummary {
            count,
            mean: Duration::from_micros(
                self.sum_micros
                    .load(Ordering::Relaxed)
                    .checked_div(count)
                    .unwrap_or(0),
            ),
            p50: quantile(0.50).min(max),
            p90: quantile(0.90).min(max),
            p99: quantile(0.99).min(max),
            max,
        }
    }
}

/// Latency of the requests one backend answered (time to the response head), from a histogram
/// with 4 buckets per power of two: quantiles are upper bounds, at most 25 % above the truth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LatencySummary {
    /// Requests measured: the first of each backend and one in eight after it (reading the clock
    /// on every request costs more than the rest of the bookkeeping).
    pub count: u64,
    /// Mean latency.
    pub mean: Duration,
    /// Median.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Slowest.
    pub max: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn quantiles_of_a_known_spread() {
        let h = Histogram::default();
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        let s = h.summary();
        assert_eq!(s.count, 100);
        assert_eq!(s.max, Duration::from_millis(100));
        for (q, truth) in [(s.p50, 50u64), (s.p90, 90), (s.p99, 99)] {
            let truth = Duration::from_millis(truth);
            assert!(q >= truth && q <= truth * 5 / 4, "{q:?} vs {truth:?}");
        }
        assert_eq!(Histogram::default().summary(), LatencySummary::default());
    }

    proptest! {
        #[test]
        fn every_value_lands_in_a_bucket_that_bounds_it(v in 0u64..(1u64 << 40)) {
            let b = bucket_of(v);
            prop_assert!(upper_bound(b) >= v);
            prop_assert!(b == 0 || upper_bound(b - 1) < v);
            // Relative error of the reported bound is at most 25 %.
            prop_assert!(upper_bound(b) as f64 <= (v as f64) * 1.25 + 1.0);
        }
    }
}
