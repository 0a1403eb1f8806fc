//! The foundation over real HTTP on loopback: three axum backends on port 0, a `Sticky` in front
//! served by `axum::serve` with connect info, clients with their own source addresses.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use axum::Extension;
use axum::Router;
use axum::routing::get;
use support::http::{
    Forward, TestServer, client_from, get as http_get, serve_gateway, spawn_backend,
};
use tower::ServiceBuilder;
use tower::discover::Change;
use tower_sticky::affinity::{IpHash, KeyHash, RoundRobin};
use tower_sticky::{Backends, Routed, StickyLayer};

async fn three_backends() -> (Vec<TestServer>, Backends<Forward>) {
    let servers = vec![
        spawn_backend("a").await,
        spawn_backend("b").await,
        spawn_backend("c").await,
    ];
    let backends = Backends::new()
        .with("a", Forward::new(servers[0].url()))
        .with("b", Forward::new(servers[1].url()))
        .with("c", Forward::new(servers[2].url()));
    (servers, backends)
}

fn source(last_octet: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last_octet])
}

#[tokio::test]
async fn ip_hash_keeps_each_client_on_one_backend_and_spreads_clients() {
    let (_servers, backends) = three_backends().await;
    let sticky = ServiceBuilder::new()
        .layer(StickyLayer::new(IpHash::new()))
        .service(backends);
    let gateway = serve_gateway("127.0.0.1:0", sticky).await;

    let mut per_backend: BTreeMap<String, usize> = BTreeMap::new();
    for octet in 2..=41 {
        let client = client_from(source(octet));
        let mut seen = BTreeSet::new();
        for _ in 0..5 {
            let (status, body) = http_get(&client, &gateway.url(), &[]).await;
            assert_eq!(status, 200);
            seen.insert(body);
        }
        assert_eq!(seen.len(), 1, "client 127.0.0.{octet} moved: {seen:?}");
        *per_backend
            .entry(seen.into_iter().next().unwrap())
            .or_default() += 1;
    }
    assert_eq!(
        per_backend.len(),
        3,
        "40 clients should reach all 3: {per_backend:?}"
    );
    assert!(
        per_backend.values().all(|&n| n >= 5),
        "spread too uneven: {per_backend:?}"
    );
}

#[tokio::test]
async fn spoofed_forwarded_for_from_an_untrusted_peer_changes_nothing() {
    let (_servers, backends) = three_backends().await;
    // Only 10.0.0.0/8 is trusted; our clients connect from 127.0.0.x.
    let layer = StickyLayer::new(IpHash::new().trusted_proxies(["10.0.0.0/8"]).unwrap());
    let gateway = serve_gateway("127.0.0.1:0", layer.sticky(backends)).await;

    for octet in [50, 51, 52, 53] {
        let client = client_from(source(octet));
        let (_, honest) = http_get(&client, &gateway.url(), &[]).await;
        for spoof in [
            "1.2.3.4",
            "8.8.8.8, 9.9.9.9",
            "2001:db8::1",
            "garbage",
            "10.1.1.1",
        ] {
            let (status, body) =
                http_get(&client, &gateway.url(), &[("x-forwarded-for", spoof)]).await;
            assert_eq!(status, 200);
            assert_eq!(body, honest, "spoofed {spoof:?} moved 127.0.0.{octet}");
        }
    }
}

#[tokio::test]
async fn forwarded_for_from_a_trusted_proxy_decides() {
    let (_servers, backends) = three_backends().await;
    let layer = StickyLayer::new(IpHash::new().trusted_proxies(["127.0.0.0/8"]).unwrap());
    let gateway = serve_gateway("127.0.0.1:0", layer.sticky(backends)).await;

    // Two different proxies report the same client: same backend.
    let proxy_1 = client_from(source(60));
    let proxy_2 = client_from(source(61));
    let mut seen = BTreeSet::new();
    for i in 0..30u8 {
        let client_ip = format!("203.0.113.{i}");
        let (_, via_1) =
            http_get(&proxy_1, &gateway.url(), &[("x-forwarded-for", &client_ip)]).await;
        // The second proxy's chain has a trusted hop appended and a spoofed entry on the left.
        let chain = format!("6.6.6.6, {client_ip}, 127.0.0.99");
        let (_, via_2) = http_get(&proxy_2, &gateway.url(), &[("x-forwarded-for", &chain)]).await;
        assert_eq!(via_1, via_2, "client {client_ip} split across proxies");
        seen.insert(via_1);
    }
    assert_eq!(
        seen.len(),
        3,
        "30 forwarded clients should reach all backends"
    );
}

