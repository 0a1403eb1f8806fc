//! Pinned cookie affinity over real HTTP on loopback: stickiness with a cookie-jar client, spread
//! of new clients, restart and replicas, key rotation, failover (re-pin, no re-pin, strict),
//! max life, draining, private values, attributes and cache headers.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use axum::Router;
use axum::http::HeaderMap;
use support::cookie::{Exchange, backends, gateway, jar_client, raw_client, send};
use support::http::{Forward, serve_router};
use tower_sticky::Backends;
use tower_sticky::affinity::CookieAffinity;
use tower_sticky::affinity::cookie::{CookieConfigError, CookieKeys, Key, Protection};

fn key(byte: u8) -> Key {
    Key::from(&[byte; 64])
}

fn pinned(k: Key) -> CookieAffinity {
    CookieAffinity::pinned("srv").key(k).build().unwrap()
}

/// `n` raw clients' first exchanges: (cookie value, backend).
async fn new_clients(url: &str, n: usize) -> Vec<(String, String)> {
    let client = raw_client();
    let mut out = Vec::new();
    for _ in 0..n {
        let first = send(&client, url, None).await;
        assert_eq!(first.status, 200);
        let value = first.cookie("srv").expect("new client gets a cookie");
        out.push((value, first.body));
    }
    out
}

async fn with_cookie(url: &str, value: &str) -> Exchange {
    send(&raw_client(), url, Some(format!("srv={value}").as_bytes())).await
}

#[tokio::test]
async fn jar_clients_stick_and_new_clients_spread() {
    let (_servers, backends) = backends(3).await;
    let gw = gateway(pinned(key(1)), backends).await;
    let mut per_backend: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..30 {
        let client = jar_client();
        let mut seen = BTreeSet::new();
        for _ in 0..10 {
            let res = client.get(gw.url()).send().await.unwrap();
            assert_eq!(res.status(), 200);
            seen.insert(res.text().await.unwrap());
        }
        assert_eq!(seen.len(), 1, "a client moved: {seen:?}");
        *per_backend.entry(seen.pop_first().unwrap()).or_default() += 1;
    }
    // Round robin places new clients: exactly even.
    assert_eq!(
        per_backend.values().copied().collect::<Vec<_>>(),
        [10, 10, 10]
    );
}

#[tokio::test]
async fn cookie_is_set_once_with_its_attributes_and_an_uncacheable_marker() {
    let (_servers, backends) = backends(2).await;
    let affinity = CookieAffinity::pinned("srv")
        .key(key(1))
        .domain("localhost")
        .path("/")
        .max_age(Duration::from_secs(600))
        .build()
        .unwrap();
    let gw = gateway(affinity, backends).await;
    let first = send(&raw_client(), &gw.url(), None).await;
    assert_eq!(first.set_cookies.len(), 1, "{first:?}");
    let line = &first.set_cookies[0];
    for attribute in [
        "HttpOnly",
        "SameSite=Lax",
        "Path=/",
        "Domain=localhost",
        "Max-Age=600",
        "Expires=",
    ] {
        assert!(line.contains(attribute), "{attribute} missing in {line}");
    }
    assert!(!line.contains("Secure"), "{line}");
    assert_eq!(first.cache_control, ["no-cache=\"set-cookie\""]);

    let value = first.cookie("srv").unwrap();
    for _ in 0..5 {
        let again = with_cookie(&gw.url(), &value).await;
        assert_eq!(again.body, first.body);
        assert!(again.set_cookies.is_empty(), "re-set unchanged: {again:?}");
        assert!(again.cache_control.is_empty(), "{again:?}");
    }
}

