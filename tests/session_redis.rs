//! Redis-specific behaviour with a `redis-server` each test starts itself: outages give a clear
//! 503 and recover without restarting the app, TTLs are always set, one round trip to read and
//! one to write.
#![cfg(feature = "redis")]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use tower_sticky::session::{Expiry, RedisStore, SessionId, SessionStore, StoreError};

use support::http::serve_router;
use support::redis_server::RedisServer;
use support::session_app::{User, app, layer};

async fn raw(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection")
}

/// Polls until `f` yields `Some`, or panics after `limit`.
async fn eventually<T, F, Fut>(limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_gives_503_then_recovers_without_restarting_the_app() {
    let mut redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url()).await.expect("connect");
    let server = serve_router("127.0.0.1:0", app("a", layer(Arc::new(store.clone())))).await;
    let mut user = User::new();
    user.post_ok(&format!("{}/login?key=alice", server.url()))
        .await;
    assert_eq!(
        user.get_ok(&format!("{}/whoami", server.url())).await,
        "a:alice"
    );

    redis.kill();
    // The handler's `?` on the typed error becomes a 503 with a clear body; quickly, no hang.
    for path in ["/whoami", "/cart"] {
        let started = Instant::now();
        let (status, body) = user.get(&format!("{}{path}", server.url())).await;
        assert_eq!(status, 503, "{path}: {body}");
        assert_eq!(body, "503 Service Unavailable: session store unavailable\n");
        assert!(started.elapsed() < Duration::from_secs(5), "failed fast");
    }
    let (status, _) = user
        .post(&format!("{}/set?key=x&value=1", server.url()))
        .await;
    assert_eq!(status, 503);
    // The store itself reports a typed error.
    let id = SessionId::generate();
    assert!(matches!(
        store.load(&id).await,
        Err(StoreError::Unavailable(_))
    ));

    redis.restart();
    // Same app, same store: it reconnects by itself. (The restarted Redis is empty.)
    let url = server.url();
    eventually(Duration::from_secs(15), || {
        let mut u = user.clone();
        let url = url.clone();
        async move { (u.get(&format!("{url}/whoami")).await.0 == 200).then_some(()) }
    })
    .await;
    user.post_ok(&format!("{}/login?key=bob", server.url()))
        .await;
    assert_eq!(
        user.get_ok(&format!("{}/whoami", server.url())).await,
        "a:bob"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_that_fails_after_the_handler_is_a_503_not_a_silent_loss() {
    let mut redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url()).await.expect("connect");
    let server = serve_router("127.0.0.1:0", app("a", layer(Arc::new(store)))).await;
    let mut user = User::new();
    user.post_ok(&format!("{}/set?key=x&value=1", server.url()))
        .await;
    // The handler loads, then waits before the layer saves; Redis dies in between.
    let mut u = user.clone();
    let url = format!("{}/set?key=x&value=2&ms=700", server.url());
    let pending = tokio::spawn(async move { u.post(&url).await });
    tokio::time::sleep(Duration::from_millis(250)).await;
    redis.kill();
    let (status, body) = pending.await.expect("task");
    assert_eq!(status, 503);
    assert!(body.contains("session store unavailable"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_is_always_set_and_capped_by_the_absolute_limit() {
    let redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url())
        .await
        .expect("connect")
        .with_prefix("t:");
    let mut conn = raw(&redis).await;
    let id = SessionId::generate();
    let expiry = Expiry {
        idle: Duration::from_secs(60),
        absolute: Some(Duration::from_secs(5)),
    };
    let fields = [("user".to_owned(), "\"alice\"".to_owned())].into();
    assert!(store.create(&id, &fields, &expiry).await.expect("create"));
    let key = format!("t:{id}");
    let ttl: i64 = conn.pttl(&key).await.expect("pttl");
    assert!(ttl > 0 && ttl <= 5000, "absolute caps the TTL: {ttl}");
    // A save extends idle expiry but never past the absolute deadline.
    let idle_only = Expiry {
        idle: Duration::from_secs(60),
        absolute: None,
    };
    let id2 = SessionId::generate();
    assert!(
        store
            .create(&id2, &fields, &idle_only)
            .await
            .expect("create")
    );
    let ttl2: i64 = conn.pttl(format!("t:{id2}")).await.expect("pttl");
    assert!(ttl2 > 5000 && ttl2 <= 60_000, "idle TTL: {ttl2}");
    let changes = tower_sticky::session::Changes {
        set: vec![("cart".into(), "[]".into())],
        ..Default::default()
    };
    assert_eq!(
        store.save(&id, &changes, &idle_only).await.expect("save"),
        Some(2)
    );
    let ttl: i64 = conn.pttl(&key).await.expect("pttl");
    assert!(ttl > 0 && ttl <= 5000, "still capped after a save: {ttl}");
    // The stored layout: one field per key plus metadata.
    let mut hash: Vec<String> = conn.hkeys(&key).await.expect("hkeys");
    hash.sort();
    assert_eq!(hash, ["d:cart", "d:user", "m:c", "m:d", "m:v"]);
    // A save to a vanished session writes nothing (no resurrection, no key without TTL).
    let gone = SessionId::generate();
    assert_eq!(
        store.save(&gone, &changes, &idle_only).await.expect("save"),
        None
    );
    let exists: bool = conn.exists(format!("t:{gone}")).await.expect("exists");
    assert!(!exists);
    // Nothing in this database lives without a TTL.
    let keys: Vec<String> = conn.keys("*").await.expect("keys");
    for k in keys {
        let ttl: i64 = conn.pttl(&k).await.expect("pttl");
        assert!(ttl > 0, "{k} has no TTL");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_round_trip_to_read_and_one_to_write() {
    let redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url()).await.expect("connect");
    let server = serve_router("127.0.0.1:0", app("a", layer(Arc::new(store.clone())))).await;
    let mut user = User::new();
    let measure = async |user: &mut User, method: &str, path: &str| {
        let before = store.round_trips();
        let url = format!("{}{path}", server.url());
        let (status, _) = match method {
            "GET" => user.get(&url).await,
            _ => user.post(&url).await,
        };
        assert_eq!(status, 200);
        store.round_trips() - before
    };
    // New session: no read (no cookie), one write to create it.
    assert_eq!(measure(&mut user, "POST", "/set?key=a&value=1").await, 1);
    // Read-only request: one read, no write.
    assert_eq!(measure(&mut user, "GET", "/get?key=a").await, 1);
    // Read + modify several keys: one read, one write.
    assert_eq!(measure(&mut user, "POST", "/cart?key=x").await, 2);
    assert_eq!(measure(&mut user, "POST", "/set?key=b&value=2").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_sessions_vanish_from_redis() {
    let redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url()).await.expect("connect");
    let mut conn = raw(&redis).await;
    let expiry = Expiry {
        idle: Duration::from_millis(300),
        absolute: None,
    };
    let id = SessionId::generate();
    assert!(
        store
            .create(&id, &Default::default(), &expiry)
            .await
            .expect("create")
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(store.load(&id).await.expect("load"), None);
    let exists: bool = conn.exists(format!("session:{id}")).await.expect("exists");
    assert!(!exists, "Redis removed the expired key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_under_load_gives_only_clear_503s_then_recovers() {
    let mut redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url()).await.expect("connect");
    let server = serve_router("127.0.0.1:0", app("a", layer(Arc::new(store)))).await;
    let stop_at = Instant::now() + Duration::from_millis(3500);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let url = server.url();
        tasks.push(tokio::spawn(async move {
            let mut user = User::new();
            let mut outcomes = Vec::new();
            while Instant::now() < stop_at {
                let (status, body) = user.post(&format!("{url}/cart?key=i{i}")).await;
                outcomes.push((status, body));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            outcomes
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(800)).await;
    redis.restart();
    let mut saw_503 = false;
    for task in tasks {
        let outcomes = task.await.expect("task");
        for (status, body) in &outcomes {
            match status {
                200 => {}
                503 => {
                    saw_503 = true;
                    assert_eq!(body, "503 Service Unavailable: session store unavailable\n");
                }
                other => panic!("unexpected status {other}: {body}"),
            }
        }
        // Recovered by itself: the last requests, well after the restart, succeed.
        let last = outcomes.last().expect("requests were made");
        assert_eq!(last.0, 200, "not recovered: {}", last.1);
    }
    assert!(saw_503, "the outage was visible as 503s");
}