#[tokio::test]
async fn ipv6_clients_stick_and_prefix_grouping_keeps_a_subnet_together() {
    let (_servers, backends) = three_backends().await;
    let layer = StickyLayer::new(
        IpHash::new()
            .trusted_proxies(["::1/128"])
            .unwrap()
            .ipv6_prefix(64),
    );
    // The gateway listens on IPv6 loopback; the client connects over IPv6.
    let gateway = serve_gateway("[::1]:0", layer.sticky(backends)).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = gateway.url();

    let (status, first) = http_get(&client, &url, &[]).await;
    assert_eq!(status, 200);
    for _ in 0..5 {
        assert_eq!(http_get(&client, &url, &[]).await.1, first);
    }
    // Every address of one /64 lands on one backend; other /64s spread.
    let mut subnets = BTreeSet::new();
    for net in 0..20u16 {
        let mut hosts = BTreeSet::new();
        for host in [1u16, 2, 0xffff] {
            let ip = format!("2001:db8:{net:x}::{host:x}");
            hosts.insert(http_get(&client, &url, &[("x-forwarded-for", &ip)]).await.1);
        }
        assert_eq!(hosts.len(), 1, "subnet {net} split: {hosts:?}");
        subnets.extend(hosts);
    }
    assert!(subnets.len() >= 2, "20 subnets all on one backend");
}

#[tokio::test]
async fn nested_sticky_routes_region_by_header_then_host_by_ip() {
    let servers = [
        spawn_backend("eu-1").await,
        spawn_backend("eu-2").await,
        spawn_backend("us-1").await,
        spawn_backend("us-2").await,
    ];
    let inner = |first: &TestServer, second: &TestServer, names: [&str; 2]| {
        StickyLayer::new(IpHash::new().trusted_proxies(["127.0.0.0/8"]).unwrap()).sticky(
            Backends::new()
                .with(names[0], Forward::new(first.url()))
                .with(names[1], Forward::new(second.url())),
        )
    };
    let regions = Backends::new()
        .with("eu", inner(&servers[0], &servers[1], ["eu-1", "eu-2"]))
        .with("us", inner(&servers[2], &servers[3], ["us-1", "us-2"]));
    let outer = StickyLayer::new(KeyHash::header("x-region")).sticky(regions);
    let gateway = serve_gateway("127.0.0.1:0", outer).await;
    let client = client_from(source(70));

    let mut hosts_per_region: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for region in ["eu", "us", "eu-west", "ap", "us-east", "sa"] {
        for i in 0..10 {
            let ip = format!("198.51.100.{i}");
            let headers = [("x-region", region), ("x-forwarded-for", ip.as_str())];
            let (status, host) = http_get(&client, &gateway.url(), &headers).await;
            assert_eq!(status, 200);
            // Same region + same client: same host, every time.
            assert_eq!(http_get(&client, &gateway.url(), &headers).await.1, host);
            hosts_per_region
                .entry(region.to_owned())
                .or_default()
                .insert(host);
        }
    }
    for (region, hosts) in &hosts_per_region {
        let prefixes: BTreeSet<&str> = hosts.iter().map(|h| &h[..2]).collect();
        assert_eq!(
            prefixes.len(),
            1,
            "region key {region} crossed regions: {hosts:?}"
        );
    }
    let all: BTreeSet<&String> = hosts_per_region.values().flatten().collect();
    assert!(
        all.len() >= 3,
        "inner level did not spread clients: {all:?}"
    );
}

/// A key (header value) that the current membership maps to `target`.
fn key_for(target: &str, ids: &[&str]) -> String {
    use tower_sticky::BackendId;
    use tower_sticky::ring::{RingKind, RingMember};
    let ids: Vec<BackendId> = ids.iter().map(|s| BackendId::from(*s)).collect();
    let members: Vec<RingMember<'_>> = ids.iter().map(|id| RingMember { id, weight: 1 }).collect();
    let ring = RingKind::Ketama.build(&members);
    (0..)
        .map(|i| format!("user-{i}"))
        .find(|k| ids[ring.primary(k.as_bytes()).unwrap()] == target)
        .unwrap()
}