#[tokio::test]
async fn a_restarted_balancer_and_a_replica_route_every_cookie_the_same() {
    let (servers, backends_1) = backends(3).await;
    let gw_1 = gateway(pinned(key(7)), backends_1).await;
    let clients = new_clients(&gw_1.url(), 30).await;

    // A replica: its own Sticky and Backends (inserted in another order), the same key.
    let replica_backends: Backends<Forward> = Backends::new();
    for (i, server) in servers.iter().enumerate().rev() {
        replica_backends
            .handle()
            .insert(format!("b{i}"), Forward::new(server.url()));
    }
    let gw_2 = gateway(pinned(key(7)), replica_backends.clone()).await;
    for (value, backend) in &clients {
        let res = with_cookie(&gw_2.url(), value).await;
        assert_eq!(&res.body, backend);
        assert!(res.set_cookies.is_empty());
    }

    // The first balancer is stopped and a new one starts: nothing was kept, nobody moves.
    gw_1.stop().await;
    let gw_3 = gateway(pinned(key(7)), replica_backends).await;
    for (value, backend) in &clients {
        assert_eq!(&with_cookie(&gw_3.url(), value).await.body, backend);
    }
}

#[tokio::test]
async fn key_rotation_keeps_clients_and_re_signs_with_the_new_key() {
    let (servers, backends_old) = backends(3).await;
    let old = gateway(pinned(key(1)), backends_old).await;
    let clients = new_clients(&old.url(), 12).await;

    let fresh_backends = || {
        let b: Backends<Forward> = Backends::new();
        for (i, s) in servers.iter().enumerate() {
            b.handle().insert(format!("b{i}"), Forward::new(s.url()));
        }
        b
    };
    let rotating = CookieAffinity::pinned("srv")
        .key(CookieKeys::new(key(2)).verify_also(key(1)))
        .build()
        .unwrap();
    let rotating = gateway(rotating, fresh_backends()).await;
    let new_only = gateway(pinned(key(2)), fresh_backends()).await;
    for (value, backend) in &clients {
        // The old key still opens the cookie; the response carries it re-signed by the new key.
        let res = with_cookie(&rotating.url(), value).await;
        assert_eq!(&res.body, backend);
        let resigned = res.cookie("srv").expect("re-signed with the new key");
        assert_ne!(&resigned, value);
        // After rotation completes the old key is gone: the re-signed cookie still routes...
        let later = with_cookie(&new_only.url(), &resigned).await;
        assert_eq!(&later.body, backend);
        assert!(later.set_cookies.is_empty());
        // ...while an old cookie is just a new client there.
        let stale = with_cookie(&new_only.url(), value).await;
        assert!(stale.cookie("srv").is_some(), "old-key cookie was obeyed");
    }
}

/// Clients of `b0`, after `b0` became unusable: each goes to one substitute every time, the
/// substitutes spread, and (re-pin) the cookie names the substitute.
#[tokio::test]
async fn failover_sends_each_client_to_one_substitute_and_repins() {
    let (_servers, backends) = backends(3).await;
    let handle = backends.handle();
    let gw = gateway(pinned(key(3)), backends).await;
    let clients = new_clients(&gw.url(), 60).await;
    handle.set_healthy("b0", false).unwrap();

    let mut substitutes = BTreeSet::new();
    for (value, backend) in &clients {
        let res = with_cookie(&gw.url(), value).await;
        assert_eq!(res.status, 200);
        if backend != "b0" {
            assert_eq!(&res.body, backend, "a client of a healthy backend moved");
            assert!(res.set_cookies.is_empty());
            continue;
        }
        assert_ne!(res.body, "b0");
        // The same cookie always reaches the same substitute.
        for _ in 0..3 {
            assert_eq!(with_cookie(&gw.url(), value).await.body, res.body);
        }
        let repinned = res.cookie("srv").expect("re-pinned");
        let next = with_cookie(&gw.url(), &repinned).await;
        assert_eq!(next.body, res.body);
        assert!(next.set_cookies.is_empty(), "re-pinned cookie re-set again");
        substitutes.insert(res.body);
    }
    assert_eq!(substitutes.len(), 2, "b0's clients all went to one backend");

    // b0 is back: its old cookies return to it (re-pinned ones stay where they are now).
    handle.set_healthy("b0", true).unwrap();
    for (value, backend) in clients.iter().filter(|(_, b)| b == "b0") {
        assert_eq!(&with_cookie(&gw.url(), value).await.body, backend);
    }
}

