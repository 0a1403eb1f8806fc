//! Health over real HTTP on loopback: slow and hung backends (timeouts count as failures and
//! eject), active probes (closure, task stops with the last clone), panic threshold, draining.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use support::backend::{http_backends, key_for, spawn_full, spawn_hung};
use support::http::{client_from, get as http_get, serve_gateway};
use tokio::time::timeout;
use tower_sticky::affinity::KeyHash;
use tower_sticky::health::{ActiveHealth, HealthState, PassiveHealth};
use tower_sticky::http_backend::HttpBackend;
use tower_sticky::{Backends, StickyLayer};

#[tokio::test]
async fn a_hung_backend_times_out_counts_as_failing_and_is_ejected_without_hanging_anyone() {
    let (hung, _, _task) = spawn_hung().await;
    let (good, _) = spawn_full("127.0.0.1:0", "b").await;
    let slow = HttpBackend::builder(&format!("http://{hung}"))
        .name("a")
        .request_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let backends = Backends::new()
        .with("a", slow)
        .with("b", HttpBackend::new(&good.url()).unwrap());
    let stats = backends.clone();
    let layer = StickyLayer::builder()
        .affinity(KeyHash::header("x-user"))
        .passive_health(PassiveHealth::consecutive_failures(2).backoff(Duration::from_secs(30)))
        .build();
    let gateway = serve_gateway("127.0.0.1:0", layer.sticky(backends)).await;
    let client = client_from([127, 0, 3, 1].into());
    let on_a = key_for("a", &["a", "b"], 0);
    let on_b = key_for("b", &["a", "b"], 0);

    // Meanwhile b's clients are served, whatever a does.
    let other = {
        let (client, url, key) = (client.clone(), gateway.url(), on_b.clone());
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..10 {
                statuses.push(http_get(&client, &url, &[("x-user", &key)]).await.0);
            }
            statuses
        })
    };
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let (status, body) = timeout(
            Duration::from_secs(5),
            http_get(&client, &gateway.url(), &[("x-user", &on_a)]),
        )
        .await
        .expect("the balancer never hangs");
        statuses.push((status, body));
    }
    assert_eq!(statuses[0].0, 504, "{statuses:?}");
    assert!(statuses[0].1.contains("backend a"), "{statuses:?}");
    assert_eq!(statuses[1].0, 504);
    // Two timeouts ejected a: its client now goes straight to b.
    assert_eq!(statuses[2], (200, "b".to_owned()));
    assert_eq!(other.await.unwrap(), vec![200; 10]);
    let s = stats.stats();
    let a = s.backend("a").unwrap();
    assert_eq!((a.requests, a.errors, a.ejections), (2, 2, 1));
    assert!(
        matches!(a.health, HealthState::Ejected { .. }),
        "{:?}",
        a.health
    );
}

#[tokio::test]
async fn a_slow_backend_that_answers_in_time_is_not_a_failure() {
    let (server, _) = spawn_full("127.0.0.1:0", "a").await;
    let backends = Backends::new().with(
        "a",
        HttpBackend::builder(&server.url())
            .request_timeout(Duration::from_secs(5))
            .build()
            .unwrap(),
    );
    let stats = backends.clone();
    let layer = StickyLayer::builder()
        .affinity(KeyHash::header("x-user"))
        .passive_health(PassiveHealth::consecutive_failures(1))
        .build();
    let gateway = serve_gateway("127.0.0.1:0", layer.sticky(backends)).await;
    let client = client_from([127, 0, 3, 2].into());
    let (status, body) = http_get(&client, &format!("{}/slow?ms=300", gateway.url()), &[]).await;
    assert_eq!((status, body.as_str()), (200, "a"));
    let s = stats.stats();
    let a = s.backend("a").unwrap();
    assert_eq!((a.errors, a.health), (0, HealthState::Healthy));
    assert!(
        a.latency.max >= Duration::from_millis(300),
        "{:?}",
        a.latency
    );
}