#[tokio::test]
async fn discover_insert_and_remove_while_requests_are_in_flight() {
    let servers = [
        spawn_backend("a").await,
        spawn_backend("b").await,
        spawn_backend("c").await,
        spawn_backend("d").await,
    ];
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<
        Result<Change<&'static str, Forward>, std::convert::Infallible>,
    >();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    for (id, server) in ["a", "b", "c"].into_iter().zip(&servers) {
        tx.send(Ok(Change::Insert(id, Forward::new(server.url()))))
            .unwrap();
    }
    let layer = StickyLayer::new(KeyHash::header("x-user"));
    let gateway = serve_gateway("127.0.0.1:0", layer.sticky(Backends::from_discover(stream))).await;
    let client = client_from(source(80));
    let url = gateway.url();

    let on_a = key_for("a", &["a", "b", "c"]);
    assert_eq!(http_get(&client, &url, &[("x-user", &on_a)]).await.1, "a");

    // Slow requests in flight on "a", then "a" is removed through discovery.
    let slow = format!("{url}/slow?ms=600");
    let in_flight: Vec<_> = (0..5)
        .map(|_| {
            let (client, slow, key) = (client.clone(), slow.clone(), on_a.clone());
            tokio::spawn(async move { http_get(&client, &slow, &[("x-user", &key)]).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    tx.send(Ok(Change::Remove("a"))).unwrap();
    tx.send(Ok(Change::Insert("d", Forward::new(servers[3].url()))))
        .unwrap();

    // The next request applies the changes: "a" is gone, its client moved, "d" takes keys.
    let (_, moved) = http_get(&client, &url, &[("x-user", &on_a)]).await;
    assert!(
        ["b", "c", "d"].contains(&moved.as_str()),
        "moved to {moved}"
    );
    let on_d = key_for("d", &["b", "c", "d"]);
    assert_eq!(http_get(&client, &url, &[("x-user", &on_d)]).await.1, "d");

    // Requests already on "a" finished there, successfully.
    for handle in in_flight {
        assert_eq!(handle.await.unwrap(), (200, "a".to_owned()));
    }
    let mut seen = BTreeSet::new();
    for i in 0..60 {
        seen.insert(
            http_get(&client, &url, &[("x-user", &format!("u{i}"))])
                .await
                .1,
        );
    }
    assert_eq!(seen, ["b", "c", "d"].map(String::from).into());
}

#[tokio::test]
async fn handle_insert_and_remove_while_requests_are_in_flight() {
    let (servers, backends) = three_backends().await;
    let extra = spawn_backend("d").await;
    let handle = backends.handle();
    let layer = StickyLayer::new(KeyHash::header("x-user"));
    let gateway = serve_gateway("127.0.0.1:0", layer.sticky(backends)).await;
    let client = client_from(source(81));
    let url = gateway.url();

    let on_b = key_for("b", &["a", "b", "c"]);
    let slow = format!("{url}/slow?ms=600");
    let in_flight: Vec<_> = (0..5)
        .map(|_| {
            let (client, slow, key) = (client.clone(), slow.clone(), on_b.clone());
            tokio::spawn(async move { http_get(&client, &slow, &[("x-user", &key)]).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(handle.remove("b"));
    handle.insert("d", Forward::new(extra.url()));

    let mut seen = BTreeSet::new();
    for i in 0..60 {
        let (status, body) = http_get(&client, &url, &[("x-user", &format!("u{i}"))]).await;
        assert_eq!(status, 200);
        seen.insert(body);
    }
    assert_eq!(seen, ["a", "c", "d"].map(String::from).into());
    for task in in_flight {
        assert_eq!(task.await.unwrap(), (200, "b".to_owned()));
    }
    drop(servers);
}

#[tokio::test]
async fn no_backends_and_no_healthy_backend_answer_503_with_a_reason() {
    let layer = StickyLayer::new(IpHash::new());
    let empty: Backends<Forward> = Backends::new();
    let gateway = serve_gateway("127.0.0.1:0", layer.sticky(empty.clone())).await;
    let client = client_from(source(90));
    let (status, body) = http_get(&client, &gateway.url(), &[]).await;
    assert_eq!(status, 503);
    assert!(body.contains("no backends configured"), "{body}");

    let (_servers, backends) = three_backends().await;
    let handle = backends.handle();
    let gateway = serve_gateway("127.0.0.1:0", layer.sticky(backends)).await;
    for id in ["a", "b", "c"] {
        handle.set_healthy(id, false).unwrap();
    }
    let started = std::time::Instant::now();
    let (status, body) = http_get(&client, &gateway.url(), &[]).await;
    assert_eq!(status, 503);
    assert!(body.contains("no healthy backend"), "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "503 must not wait"
    );

    // One comes back: it serves everyone.
    handle.set_healthy("b", true).unwrap();
    assert_eq!(
        http_get(&client, &gateway.url(), &[]).await,
        (200, "b".to_owned())
    );
}

#[tokio::test]
async fn an_unhealthy_backend_sends_each_client_to_one_substitute() {
    let (_servers, backends) = three_backends().await;
    let handle = backends.handle();
    let layer = StickyLayer::new(KeyHash::header("x-user"));
    let gateway = serve_gateway("127.0.0.1:0", layer.sticky(backends)).await;
    let client = client_from(source(91));
    let url = gateway.url();

    let users: Vec<String> = (0..60).map(|i| format!("user-{i}")).collect();
    let mut before = BTreeMap::new();
    for u in &users {
        before.insert(u.clone(), http_get(&client, &url, &[("x-user", u)]).await.1);
    }
    handle.set_healthy("a", false).unwrap();
    let mut substitutes = BTreeSet::new();
    for u in &users {
        let now = http_get(&client, &url, &[("x-user", u)]).await.1;
        // Repeat: the substitute is deterministic.
        assert_eq!(http_get(&client, &url, &[("x-user", u)]).await.1, now);
        if before[u] == "a" {
            assert_ne!(now, "a");
            substitutes.insert(now);
        } else {
            assert_eq!(now, before[u], "{u} was not on a but moved");
        }
    }
    assert!(!substitutes.is_empty());
    // Back up: everyone is where they were.
    handle.set_healthy("a", true).unwrap();
    for u in &users {
        assert_eq!(http_get(&client, &url, &[("x-user", u)]).await.1, before[u]);
    }
}

#[tokio::test]
async fn fallback_chain_uses_the_header_else_the_ip() {
    let (_servers, backends) = three_backends().await;
    let layer = StickyLayer::builder()
        .affinity(KeyHash::header("x-user"))
        .fallback(IpHash::new())
        .build();
    let gateway = serve_gateway("127.0.0.1:0", layer.sticky(backends)).await;
    let url = gateway.url();

    // Without the header: by IP, so each source address sticks.
    let mut by_ip = BTreeSet::new();
    for octet in 100..130 {
        let client = client_from(source(octet));
        let (_, first) = http_get(&client, &url, &[]).await;
        assert_eq!(http_get(&client, &url, &[]).await.1, first);
        by_ip.insert(first);
    }
    assert!(by_ip.len() >= 2);
    // With the header: the same user lands on the same backend from any address.
    let expected = http_get(&client_from(source(100)), &url, &[("x-user", "alice")])
        .await
        .1;
    for octet in 101..110 {
        let client = client_from(source(octet));
        assert_eq!(
            http_get(&client, &url, &[("x-user", "alice")]).await.1,
            expected
        );
    }
}

#[tokio::test]
async fn round_robin_honours_weights_and_routed_is_visible_to_handlers_and_outer_layers() {
    let router = |name: &'static str| {
        Router::new().route(
            "/",
            get(move |Extension(routed): Extension<Routed>| async move {
                assert_eq!(routed.backend.as_str(), name);
                format!("{name}:{}", routed.reason)
            }),
        )
    };
    let backends = Backends::new()
        .with("a", router("a"))
        .with_weight("b", router("b"), 3)
        .unwrap();
    let sticky = StickyLayer::new(RoundRobin::new()).sticky(backends);
    let gateway = serve_gateway("127.0.0.1:0", sticky).await;
    let client = client_from(source(140));
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..40 {
        let (status, body) = http_get(&client, &gateway.url(), &[]).await;
        assert_eq!(status, 200);
        *counts.entry(body).or_default() += 1;
    }
    assert_eq!(counts.get("a:balanced"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("b:balanced"), Some(&30), "{counts:?}");

    // In process: the response carries the choice for outer layers.
    use tower::{Service, ServiceExt};
    let mut sticky = StickyLayer::new(KeyHash::header("x-user"))
        .sticky(Backends::new().with("only", router("only")));
    let req = http::Request::builder()
        .uri("/")
        .header("x-user", "bob")
        .body(axum::body::Body::empty())
        .unwrap();
    let res = ServiceExt::<http::Request<axum::body::Body>>::ready(&mut sticky)
        .await
        .unwrap()
        .call(req)
        .await
        .unwrap();
    let routed = res.extensions().get::<Routed>().unwrap();
    assert_eq!(routed.backend.as_str(), "only");
    assert_eq!(routed.strategy, "key-hash");
}

#[tokio::test]
async fn zero_weight_is_a_clear_error() {
    let err = Backends::new()
        .with_weight("a", Forward::new("http://127.0.0.1:1".into()), 0)
        .unwrap_err();
    assert!(
        err.to_string().contains("weight must be at least 1"),
        "{err}"
    );
    let backends: Backends<Forward> = Backends::new();
    let handle = backends.handle();
    assert!(
        handle
            .insert_weighted("x", Forward::new("http://127.0.0.1:1".into()), 0)
            .is_err()
    );
    assert!(backends.is_empty());
    assert!(handle.set_weight("missing", 2).is_err());
}