#[tokio::test]
async fn without_repin_the_cookie_is_kept_and_strict_answers_503() {
    let (_servers, backends) = backends(3).await;
    let handle = backends.handle();
    let no_repin = CookieAffinity::pinned("srv")
        .key(key(4))
        .repin_on_failover(false)
        .build()
        .unwrap();
    let gw = gateway(no_repin, backends.clone()).await;
    let strict = gateway(
        CookieAffinity::pinned("srv")
            .key(key(4))
            .strict(true)
            .build()
            .unwrap(),
        backends,
    )
    .await;
    let clients = new_clients(&gw.url(), 9).await;
    let (on_b1, _) = clients.iter().find(|(_, b)| b == "b1").unwrap();
    handle.set_healthy("b1", false).unwrap();

    let moved = with_cookie(&gw.url(), on_b1).await;
    assert_eq!(moved.status, 200);
    assert_ne!(moved.body, "b1");
    assert!(moved.set_cookies.is_empty(), "{moved:?}");

    let refused = with_cookie(&strict.url(), on_b1).await;
    assert_eq!(refused.status, 503);
    assert!(
        refused.body.contains("pinned to is down"),
        "{}",
        refused.body
    );

    handle.set_healthy("b1", true).unwrap();
    assert_eq!(with_cookie(&gw.url(), on_b1).await.body, "b1");
    assert_eq!(with_cookie(&strict.url(), on_b1).await.body, "b1");

    // Strict only waits for a member: a removed backend's clients move on.
    handle.remove("b1");
    let res = with_cookie(&strict.url(), on_b1).await;
    assert_eq!(res.status, 200);
    assert_ne!(res.body, "b1");
    assert!(res.cookie("srv").is_some(), "re-pinned after removal");
}

#[tokio::test]
async fn a_cookie_past_max_life_is_a_new_client() {
    let (_servers, backends) = backends(2).await;
    let affinity = CookieAffinity::pinned("srv")
        .key(key(5))
        .max_life(Duration::from_secs(1))
        .build()
        .unwrap();
    let gw = gateway(affinity, backends).await;
    let (value, _) = new_clients(&gw.url(), 1).await.remove(0);
    assert!(with_cookie(&gw.url(), &value).await.set_cookies.is_empty());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let expired = with_cookie(&gw.url(), &value).await;
    let fresh = expired.cookie("srv").expect("expired cookie replaced");
    assert_ne!(fresh, value);
    assert!(with_cookie(&gw.url(), &fresh).await.set_cookies.is_empty());
}

#[tokio::test]
async fn a_draining_backend_keeps_its_clients_and_takes_no_new_ones() {
    let (_servers, backends) = backends(3).await;
    let handle = backends.handle();
    let gw = gateway(pinned(key(6)), backends).await;
    let clients = new_clients(&gw.url(), 9).await;
    handle.set_draining("b2", true).unwrap();
    for (value, backend) in &clients {
        assert_eq!(&with_cookie(&gw.url(), value).await.body, backend);
    }
    let newcomers = new_clients(&gw.url(), 20).await;
    assert!(newcomers.iter().all(|(_, b)| b != "b2"), "{newcomers:?}");
}

#[tokio::test]
async fn private_values_hide_the_backend_and_still_route() {
    let (_servers, backends) = backends(3).await;
    let affinity = CookieAffinity::pinned("srv")
        .key(key(8))
        .protection(Protection::Private)
        .build()
        .unwrap();
    let gw = gateway(affinity, backends).await;
    for (value, backend) in new_clients(&gw.url(), 6).await {
        // Only base64 (no '.', which every readable payload has): the id is not in clear.
        assert!(
            value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)),
            "{value} is not opaque"
        );
        assert_eq!(with_cookie(&gw.url(), &value).await.body, backend);
    }
}

#[tokio::test]
async fn host_prefix_forces_secure_and_conflicts_are_build_errors() {
    let (_servers, backends) = backends(1).await;
    let affinity = CookieAffinity::pinned("srv")
        .key(key(9))
        .host_prefix()
        .build()
        .unwrap();
    let gw = gateway(affinity, backends).await;
    let first = send(&raw_client(), &gw.url(), None).await;
    let line = &first.set_cookies[0];
    assert!(line.starts_with("__Host-srv="), "{line}");
    assert!(line.contains("Secure") && line.contains("Path=/"), "{line}");
    assert!(!line.contains("Domain"), "{line}");

    let err = CookieAffinity::pinned("srv")
        .host_prefix()
        .domain("example.com")
        .build()
        .unwrap_err();
    assert!(matches!(err, CookieConfigError::PrefixRule { .. }));
    assert!(err.to_string().contains("forbids Domain"), "{err}");
    let err = CookieAffinity::pinned("__Host-srv")
        .secure(false)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("needs Secure"), "{err}");
}

