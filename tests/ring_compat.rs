//! The compatibility ring maps keys exactly as `pingora-ketama` (nginx `hash .. consistent`).

use std::net::SocketAddr;

use pingora_ketama::{Bucket, Continuum};
use tower_sticky::BackendId;
use tower_sticky::ring::{KetamaCompatRing, Ring, RingMember};

/// Both rings over the same `(ip:port, weight)` list.
fn both(servers: &[(String, u32)]) -> (KetamaCompatRing, Continuum, Vec<SocketAddr>) {
    let ids: Vec<BackendId> = servers.iter().map(|(s, _)| BackendId::from(s)).collect();
    let members: Vec<RingMember<'_>> = ids
        .iter()
        .zip(servers)
        .map(|(id, (_, weight))| RingMember {
            id,
            weight: *weight,
        })
        .collect();
    let addrs: Vec<SocketAddr> = servers.iter().map(|(s, _)| s.parse().unwrap()).collect();
    let buckets: Vec<Bucket> = addrs
        .iter()
        .zip(servers)
        .map(|(addr, (_, weight))| Bucket::new(*addr, *weight))
        .collect();
    (
        KetamaCompatRing::new(&members),
        Continuum::new(&buckets),
        addrs,
    )
}

fn assert_same_mapping(servers: &[(String, u32)], keys: usize) {
    let (ours, theirs, addrs) = both(servers);
    let mut differ = 0usize;
    for i in 0..keys {
        let key = format!("/user/{i}/cart?session={}", i.wrapping_mul(2_654_435_761));
        let ours = ours.primary(key.as_bytes()).map(|p| addrs[p]);
        let theirs = theirs.node(key.as_bytes());
        if ours != theirs {
            differ += 1;
        }
    }
    assert_eq!(
        differ, 0,
        "{differ} of {keys} keys map differently for {servers:?}"
    );
}

fn ipv4_servers(n: usize, weight: impl Fn(usize) -> u32) -> Vec<(String, u32)> {
    (0..n)
        .map(|i| {
            (
                format!(
                    "10.{}.{}.{}:{}",
                    i / 65536,
                    (i / 256) % 256,
                    i % 256,
                    8000 + i % 7
                ),
                weight(i),
            )
        })
        .collect()
}

#[test]
fn same_primary_as_pingora_on_100k_keys_per_server_list() {
    assert_same_mapping(&ipv4_servers(1, |_| 1), 100_000);
    assert_same_mapping(&ipv4_servers(3, |_| 1), 100_000);
    assert_same_mapping(&ipv4_servers(10, |_| 1), 100_000);
    assert_same_mapping(&ipv4_servers(37, |i| 1 + (i % 4) as u32), 100_000);
    assert_same_mapping(&ipv4_servers(100, |_| 1), 100_000);
    let ipv6: Vec<(String, u32)> = (1..=8)
        .map(|i| (format!("[2001:db8::{i:x}]:443"), 1 + (i % 2)))
        .collect();
    assert_same_mapping(&ipv6, 100_000);
}

#[test]
fn matches_the_nginx_samples_pingora_ships() {
    let servers = [
        ("127.0.0.1:7777".to_owned(), 1),
        ("127.0.0.1:7778".to_owned(), 1),
    ];
    let (ours, _, addrs) = both(&servers);
    let expect = [
        ("/some/path", "127.0.0.1:7778"),
        ("/some/longer/path", "127.0.0.1:7777"),
        ("/sad/zaidoon", "127.0.0.1:7778"),
        ("/g", "127.0.0.1:7777"),
        (
            "/pingora/team/is/cool/and/this/is/a/long/uri",
            "127.0.0.1:7778",
        ),
        ("/i/am/not/confident/in/this/code", "127.0.0.1:7777"),
    ];
    for (key, server) in expect {
        let got = ours.primary(key.as_bytes()).map(|p| addrs[p]);
        assert_eq!(got, Some(server.parse().unwrap()), "{key}");
    }
}

#[test]
fn failover_order_is_pingoras_walk_without_repeats() {
    let servers = ipv4_servers(12, |i| 1 + (i % 3) as u32);
    let (ours, theirs, addrs) = both(&servers);
    for i in 0..2_000 {
        let key = format!("client-{i}");
        let mut walk = Vec::new();
        ours.find(key.as_bytes(), &mut |p| {
            walk.push(addrs[p]);
            false
        });
        let mut expected: Vec<SocketAddr> = Vec::new();
        for addr in theirs.node_iter(key.as_bytes()) {
            if !expected.contains(addr) {
                expected.push(*addr);
            }
            if expected.len() == servers.len() {
                break;
            }
        }
        assert_eq!(walk, expected, "{key}");
    }
}

#[test]
fn no_servers_no_answer() {
    let ours = KetamaCompatRing::new(&[]);
    assert_eq!(ours.primary(b"anything"), None);
    assert!(ours.is_empty());
}
