//! Hash functions that decide routing.
//!
//! Every function here is stable by specification: the same bytes give the same number on every
//! platform, Rust release and crate version, so balancer replicas and restarts agree. `std`'s
//! `DefaultHasher` is never used for routing because its output may change between releases.

/// 32-bit FNV-1a (offset basis 0x811c9dc5, prime 0x01000193), the hash of the classic
/// `fnv1a(ip) % n` mapping.
///
/// ```
/// assert_eq!(tower_sticky::hash::fnv1a_32(b""), 0x811c_9dc5);
/// assert_eq!(tower_sticky::hash::fnv1a_32(b"a"), 0xe40c_292c);
/// ```
pub fn fnv1a_32(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for &byte in bytes {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// 64-bit XXH3 with the default secret and seed 0: the key hash of the rings in this crate.
///
/// ```
/// assert_eq!(tower_sticky::hash::key_hash(b"user-1"), tower_sticky::hash::key_hash(b"user-1"));
/// ```
pub fn key_hash(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_32_matches_the_published_test_vectors() {
        assert_eq!(fnv1a_32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a_32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a_32(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn key_hash_is_pinned() {
        // XXH3-64 of the empty input with seed 0, from the xxHash specification's test suite.
        assert_eq!(key_hash(b""), 0x2d06_8005_38d3_94c2);
    }
}