/// With remote `HttpBackend`s and the service core's retry of unsent requests: the pinned
/// backend's server is stopped without anyone marking it down; the client's next request is
/// retried on its substitute, succeeds, and comes back with the cookie re-pinned there.
#[tokio::test]
async fn a_killed_pinned_backend_costs_no_error_and_the_retry_repins() {
    use support::backend::{http_backends, spawn_full};
    let mut servers = Vec::new();
    let mut list = Vec::new();
    for id in ["b0", "b1", "b2"] {
        let (server, _) = spawn_full("127.0.0.1:0", id).await;
        list.push((id, server.url()));
        servers.push(server);
    }
    let sticky = tower_sticky::StickyLayer::builder()
        .cookie(pinned(key(12)))
        .build()
        .sticky(http_backends(&list));
    let gw = support::http::serve_gateway("127.0.0.1:0", sticky).await;
    let clients = new_clients(&gw.url(), 6).await;
    let (value, _) = clients.iter().find(|(_, b)| b == "b1").unwrap();

    servers.remove(1).stop().await;
    let res = with_cookie(&gw.url(), value).await;
    assert_eq!(res.status, 200, "{res:?}");
    assert_ne!(res.body, "b1");
    let repinned = res
        .cookie("srv")
        .expect("cookie re-pinned to the substitute");
    let next = with_cookie(&gw.url(), &repinned).await;
    assert_eq!((next.status, &next.body), (200, &res.body));
    assert!(next.set_cookies.is_empty());
}

/// Two backends that answer `<id> <Cookie header as received>`.
async fn cookie_echo_backends() -> (Vec<support::http::TestServer>, Backends<Forward>) {
    let backends = Backends::new();
    let mut servers = Vec::new();
    for id in ["e0", "e1"] {
        let router = Router::new().fallback(move |headers: HeaderMap| async move {
            let cookie = headers
                .get_all("cookie")
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect::<Vec<_>>()
                .join(" | ");
            format!("{id} [{cookie}]")
        });
        let server = serve_router("127.0.0.1:0", router).await;
        backends.handle().insert(id, Forward::new(server.url()));
        servers.push(server);
    }
    (servers, backends)
}

#[tokio::test]
async fn indirect_hides_the_affinity_cookie_from_backends_and_keeps_the_others() {
    for indirect in [true, false] {
        let (_servers, backends) = cookie_echo_backends().await;
        let affinity = CookieAffinity::pinned("srv")
            .key(key(1))
            .indirect(indirect)
            .build()
            .unwrap();
        let gw = gateway(affinity, backends).await;
        let first = send(&raw_client(), &gw.url(), Some(b"a=1; b=2")).await;
        let value = first.cookie("srv").expect("a new client gets a cookie");
        let home = first.body.split(' ').next().unwrap().to_owned();
        for _ in 0..3 {
            let cookie = format!("a=1; srv={value}; b=2");
            let res = send(&raw_client(), &gw.url(), Some(cookie.as_bytes())).await;
            assert!(res.set_cookies.is_empty(), "still pinned: {res:?}");
            let (id, seen) = res.body.split_once(' ').unwrap();
            assert_eq!(id, home, "the client stays on its backend");
            if indirect {
                assert_eq!(seen, "[a=1; b=2]", "the backend never sees srv");
            } else {
                assert_eq!(seen, format!("[{cookie}]"), "passed through untouched");
            }
        }
    }
}

#[test]
fn indirect_is_refused_for_learned_mode() {
    assert!(matches!(
        CookieAffinity::learn("JSESSIONID").indirect(true).build(),
        Err(CookieConfigError::IndirectLearned)
    ));
}
