//! Prints the ring quality table: load spread over 1M keys and the fraction of keys moved when a
//! backend is added or removed, for each ring and for `pingora-ketama`.
//! `cargo bench --bench ring_table`.

use std::cell::RefCell;
use std::net::SocketAddr;

use pingora_ketama::{Bucket, Continuum};
use tower_sticky::BackendId;
use tower_sticky::ring::{
    BoundedLoad, LoadView, MaglevRing, MaglevTableSize, RingKind, RingMember,
};

const KEYS: usize = 1_000_000;

fn addr(i: usize) -> String {
    format!("10.{}.{}.{}:8080", i / 65536, (i / 256) % 256, i % 256)
}

fn keys() -> Vec<String> {
    (0..KEYS as u64)
        .map(|i| format!("sess-{:016x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
        .collect()
}

/// Something that maps a key to a server, built over a server list. Servers are numbered
/// (`addr(i)`), and a mapping answers with those numbers so lists can be compared.
trait Mapper {
    fn name(&self) -> String;
    fn map(&self, servers: &[usize], keys: &[String]) -> Vec<u32>;
}

struct Ours(&'static str, RingKind);

impl Mapper for Ours {
    fn name(&self) -> String {
        self.0.to_owned()
    }
    fn map(&self, servers: &[usize], keys: &[String]) -> Vec<u32> {
        let mut named: Vec<(BackendId, u32)> = servers
            .iter()
            .map(|&i| (BackendId::from(addr(i)), i as u32))
            .collect();
        named.sort();
        let members: Vec<RingMember<'_>> = named
            .iter()
            .map(|(id, _)| RingMember { id, weight: 1 })
            .collect();
        let ring = self.1.build(&members);
        keys.iter()
            .map(|k| ring.primary(k.as_bytes()).map_or(u32::MAX, |p| named[p].1))
            .collect()
    }
}

struct Pingora;

impl Mapper for Pingora {
    fn name(&self) -> String {
        "pingora-ketama".to_owned()
    }
    fn map(&self, servers: &[usize], keys: &[String]) -> Vec<u32> {
        let addrs: std::collections::HashMap<SocketAddr, u32> = servers
            .iter()
            .map(|&i| (addr(i).parse().unwrap(), i as u32))
            .collect();
        let buckets: Vec<Bucket> = servers
            .iter()
            .map(|&i| Bucket::new(addr(i).parse().unwrap(), 1))
            .collect();
        let ring = Continuum::new(&buckets);
        keys.iter()
            .map(|k| ring.node(k.as_bytes()).map_or(u32::MAX, |a| addrs[&a]))
            .collect()
    }
}

/// (max/avg, stddev/avg) of the per-server key counts.
fn spread(servers: usize, mapping: &[u32]) -> (f64, f64) {
    let mut counts = vec![0f64; servers + 1];
    for &m in mapping {
        if let Some(c) = counts.get_mut(m as usize) {
            *c += 1.0;
        }
    }
    counts.truncate(servers);
    let n = servers as f64;
    let avg = mapping.len() as f64 / n;
    let max = counts.iter().copied().fold(0.0, f64::max);
    let var = counts.iter().map(|c| (c - avg).powi(2)).sum::<f64>() / n;
    (max / avg, var.sqrt() / avg)
}

fn moved(a: &[u32], b: &[u32]) -> f64 {
    a.iter().zip(b).filter(|(x, y)| x != y).count() as f64 / a.len() as f64
}

/// Sequential placement of every key, all held, through a bounded-load walk.
struct Held(RefCell<Vec<u64>>, RefCell<u64>);

impl LoadView for Held {
    fn usable(&self, _: usize) -> bool {
        true
    }
    fn load(&self, p: usize) -> u64 {
        self.0.borrow()[p]
    }
    fn totals(&self) -> (u64, u64) {
        (*self.1.borrow(), self.0.borrow().len() as u64)
    }
}

fn bounded_spread(kind: RingKind, factor: f64, n: usize, keys: &[String]) -> (f64, f64) {
    let mut ids: Vec<BackendId> = (0..n).map(|i| BackendId::from(addr(i))).collect();
    ids.sort();
    let members: Vec<RingMember<'_>> = ids.iter().map(|id| RingMember { id, weight: 1 }).collect();
    let ring = kind.build(&members);
    let bound = BoundedLoad::new(factor).unwrap();
    let held = Held(RefCell::new(vec![0; n]), RefCell::new(0));
    let mapping: Vec<u32> = keys
        .iter()
        .map(|k| {
            let p = bound.find(&*ring, k.as_bytes(), &held).unwrap().position;
            held.0.borrow_mut()[p] += 1;
            *held.1.borrow_mut() += 1;
            p as u32
        })
        .collect();
    spread(n, &mapping)
}

fn main() {
    let keys = keys();
    let mappers: Vec<Box<dyn Mapper>> = vec![
        Box::new(Pingora),
        Box::new(Ours("ketama", RingKind::Ketama)),
        Box::new(Ours("ketama-compat", RingKind::KetamaCompat)),
        Box::new(Ours("maglev (65537)", RingKind::maglev())),
        Box::new(Ours(
            "maglev (655373)",
            RingKind::maglev_with_table_size(655_373).unwrap(),
        )),
    ];
    println!("Ring quality over {KEYS} keys (sequential session-like tokens)\n");
    println!("| ring | N | max/avg | stddev/avg | moved on +1 (ideal) | moved on -1 (ideal) |");
    println!("|---|---:|---:|---:|---:|---:|");
    for n in [10usize, 100, 1000] {
        let servers: Vec<usize> = (0..n).collect();
        let plus: Vec<usize> = (0..=n).collect();
        let minus: Vec<usize> = (0..n).filter(|&i| i != n / 2).collect();
        for mapper in &mappers {
            let base = mapper.map(&servers, &keys);
            let (max_avg, sd_avg) = spread(n, &base);
            let up = moved(&base, &mapper.map(&plus, &keys));
            let down = moved(&base, &mapper.map(&minus, &keys));
            println!(
                "| {} | {n} | {max_avg:.3} | {sd_avg:.3} | {up:.4} ({:.4}) | {down:.4} ({:.4}) |",
                mapper.name(),
                1.0 / (n as f64 + 1.0),
                1.0 / n as f64,
            );
        }
        for (name, kind, factor) in [
            ("ketama + bounded 1.05", RingKind::Ketama, 1.05),
            ("maglev + bounded 1.05", RingKind::maglev(), 1.05),
        ] {
            let (max_avg, sd_avg) = bounded_spread(kind, factor, n, &keys);
            println!(
                "| {name} (all keys held in flight) | {n} | {max_avg:.3} | {sd_avg:.3} | n/a | n/a |"
            );
        }
    }
    println!("\nMaglev key-space share (slots owned; the load as keys -> infinity):\n");
    println!("| N | table | max/avg | min/avg |");
    println!("|---:|---:|---:|---:|");
    for n in [10usize, 100, 1000] {
        let ids: Vec<BackendId> = (0..n).map(|i| BackendId::from(addr(i))).collect();
        let members: Vec<RingMember<'_>> =
            ids.iter().map(|id| RingMember { id, weight: 1 }).collect();
        let ring = MaglevRing::new(&members, MaglevTableSize::default()).unwrap();
        let slots = ring.slots_per_member();
        let avg = ring.table_size() as f64 / n as f64;
        let max = *slots.iter().max().unwrap() as f64;
        let min = *slots.iter().min().unwrap() as f64;
        println!(
            "| {n} | {} | {:.4} | {:.4} |",
            ring.table_size(),
            max / avg,
            min / avg
        );
    }
}
