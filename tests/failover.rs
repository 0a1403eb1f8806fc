//! Failover over real HTTP on loopback with remote `HttpBackend`s: a backend killed under load
//! and restarted, unsent requests retried, replay of idempotent requests, all backends down,
//! membership changes under load.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

use support::backend::{
    http_backend, http_backends, key_for, refused_addr, spawn_dropper, spawn_full,
};
use support::http::{TestServer, client_from, get as http_get, serve_gateway};
use tokio::time::timeout;
use tower_sticky::StickyLayer;
use tower_sticky::affinity::KeyHash;
use tower_sticky::health::{ActiveHealth, HealthState, PassiveHealth};

#[derive(Debug, Default)]
struct Seen {
    /// (phase the request ran in, or `u8::MAX` if it straddled a change; user; status; backend
    /// that answered)
    rows: Vec<(u8, String, u16, String)>,
}

/// Clients that each send requests as user `user-*` until `stop` is set, recording what they
/// saw. Bounded: at most `max_each` requests per client.
fn start_clients(
    url: String,
    users: Vec<String>,
    phase: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    max_each: usize,
) -> Vec<tokio::task::JoinHandle<Seen>> {
    users
        .into_iter()
        .enumerate()
        .map(|(i, user)| {
            let (url, phase, stop) = (url.clone(), phase.clone(), stop.clone());
            tokio::spawn(async move {
                let client = client_from([127, 0, 1, i as u8 + 1].into());
                let mut seen = Seen::default();
                for _ in 0..max_each {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let started_in = phase.load(Ordering::Relaxed);
                    let res = client.get(&url).header("x-user", &user).send().await;
                    let (status, body) = match res {
                        Ok(res) => (res.status().as_u16(), res.text().await.unwrap_or_default()),
                        Err(e) => (0, e.to_string()),
                    };
                    // A request that straddles a phase change belongs to no phase.
                    let phase = if phase.load(Ordering::Relaxed) == started_in {
                        started_in
                    } else {
                        u8::MAX
                    };
                    seen.rows.push((phase, user.clone(), status, body));
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                seen
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_costs_no_errors_its_clients_move_to_one_substitute_and_probes_readmit_it()
{
    let ids = ["a", "b", "c"];
    let mut servers: BTreeMap<&str, TestServer> = BTreeMap::new();
    for id in ids {
        servers.insert(id, spawn_full("127.0.0.1:0", id).await.0);
    }
    let a_addr = servers["a"].addr;
    let backends = http_backends(&ids.map(|id| (id, servers[id].url())))
        .with_active_health(
            ActiveHealth::http_get("/healthz")
                .unwrap()
                .interval(Duration::from_millis(100))
                .timeout(Duration::from_millis(300))
                .rise(2)
                .fall(2),
        )
        .unwrap();
    let stats = backends.clone();
    // Unsent requests (connect refused) are always retried. A GET written onto a keep-alive
    // connection at the instant the dying server closes it was sent: like nginx's
    // `proxy_next_upstream`, it is replayed only because GET is idempotent and we opt in.
    let layer = StickyLayer::builder()
        .affinity(KeyHash::header("x-user"))
        .passive_health(PassiveHealth::consecutive_failures(1).backoff(Duration::from_millis(200)))
        .retry_idempotent(64 * 1024)
        .build();
    let gateway = serve_gateway("127.0.0.1:0", layer.sticky(backends)).await;

    // Four users on each backend.
    let users: Vec<String> = ids
        .iter()
        .flat_map(|id| (0..4).map(move |n| key_for(id, &ids, n)))
        .collect();
    let phase = Arc::new(AtomicU8::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let clients = start_clients(
        gateway.url(),
        users.clone(),
        phase.clone(),
        stop.clone(),
        2_000,
    );

    tokio::time::sleep(Duration::from_millis(300)).await;
    // Kill "a" under load.
    phase.store(1, Ordering::Relaxed);
    servers.remove("a").unwrap().stop().await;
    phase.store(2, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        !stats.stats().backend("a").unwrap().health.is_routable(),
        "a is dead: not routable"
    );

    // Restart it on the same port: the probes readmit it.
    phase.store(3, Ordering::Relaxed);
    let (restarted, probes) = spawn_full(&a_addr.to_string(), "a").await;
    timeout(Duration::from_secs(10), async {
        while stats.stats().backend("a").unwrap().health != HealthState::Healthy {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("active probes readmit the restarted backend");
    assert!(probes.load(Ordering::Relaxed) >= 2);
    phase.store(4, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);

    let mut rows = Vec::new();
    for client in clients {
        rows.extend(
            timeout(Duration::from_secs(30), client)
                .await
                .unwrap()
                .unwrap()
                .rows,
        );
    }
    let errors: Vec<_> = rows.iter().filter(|r| r.2 != 200).collect();
    assert!(errors.is_empty(), "client-visible errors: {errors:?}");
    // Per user and phase: the set of backends that answered.
    let mut by: BTreeMap<(&str, u8), BTreeSet<&str>> = BTreeMap::new();
    for (phase, user, _, backend) in &rows {
        by.entry((user.as_str(), *phase))
            .or_default()
            .insert(backend);
    }
    let mut substitutes = BTreeSet::new();
    for (i, user) in users.iter().enumerate() {
        let home = ids[i / 4];
        assert_eq!(
            by[&(user.as_str(), 0)],
            BTreeSet::from([home]),
            "{user} before"
        );
        let dead = &by[&(user.as_str(), 2)];
        if home == "a" {
            assert_eq!(dead.len(), 1, "{user} spread over {dead:?}");
            assert!(!dead.contains("a"));
            substitutes.extend(dead.iter().copied());
            // While it was being killed or restarted: home or that one substitute, nothing else.
            for p in [1, 3, u8::MAX] {
                if let Some(seen) = by.get(&(user.as_str(), p)) {
                    assert!(
                        seen.iter().all(|b| *b == "a" || dead.contains(b)),
                        "{seen:?}"
                    );
                }
            }
        } else {
            assert_eq!(
                dead,
                &BTreeSet::from([home]),
                "{user} was not on a but moved"
            );
        }
        assert_eq!(
            by[&(user.as_str(), 4)],
            BTreeSet::from([home]),
            "{user} after restart"
        );
    }
    assert!(!substitutes.is_empty());
    let a = stats.stats();
    let a = a.backend("a").unwrap();
    assert!(a.errors >= 1 && a.ejections >= 1, "{a:?}");
    drop(restarted);
}

#[tokio::test]
async fn an_unsent_post_is_retried_with_its_body_on_the_next_candidate() {
    let dead = refused_addr().await;
    let (live, _) = spawn_full("127.0.0.1:0", "b").await;
    let backends = http_backends(&[("a", format!("http://{dead}")), ("b", live.url())]);
    let stats = backends.clone();
    let retrying = StickyLayer::new(KeyHash::header("x-user")).sticky(backends.clone());
    let not_retrying = StickyLayer::builder()
        .affinity(KeyHash::header("x-user"))
        .retry_not_sent(false)
        .build()
        .sticky(backends);
    let gateway = serve_gateway("127.0.0.1:0", retrying).await;
    let strict = serve_gateway("127.0.0.1:0", not_retrying).await;
    let client = client_from([127, 0, 2, 1].into());
    let on_a = key_for("a", &["a", "b"], 0);

    for n in 0..3 {
        let res = client
            .post(format!("{}/echo", gateway.url()))
            .header("x-user", &on_a)
            .body(format!("payload-{n}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(
            res.text().await.unwrap(),
            format!("b POST /echo payload-{n}")
        );
    }
    let s = stats.stats();
    let (a, b) = (s.backend("a").unwrap(), s.backend("b").unwrap());
    assert_eq!((a.requests, a.errors, a.responses), (3, 3, 0));
    assert_eq!((b.requests, b.responses, b.reassignments), (3, 3, 3));

    // Retries off: the client gets a 502 that names the backend.
    let (status, body) = http_get(&client, &strict.url(), &[("x-user", &on_a)]).await;
    assert_eq!(status, 502);
    assert!(
        body.contains("backend a") && body.contains("not sent"),
        "{body}"
    );
}

#[tokio::test]
async fn a_sent_then_failed_request_is_replayed_only_when_idempotent_and_opted_in() {
    let (dropper, dropped, _task) = spawn_dropper().await;
    let (live, _) = spawn_full("127.0.0.1:0", "b").await;
    let backends = || http_backends(&[("a", format!("http://{dropper}")), ("b", live.url())]);
    let replaying = StickyLayer::builder()
        .affinity(KeyHash::header("x-user"))
        .retry_idempotent(1024)
        .build();
    let gateway = serve_gateway("127.0.0.1:0", replaying.sticky(backends())).await;
    let plain = serve_gateway(
        "127.0.0.1:0",
        StickyLayer::new(KeyHash::header("x-user")).sticky(backends()),
    )
    .await;
    let client = client_from([127, 0, 2, 2].into());
    let on_a = key_for("a", &["a", "b"], 0);
    let user = [("x-user", on_a.as_str())];

    // GET is idempotent and opted in: replayed on b after a dropped it.
    let (status, body) = http_get(&client, &format!("{}/echo", gateway.url()), &user).await;
    assert_eq!((status, body.as_str()), (200, "b GET /echo "));
    let put = client
        .put(format!("{}/echo", gateway.url()))
        .header("x-user", &on_a)
        .body("small")
        .send()
        .await
        .unwrap();
    assert_eq!(put.text().await.unwrap(), "b PUT /echo small");
    // POST is not idempotent: the failure reaches the client.
    let post = client
        .post(format!("{}/echo", gateway.url()))
        .header("x-user", &on_a)
        .body("once")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 502);
    // Not opted in: GET is not replayed either.
    let (status, _) = http_get(&client, &format!("{}/echo", plain.url()), &user).await;
    assert_eq!(status, 502);
    assert_eq!(
        dropped.load(Ordering::Relaxed),
        4,
        "a saw every request once"
    );
}

#[tokio::test]
async fn all_backends_down_answers_503_at_once_without_trying_them_again() {
    let mut list = Vec::new();
    for id in ["a", "b", "c"] {
        list.push((id, format!("http://{}", refused_addr().await)));
    }
    let backends = http_backends(&list);
    let stats = backends.clone();
    let layer = StickyLayer::builder()
        .affinity(KeyHash::header("x-user"))
        .passive_health(PassiveHealth::consecutive_failures(1).backoff(Duration::from_secs(30)))
        .build();
    let gateway = serve_gateway("127.0.0.1:0", layer.sticky(backends)).await;
    let client = client_from([127, 0, 2, 3].into());

    // The first request tries every backend (each refused), then gives up with a 503.
    let (status, body) = timeout(
        Duration::from_secs(5),
        http_get(&client, &gateway.url(), &[("x-user", "u")]),
    )
    .await
    .unwrap();
    assert_eq!(status, 503);
    assert!(body.contains("no healthy backend"), "{body}");
    let attempts = stats.stats().total(|b| b.requests);
    assert_eq!(attempts, 3);
    // All ejected now: later requests are answered without touching any backend.
    for user in ["u", "v", "w"] {
        let (status, body) = timeout(
            Duration::from_secs(2),
            http_get(&client, &gateway.url(), &[("x-user", user)]),
        )
        .await
        .unwrap();
        assert_eq!(status, 503);
        assert!(body.contains("no healthy backend"), "{body}");
    }
    assert_eq!(stats.stats().total(|b| b.requests), attempts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_a_backend_under_load_fails_no_request_and_removing_one_lets_in_flight_finish() {
    let ids = ["a", "b", "c"];
    let mut servers = Vec::new();
    for id in ids {
        servers.push(spawn_full("127.0.0.1:0", id).await.0);
    }
    let (extra, _) = spawn_full("127.0.0.1:0", "d").await;
    let backends = http_backends(&[
        ("a", servers[0].url()),
        ("b", servers[1].url()),
        ("c", servers[2].url()),
    ]);
    let handle = backends.handle();
    let stats = backends.clone();
    let gateway = serve_gateway(
        "127.0.0.1:0",
        StickyLayer::new(KeyHash::header("x-user")).sticky(backends),
    )
    .await;
    let users: Vec<String> = (0..16).map(|i| format!("load-{i}")).collect();
    let phase = Arc::new(AtomicU8::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let clients = start_clients(gateway.url(), users, phase.clone(), stop.clone(), 2_000);

    // Slow requests in flight on b.
    let on_b = key_for("b", &ids, 0);
    let client = client_from([127, 0, 2, 4].into());
    let slow: Vec<_> = (0..4)
        .map(|_| {
            let (client, url, key) = (
                client.clone(),
                format!("{}/slow?ms=500", gateway.url()),
                on_b.clone(),
            );
            tokio::spawn(async move { http_get(&client, &url, &[("x-user", &key)]).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(stats.stats().backend("b").unwrap().in_flight >= 4);

    handle.insert("d", http_backend("d", &extra.url()));
    phase.store(1, Ordering::Relaxed);
    assert!(handle.remove("b"));
    phase.store(2, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.store(true, Ordering::Relaxed);

    for task in slow {
        assert_eq!(
            task.await.unwrap(),
            (200, "b".to_owned()),
            "in-flight request finished on b"
        );
    }
    let mut seen_after = BTreeSet::new();
    let mut total = 0;
    for client in clients {
        for (phase, _, status, backend) in timeout(Duration::from_secs(30), client)
            .await
            .unwrap()
            .unwrap()
            .rows
        {
            assert_eq!(status, 200, "a request failed during the change: {backend}");
            total += 1;
            if phase == 2 {
                seen_after.insert(backend);
            }
        }
    }
    assert!(total > 16);
    assert!(!seen_after.contains("b"), "{seen_after:?}");
    assert!(
        seen_after.contains("d"),
        "the new backend takes clients: {seen_after:?}"
    );
}
