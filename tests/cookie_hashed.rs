//! Hashed cookie affinity (Heroku style) over real HTTP on loopback: stickiness, clearing the
//! cookie re-assigns, movement on add/remove measured against 1/(n+1), failover and strict mode.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use support::cookie::{backends, gateway, jar_client, raw_client, send};
use support::http::{Forward, spawn_backend};
use tower_sticky::affinity::CookieAffinity;
use tower_sticky::affinity::cookie::Key;

fn hashed() -> CookieAffinity {
    CookieAffinity::hashed("affinity")
        .key(Key::from(&[11u8; 64]))
        .build()
        .unwrap()
}

async fn route(url: &str, value: &str) -> (u16, String, bool) {
    let res = send(
        &raw_client(),
        url,
        Some(format!("affinity={value}").as_bytes()),
    )
    .await;
    (res.status, res.body, !res.set_cookies.is_empty())
}

/// `n` new clients: (cookie value, backend).
async fn new_clients(url: &str, n: usize) -> Vec<(String, String)> {
    let client = raw_client();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let res = send(&client, url, None).await;
        assert_eq!(res.status, 200);
        out.push((res.cookie("affinity").expect("token cookie"), res.body));
    }
    out
}

#[tokio::test]
async fn jar_clients_stick_and_clearing_the_cookie_reassigns() {
    let (_servers, backends) = backends(3).await;
    let gw = gateway(hashed(), backends).await;
    let client = jar_client();
    let fetch = || async {
        client
            .get(gw.url())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let first = fetch().await;
    for _ in 0..10 {
        assert_eq!(fetch().await, first);
    }
    // "Clearing" the cookie: a client without it gets a fresh token each time, so over many
    // clears the client lands on every backend.
    let clears = new_clients(&gw.url(), 40).await;
    let tokens: BTreeSet<&String> = clears.iter().map(|(v, _)| v).collect();
    assert_eq!(tokens.len(), 40, "tokens repeat");
    let places: BTreeSet<&String> = clears.iter().map(|(_, b)| b).collect();
    assert_eq!(places.len(), 3, "{places:?}");
    // And a returning token is sticky without re-setting the cookie.
    for (value, backend) in clears.iter().take(5) {
        let (status, body, set) = route(&gw.url(), value).await;
        assert_eq!((status, &body, set), (200, backend, false));
    }
}

#[tokio::test]
async fn adding_a_backend_moves_about_one_in_n_plus_one_and_removing_spreads_its_clients() {
    const CLIENTS: usize = 400;
    let (_servers, backends) = backends(3).await;
    let handle = backends.handle();
    let gw = gateway(hashed(), backends).await;
    let before = new_clients(&gw.url(), CLIENTS).await;

    let extra = spawn_backend("b3").await;
    handle.insert("b3", Forward::new(extra.url()));
    let mut after_add = Vec::with_capacity(CLIENTS);
    let mut moved = 0usize;
    for (value, old) in &before {
        let (status, now, set) = route(&gw.url(), value).await;
        assert_eq!(status, 200);
        assert!(!set, "hashed mode re-set an unchanged token");
        if &now != old {
            assert_eq!(now, "b3", "a client moved between old backends");
            moved += 1;
        }
        after_add.push((value.clone(), now));
    }
    let fraction = moved as f64 / CLIENTS as f64;
    // Ideal: 1/(3+1) = 0.25. 160 virtual nodes per backend keep it within a few points.
    assert!(
        (0.15..=0.35).contains(&fraction),
        "moved {fraction:.3} of clients on add, ideal 0.25"
    );
    println!("hashed: add moved {fraction:.3} (ideal 0.250)");

    // Remove b1: only its clients move, and they spread over all the others.
    assert!(handle.remove("b1"));
    let mut landed: BTreeMap<String, usize> = BTreeMap::new();
    let mut moved = 0usize;
    for (value, old) in &after_add {
        let (_, now, _) = route(&gw.url(), value).await;
        if old == "b1" {
            assert_ne!(now, "b1");
            *landed.entry(now).or_default() += 1;
            moved += 1;
        } else {
            assert_eq!(&now, old, "a client of a remaining backend moved");
        }
    }
    assert_eq!(landed.len(), 3, "b1's clients did not spread: {landed:?}");
    assert!(
        landed.values().all(|&n| n * 6 >= moved),
        "uneven spread of b1's {moved} clients: {landed:?}"
    );
}

#[tokio::test]
async fn an_unhealthy_primary_has_one_substitute_per_client_and_strict_refuses() {
    let (_servers, backends) = backends(3).await;
    let handle = backends.handle();
    let gw = gateway(hashed(), backends.clone()).await;
    let strict = gateway(
        CookieAffinity::hashed("affinity")
            .key(Key::from(&[11u8; 64]))
            .strict(true)
            .build()
            .unwrap(),
        backends,
    )
    .await;
    let clients = new_clients(&gw.url(), 60).await;
    handle.set_healthy("b2", false).unwrap();
    let mut substitutes = BTreeSet::new();
    for (value, old) in &clients {
        let (status, now, _) = route(&gw.url(), value).await;
        assert_eq!(status, 200);
        if old == "b2" {
            assert_ne!(now, "b2");
            assert_eq!(route(&gw.url(), value).await.1, now, "substitute changed");
            assert_eq!(route(&strict.url(), value).await.0, 503);
            substitutes.insert(now);
        } else {
            assert_eq!(&now, old);
            assert_eq!(route(&strict.url(), value).await.1, *old);
        }
    }
    assert_eq!(substitutes.len(), 2, "{substitutes:?}");
    handle.set_healthy("b2", true).unwrap();
    for (value, old) in &clients {
        assert_eq!(route(&gw.url(), value).await.1, *old, "did not return");
    }
}
