//! `examples/gateway.rs` run as a user would: a spawned process in front of real backends on
//! loopback, driven by HTTP clients with cookie jars and their own source addresses.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::cookie::set_cookie_value;
use support::http::{TestServer, client_from, get as http_get, spawn_backend};
use support::programs::{Program, free_addr, run_to_end, wait_http};

struct Setup {
    backends: Vec<TestServer>,
    gateway: Program,
    url: String,
}

async fn start(strategy: &str, extra: &[&str]) -> Setup {
    let backends = vec![
        spawn_backend("a").await,
        spawn_backend("b").await,
        spawn_backend("c").await,
    ];
    let listen = free_addr();
    let mut args = vec![
        "--listen".to_string(),
        listen.to_string(),
        "--strategy".into(),
        strategy.into(),
        "--threads".into(),
        "1".into(),
    ];
    for (id, server) in ["a", "b", "c"].iter().zip(&backends) {
        args.push("--backend".into());
        args.push(format!("{id}={}", server.url()));
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let gateway = Program::start("gateway", &args);
    wait_http(listen).await;
    Setup {
        backends,
        gateway,
        url: format!("http://{listen}"),
    }
}

fn jar_client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn body(client: &reqwest::Client, url: &str) -> (u16, String) {
    let res = client.get(url).send().await.expect("sent");
    (res.status().as_u16(), res.text().await.unwrap())
}

#[tokio::test]
async fn cookie_strategies_keep_each_client_on_one_backend_and_spread_clients() {
    for (strategy, extra) in [
        ("cookie-pinned", None),
        ("cookie-hashed", None),
        ("cookie-pinned", Some("--cookie-indirect")),
    ] {
        let key = std::env::temp_dir().join(format!("gw-key-{}-{strategy}", std::process::id()));
        let _ = std::fs::remove_file(&key);
        let mut flags = vec!["--cookie-key-file", key.to_str().unwrap()];
        flags.extend(extra);
        let setup = start(strategy, &flags).await;
        let mut homes = BTreeSet::new();
        for _ in 0..12 {
            let client = jar_client();
            let (status, first) = body(&client, &setup.url).await;
            assert_eq!(status, 200);
            for _ in 0..5 {
                assert_eq!(
                    body(&client, &setup.url).await.1,
                    first,
                    "{strategy}: client moved"
                );
            }
            homes.insert(first);
        }
        assert!(homes.len() >= 2, "{strategy}: 12 clients all on {homes:?}");
        // The key file was created with mode 0600.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let _ = std::fs::remove_file(&key);
    }
}

#[tokio::test]
async fn a_tampered_cookie_is_not_obeyed_and_gets_a_fresh_one() {
    let setup = start("cookie-pinned", &["--cookie-name", "srv"]).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let res = client.get(&setup.url).send().await.unwrap();
    let set_cookie = res.headers()["set-cookie"].to_str().unwrap().to_owned();
    let home = res.text().await.unwrap();
    let value = set_cookie_value(&set_cookie, "srv").expect("it sets srv");

    // The genuine cookie is obeyed and not re-set.
    let res = client
        .get(&setup.url)
        .header("cookie", format!("srv={value}"))
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("set-cookie").is_none());
    assert_eq!(res.text().await.unwrap(), home);

    // Forged ones: a plain id, a flipped character, a truncation.
    let mut flipped = value.clone().into_bytes();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    let forged = [
        "b".to_owned(),
        "c".to_owned(),
        String::from_utf8(flipped).unwrap(),
        value[..value.len() / 2].to_owned(),
    ];
    for forged in forged {
        let res = client
            .get(&setup.url)
            .header("cookie", format!("srv={forged}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let fresh = res
            .headers()
            .get("set-cookie")
            .map(|v| v.to_str().unwrap().to_owned());
        assert!(fresh.is_some(), "forged cookie {forged:?} was accepted");
        assert!(fresh.unwrap().starts_with("srv="));
    }
    // A plain "c" never chooses c: over many tries the backends follow the gateway's assignment,
    // so not every one of them is c.
    let mut seen = BTreeSet::new();
    for _ in 0..9 {
        let res = client
            .get(&setup.url)
            .header("cookie", "srv=c")
            .send()
            .await
            .unwrap();
        seen.insert(res.text().await.unwrap());
    }
    assert!(
        seen.len() > 1,
        "a forged 'srv=c' routed every time to {seen:?}"
    );
}

#[tokio::test]
async fn ip_ring_ignores_forwarded_for_from_an_untrusted_peer_and_sticks_per_address() {
    let setup = start("ip-ring", &["--trusted-proxy", "10.0.0.0/8"]).await;
    let mut homes = BTreeSet::new();
    for octet in 20..40u8 {
        let client = client_from(IpAddr::from([127, 0, 0, octet]));
        let (_, home) = http_get(&client, &setup.url, &[]).await;
        for spoof in ["1.1.1.1", "8.8.8.8, 9.9.9.9"] {
            assert_eq!(
                http_get(&client, &setup.url, &[("x-forwarded-for", spoof)])
                    .await
                    .1,
                home
            );
        }
        homes.insert(home);
    }
    assert_eq!(
        homes.len(),
        3,
        "20 addresses should reach all three backends"
    );
}

#[tokio::test]
async fn header_strategy_and_round_robin() {
    let setup = start("header:X-User", &[]).await;
    let client = client_from(IpAddr::from([127, 0, 0, 1]));
    let mut by_user = BTreeMap::new();
    for i in 0..30 {
        let user = format!("user-{i}");
        let (_, home) = http_get(&client, &setup.url, &[("x-user", &user)]).await;
        assert_eq!(
            http_get(&client, &setup.url, &[("x-user", &user)]).await.1,
            home
        );
        by_user.insert(user, home);
    }
    let distinct: BTreeSet<_> = by_user.values().collect();
    assert_eq!(distinct.len(), 3);
    drop(setup);

    let setup = start("round-robin", &[]).await;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..30 {
        *counts
            .entry(http_get(&client, &setup.url, &[]).await.1)
            .or_default() += 1;
    }
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        [10, 10, 10],
        "{counts:?}"
    );
}

#[tokio::test]
async fn killing_a_backend_moves_its_clients_with_no_errors_and_metrics_count_it() {
    let metrics = free_addr();
    let mut setup = start(
        "cookie-pinned",
        &[
            "--health-path",
            "/",
            "--health-interval",
            "200ms",
            "--metrics-listen",
            &metrics.to_string(),
        ],
    )
    .await;
    // Clients, each with its own jar, pinned somewhere.
    let clients: Vec<reqwest::Client> = (0..15).map(|_| jar_client()).collect();
    let mut homes = Vec::new();
    for client in &clients {
        let (status, home) = body(client, &setup.url).await;
        assert_eq!(status, 200);
        homes.push(home);
    }
    let victim = homes[0].clone();
    let index = ["a", "b", "c"].iter().position(|id| *id == victim).unwrap();
    let server = setup.backends.remove(index);
    server.stop().await;

    // Every request still succeeds; the victim's clients each settle on one other backend.
    let errors = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(20);
    for (client, home) in clients.iter().zip(&homes) {
        let mut seen = BTreeSet::new();
        for _ in 0..6 {
            let (status, now) = body(client, &setup.url).await;
            if status != 200 {
                errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            seen.insert(now);
        }
        if *home == victim {
            assert_eq!(seen.len(), 1, "a moved client bounced: {seen:?}");
            assert!(!seen.contains(&victim));
        } else {
            assert_eq!(
                seen,
                [home.clone()].into(),
                "a client of a live backend moved"
            );
        }
        assert!(Instant::now() < deadline);
    }
    assert_eq!(errors.load(std::sync::atomic::Ordering::Relaxed), 0);

    // The Prometheus endpoint shows the backends and the moves.
    let text = reqwest::get(format!("http://{metrics}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("# TYPE tower_sticky_requests_total counter"),
        "{text}"
    );
    for id in ["a", "b", "c"] {
        assert!(
            text.contains(&format!("tower_sticky_requests_total{{backend=\"{id}\"}}")),
            "{text}"
        );
    }
    let reassigned: f64 = text
        .lines()
        .filter(|l| l.starts_with("tower_sticky_reassignments_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(reassigned >= 1.0, "{text}");
}

#[tokio::test]
async fn all_backends_down_gives_a_quick_5xx_with_a_body() {
    let mut setup = start(
        "ip-ring",
        &["--health-path", "/", "--health-interval", "200ms"],
    )
    .await;
    for server in setup.backends.drain(..) {
        server.stop().await;
    }
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for _ in 0..5 {
        let started = Instant::now();
        let res = client.get(&setup.url).send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        assert!((500..600).contains(&status), "{status}");
        assert!(!text.trim().is_empty());
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "took {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn sigterm_lets_requests_in_flight_finish() {
    let setup = start("round-robin", &[]).await;
    let client = client_from(IpAddr::from([127, 0, 0, 1]));
    let slow = {
        let (client, url) = (client.clone(), format!("{}/slow?ms=800", setup.url));
        tokio::spawn(async move { http_get(&client, &url, &[]).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    setup.gateway.terminate();
    let (status, _) = slow.await.unwrap();
    assert_eq!(status, 200, "the request in flight was cut off");
    let output = setup.gateway.wait(Duration::from_secs(10));
    assert!(output.status.success(), "{output:?}");
}

#[test]
fn bad_flags_give_a_clear_message_and_a_non_zero_exit() {
    let cases: [(&[&str], &str); 7] = [
        (&["--backend", "a=http://127.0.0.1:1"], "--listen"),
        (&["--listen", "127.0.0.1:0"], "--backend"),
        (
            &["--listen", "nonsense", "--backend", "a=http://127.0.0.1:1"],
            "--listen",
        ),
        (
            &["--listen", "127.0.0.1:0", "--backend", "no-equals-sign"],
            "ID=URL",
        ),
        (
            &[
                "--listen",
                "127.0.0.1:0",
                "--backend",
                "a=http://127.0.0.1:1",
                "--strategy",
                "magic",
            ],
            "--strategy",
        ),
        (
            &[
                "--listen",
                "127.0.0.1:0",
                "--backend",
                "a=http://127.0.0.1:1",
                "--forwarded-headers",
                "some",
            ],
            "--forwarded-headers",
        ),
        (
            &[
                "--listen",
                "127.0.0.1:0",
                "--backend",
                "a=http://127.0.0.1:1",
                "--health-interval",
                "soon",
            ],
            "duration",
        ),
    ];
    for (args, expected) in cases {
        let output = run_to_end("gateway", args, Duration::from_secs(20));
        assert_eq!(output.status.code(), Some(2), "{args:?}: {output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(stderr.contains("usage:"), "{args:?}: {stderr}");
    }
    // A bad CIDR and a bad backend URL are refused at start, with exit 1 and the reason.
    let output = run_to_end(
        "gateway",
        &[
            "--listen",
            "127.0.0.1:0",
            "--backend",
            "a=http://127.0.0.1:1",
            "--strategy",
            "ip-ring",
            "--trusted-proxy",
            "10.0.0.0/99",
        ],
        Duration::from_secs(20),
    );
    assert_ne!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stderr).contains("10.0.0.0/99"));
    let output = run_to_end(
        "gateway",
        &["--listen", "127.0.0.1:0", "--backend", "a=ftp://example"],
        Duration::from_secs(20),
    );
    assert_ne!(output.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("a=ftp://example"),
        "{output:?}"
    );
    let _: SocketAddr = free_addr();
}
