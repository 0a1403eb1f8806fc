//! [`RingError`]: ring and load-bound settings that were refused.

/// A ring or bounded-load setting that was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RingError {
    /// Maglev's permutations only visit every slot when the table size is prime.
    #[error("Maglev table size {size} is not a prime number (try 65537, 131071 or 655373)")]
    TableSizeNotPrime {
        /// The size asked for.
        size: u32,
    },
    /// The table size is below 3 or above the largest size this crate builds.
    #[error("Maglev table size {size} is out of range: it must be a prime between 3 and {max}")]
    TableSizeOutOfRange {
        /// The size asked for.
        size: u32,
        /// The largest accepted size.
        max: u32,
    },
    /// Every member needs at least one slot, so the table must be larger than the member count
    /// (and about 100 times larger for an even spread).
    #[error(
        "Maglev table size {size} is too small for {members} members: it must be larger than the \
         member count (100x larger keeps the load within 1%)"
    )]
    TableTooSmall {
        /// The configured table size.
        size: u32,
        /// How many members the ring was asked to hold.
        members: usize,
    },
    /// A bounded-load factor must be a finite number of at least 1.0 (1.0 = perfectly even,
    /// 1.25 = up to 25% above the average).
    #[error("bounded-load factor {factor} is invalid: it must be a finite number >= 1.0")]
    InvalidLoadFactor {
        /// The factor given.
        factor: f64,
    },
}