#[tokio::test]
async fn a_check_closure_marks_backends_down_and_up_with_rise_and_fall() {
    let (a, _) = spawn_full("127.0.0.1:0", "a").await;
    let (b, _) = spawn_full("127.0.0.1:0", "b").await;
    let a_up = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&a_up);
    let backends = http_backends(&[("a", a.url()), ("b", b.url())])
        .with_active_health(
            ActiveHealth::check(move |id| {
                let up = id.as_str() != "a" || flag.load(Ordering::Relaxed);
                async move { up }
            })
            .interval(Duration::from_millis(30))
            .rise(2)
            .fall(2),
        )
        .unwrap();
    let stats = backends.clone();
    let gateway = serve_gateway(
        "127.0.0.1:0",
        StickyLayer::new(KeyHash::header("x-user")).sticky(backends),
    )
    .await;
    let client = client_from([127, 0, 3, 3].into());
    let on_a = key_for("a", &["a", "b"], 0);
    let wait_for = |state: HealthState| {
        let stats = stats.clone();
        async move {
            timeout(Duration::from_secs(5), async {
                while stats.stats().backend("a").unwrap().health != state {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await
            .expect("probes change the state")
        }
    };
    assert_eq!(
        http_get(&client, &gateway.url(), &[("x-user", &on_a)])
            .await
            .1,
        "a"
    );
    a_up.store(false, Ordering::Relaxed);
    wait_for(HealthState::Down).await;
    assert_eq!(
        http_get(&client, &gateway.url(), &[("x-user", &on_a)])
            .await
            .1,
        "b"
    );
    a_up.store(true, Ordering::Relaxed);
    wait_for(HealthState::Healthy).await;
    assert_eq!(
        http_get(&client, &gateway.url(), &[("x-user", &on_a)])
            .await
            .1,
        "a"
    );
}

#[tokio::test]
async fn the_probe_task_stops_when_the_last_clone_is_dropped() {
    let (server, probes) = spawn_full("127.0.0.1:0", "a").await;
    let backends = http_backends(&[("a", server.url())])
        .with_active_health(
            ActiveHealth::http_get("/healthz")
                .unwrap()
                .interval(Duration::from_millis(20)),
        )
        .unwrap();
    let sticky = StickyLayer::new(KeyHash::header("x-user")).sticky(backends.clone());
    let handle = backends.handle();
    timeout(Duration::from_secs(5), async {
        while probes.load(Ordering::Relaxed) < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("probes run");
    drop((backends, sticky.clone()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        probes.load(Ordering::Relaxed) > 3,
        "still running while a clone lives"
    );
    drop((sticky, handle));
    // At most one round already under way may still land.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after = probes.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(probes.load(Ordering::Relaxed), after, "the task stopped");
}

#[tokio::test]
async fn below_the_panic_threshold_health_is_ignored() {
    let (a, _) = spawn_full("127.0.0.1:0", "a").await;
    let (b, _) = spawn_full("127.0.0.1:0", "b").await;
    let (c, _) = spawn_full("127.0.0.1:0", "c").await;
    let list = [("a", a.url()), ("b", b.url()), ("c", c.url())];
    let ids = ["a", "b", "c"];
    let panicky = http_backends(&list);
    let plain = http_backends(&list);
    for set in [&panicky, &plain] {
        set.handle().set_healthy("a", false).unwrap();
        set.handle().set_healthy("b", false).unwrap();
    }
    let with_panic = serve_gateway(
        "127.0.0.1:0",
        StickyLayer::builder()
            .affinity(KeyHash::header("x-user"))
            .panic_threshold(0.5)
            .build()
            .sticky(panicky.clone()),
    )
    .await;
    let without = serve_gateway(
        "127.0.0.1:0",
        StickyLayer::new(KeyHash::header("x-user")).sticky(plain),
    )
    .await;
    let client = client_from([127, 0, 3, 4].into());
    let on_a = key_for("a", &ids, 0);
    // 1 of 3 healthy < 50 %: route as if all were healthy.
    assert_eq!(
        http_get(&client, &with_panic.url(), &[("x-user", &on_a)])
            .await
            .1,
        "a"
    );
    assert_eq!(
        http_get(&client, &without.url(), &[("x-user", &on_a)])
            .await
            .1,
        "c"
    );
    // 2 of 3 healthy >= 50 %: health counts again.
    panicky.handle().set_healthy("b", true).unwrap();
    assert_ne!(
        http_get(&client, &with_panic.url(), &[("x-user", &on_a)])
            .await
            .1,
        "a"
    );
}

#[tokio::test]
async fn a_draining_backend_keeps_its_sticky_clients_and_takes_no_new_ones() {
    let (a, _) = spawn_full("127.0.0.1:0", "a").await;
    let (b, _) = spawn_full("127.0.0.1:0", "b").await;
    let backends = http_backends(&[("a", a.url()), ("b", b.url())]);
    backends.handle().set_draining("a", true).unwrap();
    let stats = backends.clone();
    let gateway = serve_gateway(
        "127.0.0.1:0",
        StickyLayer::new(KeyHash::header("x-user")).sticky(backends),
    )
    .await;
    let client = client_from([127, 0, 3, 5].into());
    let on_a = key_for("a", &["a", "b"], 0);
    for _ in 0..5 {
        assert_eq!(
            http_get(&client, &gateway.url(), &[("x-user", &on_a)])
                .await
                .1,
            "a"
        );
    }
    // Clients without a key are balanced, and never onto the draining backend.
    for _ in 0..10 {
        assert_eq!(http_get(&client, &gateway.url(), &[]).await.1, "b");
    }
    assert!(stats.stats().backend("a").unwrap().draining);
}
