//! Exact outputs for a fixed server list, one table per ring: any change to a mapping (a hash, a
//! seed, the point labels, the table fill order) fails here, because it would move users.

use tower_sticky::BackendId;
use tower_sticky::ring::{RingKind, RingMember};

const SERVERS: [(&str, u32); 5] = [
    ("10.0.0.1:8080", 1),
    ("10.0.0.2:8080", 1),
    ("10.0.0.3:8080", 2),
    ("10.0.0.4:8080", 1),
    ("10.0.0.5:8080", 3),
];

const KEYS: [&str; 12] = [
    "alice",
    "bob",
    "carol",
    "dave",
    "erin",
    "frank",
    "grace",
    "heidi",
    "/cart",
    "/login",
    "203.0.113.7",
    "tenant-42",
];

/// For each key: the primary and the full failover order (every member once).
fn walks(kind: RingKind) -> Vec<Vec<usize>> {
    let ids: Vec<BackendId> = SERVERS.iter().map(|(s, _)| BackendId::from(*s)).collect();
    let members: Vec<RingMember<'_>> = ids
        .iter()
        .zip(SERVERS)
        .map(|(id, (_, weight))| RingMember { id, weight })
        .collect();
    let ring = kind.try_build(&members).unwrap();
    KEYS.iter()
        .map(|key| {
            let mut order = Vec::new();
            ring.find(key.as_bytes(), &mut |p| {
                order.push(p);
                false
            });
            order
        })
        .collect()
}

#[test]
fn ketama_is_pinned() {
    assert_eq!(
        walks(RingKind::Ketama),
        [
            [1, 0, 4, 2, 3],
            [4, 3, 2, 0, 1],
            [2, 4, 0, 3, 1],
            [0, 1, 2, 4, 3],
            [3, 2, 4, 1, 0],
            [4, 0, 2, 1, 3],
            [0, 2, 3, 1, 4],
            [4, 3, 2, 0, 1],
            [2, 4, 1, 0, 3],
            [2, 4, 3, 0, 1],
            [0, 2, 4, 1, 3],
            [3, 1, 4, 0, 2],
        ]
    );
}

#[test]
fn ketama_compat_is_pinned() {
    assert_eq!(
        walks(RingKind::KetamaCompat),
        [
            [0, 4, 2, 1, 3],
            [4, 2, 3, 0, 1],
            [4, 1, 3, 0, 2],
            [3, 2, 4, 0, 1],
            [0, 3, 2, 4, 1],
            [4, 3, 0, 2, 1],
            [4, 2, 0, 3, 1],
            [4, 0, 3, 2, 1],
            [4, 0, 3, 1, 2],
            [4, 1, 2, 3, 0],
            [4, 3, 1, 2, 0],
            [4, 0, 2, 3, 1],
        ]
    );
}

#[test]
fn maglev_default_table_is_pinned() {
    assert_eq!(
        walks(RingKind::maglev()),
        [
            [3, 2, 4, 0, 1],
            [4, 0, 2, 1, 3],
            [1, 4, 2, 3, 0],
            [4, 2, 1, 3, 0],
            [0, 4, 3, 2, 1],
            [4, 3, 2, 1, 0],
            [4, 2, 1, 3, 0],
            [2, 4, 1, 0, 3],
            [3, 1, 4, 2, 0],
            [2, 4, 0, 3, 1],
            [4, 1, 2, 0, 3],
            [2, 1, 3, 0, 4]
        ]
    );
}

#[test]
fn maglev_small_table_is_pinned() {
    assert_eq!(
        walks(RingKind::maglev_with_table_size(1009).unwrap()),
        [
            [3, 4, 2, 1, 0],
            [4, 3, 0, 1, 2],
            [4, 0, 2, 3, 1],
            [4, 1, 2, 0, 3],
            [3, 4, 0, 2, 1],
            [2, 1, 0, 4, 3],
            [4, 3, 1, 0, 2],
            [2, 0, 3, 4, 1],
            [2, 4, 3, 1, 0],
            [2, 1, 4, 3, 0],
            [2, 4, 1, 0, 3],
            [4, 0, 2, 3, 1]
        ]
    );
}
