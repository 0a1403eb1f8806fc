//! Ring lookup and build times, side by side with `pingora-ketama` on the same keys in the same
//! run. `cargo bench --bench ring`.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use pingora_ketama::{Bucket, Continuum};
use tower_sticky::BackendId;
use tower_sticky::ring::{Ring, RingKind, RingMember};

/// `ip:port` ids, so every ring (and pingora) sees the same server list.
fn servers(n: usize) -> (Vec<BackendId>, Vec<SocketAddr>) {
    let addrs: Vec<SocketAddr> = (0..n)
        .map(|i| {
            format!("10.{}.{}.{}:8080", i / 65536, (i / 256) % 256, i % 256)
                .parse()
                .unwrap()
        })
        .collect();
    let mut ids: Vec<BackendId> = addrs
        .iter()
        .map(|a| BackendId::from(a.to_string()))
        .collect();
    ids.sort();
    (ids, addrs)
}

fn members(ids: &[BackendId]) -> Vec<RingMember<'_>> {
    ids.iter().map(|id| RingMember { id, weight: 1 }).collect()
}

/// Session-token-like keys, many more than fit in L1, the same for every ring.
fn keys() -> Vec<String> {
    (0..4096u64)
        .map(|i| format!("sess-{:016x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
        .collect()
}

fn kinds() -> [(&'static str, RingKind); 3] {
    [
        ("ketama", RingKind::Ketama),
        ("ketama-compat", RingKind::KetamaCompat),
        ("maglev", RingKind::maglev()),
    ]
}

fn lookup(c: &mut Criterion) {
    let keys = keys();
    for n in [3usize, 10, 100, 1000] {
        let (ids, addrs) = servers(n);
        let mut group = c.benchmark_group(format!("lookup/n={n}"));
        group.measurement_time(Duration::from_secs(2));
        group.warm_up_time(Duration::from_millis(500));
        let buckets: Vec<Bucket> = addrs.iter().map(|a| Bucket::new(*a, 1)).collect();
        let pingora = Continuum::new(&buckets);
        group.bench_function("pingora-ketama", |b| {
            let mut i = 0usize;
            b.iter(|| {
                i = (i + 1) & 4095;
                black_box(pingora.node(black_box(keys[i].as_bytes())))
            })
        });
        for (name, kind) in kinds() {
            let ring: Arc<dyn Ring> = kind.build(&members(&ids));
            group.bench_function(name, |b| {
                let mut i = 0usize;
                b.iter(|| {
                    i = (i + 1) & 4095;
                    black_box(ring.primary(black_box(keys[i].as_bytes())))
                })
            });
        }
        group.finish();
    }
}

fn build(c: &mut Criterion) {
    for n in [1000usize, 10_000] {
        let (ids, addrs) = servers(n);
        let mut group = c.benchmark_group("build");
        group.sample_size(10);
        group.measurement_time(Duration::from_secs(3));
        group.warm_up_time(Duration::from_millis(500));
        let buckets: Vec<Bucket> = addrs.iter().map(|a| Bucket::new(*a, 1)).collect();
        group.bench_with_input(
            BenchmarkId::new("pingora-ketama", n),
            &buckets,
            |b, buckets| b.iter(|| black_box(Continuum::new(buckets))),
        );
        let members = members(&ids);
        for (name, kind) in kinds() {
            group.bench_with_input(BenchmarkId::new(name, n), &members, |b, members| {
                b.iter(|| black_box(kind.build(members)))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, lookup, build);
criterion_main!(benches);
