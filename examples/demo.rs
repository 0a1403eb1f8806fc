//! The classic sticky-session scenarios over real HTTP on loopback, no servers needed.
//!
//! Three in-process backends ("a", "b", "c") sit behind one `Sticky` gateway served by
//! `axum::serve` on 127.0.0.1. Simulated users connect from their own loopback addresses
//! (127.0.0.0/8 is all loopback on Linux) or send an `X-User` header; for each strategy the demo
//! prints which backend every user hit and the load per backend.
//!
//! ```text
//! cargo run --example demo
//! ```

use std::collections::BTreeMap;
use std::error::Error;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;
use tower_sticky::affinity::{IpHash, KeyHash, LeastInFlight, RoundRobin};
use tower_sticky::{Affinity, Backends, StickyLayer};

const BACKENDS: [&str; 3] = ["a", "b", "c"];
const REQUESTS_PER_USER: usize = 4;

fn backend(name: &'static str) -> Router {
    Router::new().fallback(get(move || async move { name }))
}

/// Serves a `Sticky` over the three backends on a free loopback port; returns its URL.
async fn gateway(strategy: impl Affinity) -> Result<String, Box<dyn Error>> {
    let backends = BACKENDS
        .into_iter()
        .map(|name| (name, backend(name)))
        .collect::<Backends<Router>>();
    let sticky = StickyLayer::new(strategy).sticky(backends);
    let app = Router::new().fallback_service(sticky);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        let make = app.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(error) = axum::serve(listener, make).await {
            eprintln!("gateway stopped: {error}");
        }
    });
    Ok(url)
}

/// A simulated user: where it connects from and what it sends.
struct User {
    name: String,
    source: IpAddr,
    header: Option<String>,
}

async fn play(title: &str, strategy: impl Affinity, users: &[User]) -> Result<(), Box<dyn Error>> {
    let url = gateway(strategy).await?;
    println!("\n== {title} ==");
    println!(
        "{:<12} {:<16} backends hit ({REQUESTS_PER_USER} requests)",
        "user", "from"
    );
    let mut load: BTreeMap<String, usize> = BACKENDS.iter().map(|b| (b.to_string(), 0)).collect();
    for user in users {
        let client = reqwest::Client::builder()
            .local_address(user.source)
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()?;
        let mut hits = Vec::new();
        for _ in 0..REQUESTS_PER_USER {
            let mut req = client.get(&url);
            if let Some(h) = &user.header {
                req = req.header("x-user", h);
            }
            let body = req.send().await?.text().await?;
            *load.entry(body.clone()).or_default() += 1;
            hits.push(body);
        }
        println!("{:<12} {:<16} {}", user.name, user.source, hits.join(" "));
    }
    print_load(&load);
    Ok(())
}

fn print_load(load: &BTreeMap<String, usize>) {
    let max = load.values().copied().max().unwrap_or(0).max(1);
    println!("load per backend:");
    for (backend, n) in load {
        let bar = "#".repeat(n * 40 / max);
        println!("  {backend} | {bar:<40} {n}");
    }
}

fn users_by_ip(count: u8) -> Vec<User> {
    (0..count)
        .map(|i| User {
            name: format!("client-{}", i + 1),
            source: IpAddr::from([127, 0, 0, 10 + i]),
            header: None,
        })
        .collect()
}

fn users_by_header(count: usize) -> Vec<User> {
    (1..=count)
        .map(|i| User {
            name: format!("user-{i}"),
            source: IpAddr::from([127, 0, 0, 1]),
            header: Some(format!("user-{i}")),
        })
        .collect()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    println!("tower-sticky demo: three backends {BACKENDS:?} behind one Sticky gateway");
    play(
        "IP hash, consistent ring (each client address sticks; scaling moves ~1/(n+1))",
        IpHash::new(),
        &users_by_ip(9),
    )
    .await?;
    play(
        "IP hash, classic fnv1a(ip) % n",
        IpHash::new().modulo(),
        &users_by_ip(9),
    )
    .await?;
    play(
        "Key hash on the X-User header (same user, same backend, from anywhere)",
        KeyHash::header("x-user"),
        &users_by_header(12),
    )
    .await?;
    play(
        "Round robin (no affinity: for shared sessions)",
        RoundRobin::new(),
        &users_by_header(3),
    )
    .await?;
    play(
        "Least in flight (no affinity)",
        LeastInFlight::new(),
        &users_by_header(3),
    )
    .await?;
    Ok(())
}
