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

/// Something that maps a key to a server name, built over a server list.
trait Mapper {
    fn name(&self) -> String;
    fn map(&self, servers: &[String], keys: &[String]) -> Vec<String>;
}

struct Ours(&'static str, RingKind);

impl Mapper for Ours {
    fn name(&self) -> String {
        self.0.to_owned()
    }
    fn map(&self, servers: &[String], keys: &[String]) -> Vec<String> {
        let mut ids: Vec<BackendId> = servers.iter().map(BackendId::from).collect();
        ids.sort();
        let members: Vec<RingMember<'_>> =
            ids.iter().map(|id| RingMember { id, weight: 1 }).collect();
        let ring = self.1.build(&members);
        keys.iter()
            .map(|k| {
                ring.primary(k.as_bytes())
                    .map_or_else(String::new, |p| ids[p].to_string())
            })
            .collect()
    }
}

struct Pingora;

impl Mapper for Pingora {
    fn name(&self) -> String {
        "pingora-ketama".to_owned()
    }
    fn map(&self, servers: &[String], keys: &[String]) -> Vec<String> {
        let buckets: Vec<Bucket> = servers
            .iter()
            .map(|s| Bucket::new(s.parse::<SocketAddr>().unwrap(), 1))
            .collect();
        let ring = Continuum::new(&buckets);
        keys.iter()
            .map(|k| {
                ring.node(k.as_bytes())
                    .map_or_else(String::new, |a| a.to_string())
            })
            .collect()
    }
}

fn spread(servers: &[String], mapping: &[String]) -> (f64, f64) {
    let mut counts: std::collections::HashMap<&str, f64> =
        servers.iter().map(|s| (s.as_str(), 0.0)).collect();
    for m in mapping {
        *counts.entry(m.as_str()).or_default() += 1.0;
    }
    let n = counts.len() as f64;
    let avg = mapping.len() as f64 / n;
    let max = counts.values().copied().fold(0.0, f64::max);
    let var = counts.values().map(|c| (c - avg).powi(2)).sum::<f64>() / n;
    (max / avg, var.sqrt() / avg)
}

fn moved(a: &[String], b: &[String]) -> f64 {
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
    let servers: Vec<String> = (0..n).map(addr).collect();
    let mut ids: Vec<BackendId> = servers.iter().map(BackendId::from).collect();
    ids.sort();
    let members: Vec<RingMember<'_>> = ids.iter().map(|id| RingMember { id, weight: 1 }).collect();
    let ring = kind.build(&members);
    let bound = BoundedLoad::new(factor).unwrap();
    let held = Held(RefCell::new(vec![0; n]), RefCell::new(0));
    let mapping: Vec<String> = keys
        .iter()
        .map(|k| {
            let p = bound.find(&*ring, k.as_bytes(), &held).unwrap().position;
            held.0.borrow_mut()[p] += 1;
            *held.1.borrow_mut() += 1;
            ids[p].to_string()
        })
        .collect();
    spread(&servers, &mapping)
}

fn main() {
    let keys = keys();
    let mappers: Vec<Box<dyn Mapper>> = vec![
        Box::new(Pingora),
        Box::new(Ours("ketama", RingKind::Ketama)),
        Box::new(Ours("ketama-compat", RingKind::KetamaCompat)),
        Box::new(Ours("maglev (65537)", RingKind::maglev())),
    ];
    println!("Ring quality over {KEYS} keys (sequential session-like tokens)\n");
    println!("| ring | N | max/avg | stddev/avg | moved on +1 (ideal) | moved on -1 (ideal) |");
    println!("|---|---:|---:|---:|---:|---:|");
    for n in [10usize, 100, 1000] {
        let servers: Vec<String> = (0..n).map(addr).collect();
        let mut plus = servers.clone();
        plus.push(addr(n));
        let minus: Vec<String> = servers
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != n / 2)
            .map(|(_, s)| s.clone())
            .collect();
        for mapper in &mappers {
            let base = mapper.map(&servers, &keys);
            let (max_avg, sd_avg) = spread(&servers, &base);
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
