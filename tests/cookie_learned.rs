//! Learned cookie affinity over real HTTP on loopback: the balancer learns `session_id -> backend`
//! from the application's `Set-Cookie`, keeps the table within its cap and TTL, fails over, and
//! (feature `redis`) shares the table through a real `redis-server` started here, which is then
//! killed while requests keep succeeding.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use support::cookie::{Exchange, gateway, raw_client, send, session_backend};
use support::http::{Forward, TestServer};
use tower_sticky::Backends;
use tower_sticky::affinity::CookieAffinity;

async fn session_backends(n: usize) -> (Vec<TestServer>, Backends<Forward>) {
    let backends = Backends::new();
    let mut servers = Vec::new();
    for i in 0..n {
        let id: &'static str = Box::leak(format!("b{i}").into_boxed_str());
        let server = session_backend(id).await;
        backends.handle().insert(id, Forward::new(server.url()));
        servers.push(server);
    }
    (servers, backends)
}

async fn with_session(url: &str, session: &str) -> Exchange {
    send(
        &raw_client(),
        url,
        Some(format!("session_id={session}").as_bytes()),
    )
    .await
}

/// Logs a new client in: returns its session value and the backend that issued it.
async fn login(base: &str) -> (String, String) {
    let res = send(&raw_client(), &format!("{base}/login"), None).await;
    assert_eq!(res.status, 200);
    (
        res.cookie("session_id").expect("app sets a session"),
        res.body,
    )
}

#[tokio::test]
async fn sessions_stick_to_the_backend_that_issued_them_and_logout_forgets() {
    let (_servers, backends) = session_backends(3).await;
    let affinity = CookieAffinity::learn("session_id").build().unwrap();
    let table = affinity.learned_table().unwrap();
    let gw = gateway(affinity, backends).await;

    let mut per_backend: BTreeMap<String, usize> = BTreeMap::new();
    let mut sessions = Vec::new();
    for _ in 0..12 {
        let (session, backend) = login(&gw.url()).await;
        // The session was issued by the backend named in it (the app's doing) and learned.
        assert!(session.starts_with(&format!("{backend}-")), "{session}");
        assert_eq!(table.backend_of(&session).unwrap(), backend.as_str());
        for _ in 0..5 {
            let res = with_session(&gw.url(), &session).await;
            assert_eq!(res.body, backend);
            // The balancer sets no cookie of its own in learned mode.
            assert!(res.set_cookies.is_empty());
        }
        *per_backend.entry(backend.clone()).or_default() += 1;
        sessions.push((session, backend));
    }
    assert_eq!(per_backend.len(), 3, "{per_backend:?}");
    assert_eq!(table.len(), 12);

    let (session, backend) = &sessions[0];
    let res = send(
        &raw_client(),
        &format!("{}/logout", gw.url()),
        Some(format!("session_id={session}").as_bytes()),
    )
    .await;
    assert_eq!(&res.body, backend);
    assert_eq!(table.backend_of(session), None);
    assert_eq!(table.len(), 11);
}

#[tokio::test]
async fn unknown_sessions_route_by_hash_and_are_not_stored() {
    let (_servers, backends) = session_backends(3).await;
    let affinity = CookieAffinity::learn("session_id").build().unwrap();
    let table = affinity.learned_table().unwrap();
    let gw = gateway(affinity, backends).await;
    let mut places = BTreeSet::new();
    for i in 0..30 {
        let made_up = format!("forged-{i}");
        let first = with_session(&gw.url(), &made_up).await.body;
        for _ in 0..3 {
            assert_eq!(with_session(&gw.url(), &made_up).await.body, first);
        }
        places.insert(first);
    }
    assert_eq!(places.len(), 3);
    assert_eq!(table.len(), 0, "client-chosen values filled the table");
}

#[tokio::test]
async fn the_table_never_exceeds_its_cap_and_entries_expire() {
    let (_servers, backends) = session_backends(3).await;
    let affinity = CookieAffinity::learn("session_id")
        .capacity(4)
        .ttl(Duration::from_secs(1))
        .build()
        .unwrap();
    let table = affinity.learned_table().unwrap();
    assert_eq!(table.capacity(), 4);
    let gw = gateway(affinity, backends).await;
    let mut last = None;
    for _ in 0..40 {
        let (session, backend) = login(&gw.url()).await;
        assert!(table.len() <= 4, "cap exceeded: {}", table.len());
        assert_eq!(table.backend_of(&session).unwrap(), backend.as_str());
        last = Some((session, backend));
    }
    let (session, backend) = last.unwrap();
    // Used within the TTL: kept (and refreshed) while it is in use.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(with_session(&gw.url(), &session).await.body, backend);
    }
    assert!(table.backend_of(&session).is_some());
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(table.backend_of(&session), None, "outlived its TTL");
}

#[tokio::test]
async fn a_learned_backend_going_down_repins_to_one_substitute_or_503_when_strict() {
    let (_servers, backends) = session_backends(3).await;
    let handle = backends.handle();
    let affinity = CookieAffinity::learn("session_id").build().unwrap();
    let table = affinity.learned_table().unwrap();
    let gw = gateway(affinity, backends.clone()).await;
    let strict = CookieAffinity::learn("session_id")
        .strict(true)
        .build()
        .unwrap();
    let strict_table = strict.learned_table().unwrap();
    let strict_gw = gateway(strict, backends).await;

    let (session, backend) = login(&gw.url()).await;
    let (strict_session, strict_backend) = loop {
        let (s, b) = login(&strict_gw.url()).await;
        if b == backend {
            break (s, b);
        }
    };
    assert_eq!(
        strict_table.backend_of(&strict_session).unwrap(),
        strict_backend.as_str()
    );
    handle.set_healthy(&backend, false).unwrap();

    let moved = with_session(&gw.url(), &session).await;
    assert_eq!(moved.status, 200);
    assert_ne!(moved.body, backend);
    assert_eq!(
        table.backend_of(&session).unwrap(),
        moved.body.as_str(),
        "not re-pinned"
    );
    for _ in 0..3 {
        assert_eq!(with_session(&gw.url(), &session).await.body, moved.body);
    }
    let refused = with_session(&strict_gw.url(), &strict_session).await;
    assert_eq!(refused.status, 503);
}

#[cfg(feature = "redis")]
mod redis_shared {
    use super::support::redis_server::RedisServer;
    use super::*;
    use tower_sticky::affinity::cookie::RedisLearnedTable;

    async fn shared_learn(redis: &RedisServer) -> (CookieAffinity, RedisLearnedTable) {
        let shared = RedisLearnedTable::connect(&redis.url(), "test:learned:")
            .await
            .unwrap();
        let affinity = CookieAffinity::learn("session_id")
            .redis(shared.clone())
            .build()
            .unwrap();
        (affinity, shared)
    }

    #[tokio::test]
    async fn restarts_and_replicas_keep_the_table_and_a_dead_redis_fails_no_request() {
        let mut redis = RedisServer::start();
        let (servers, backends_1) = session_backends(3).await;
        let fresh_backends = || {
            let b: Backends<Forward> = Backends::new();
            for (i, s) in servers.iter().enumerate() {
                b.handle().insert(format!("b{i}"), Forward::new(s.url()));
            }
            b
        };

        let (first, shared_1) = shared_learn(&redis).await;
        let gw_1 = gateway(first, backends_1).await;
        let mut sessions = Vec::new();
        for _ in 0..15 {
            sessions.push(login(&gw_1.url()).await);
        }
        shared_1.flush().await;

        // A restarted balancer preloads the table: every session is right on its first request.
        gw_1.stop().await;
        let (restarted, shared_2) = shared_learn(&redis).await;
        let restarted_table = restarted.learned_table().unwrap();
        shared_2.flush().await;
        assert_eq!(restarted_table.len(), 15);
        let gw_2 = gateway(restarted, fresh_backends()).await;
        for (session, backend) in &sessions {
            assert_eq!(&with_session(&gw_2.url(), session).await.body, backend);
        }

        // A replica learns a session it has not seen from Redis, off the request path: after
        // the fetch completes it routes like the balancer that learned it.
        let (late_session, late_backend) = login(&gw_2.url()).await;
        shared_2.flush().await;
        let (replica, shared_3) = shared_learn(&redis).await;
        let replica_table = replica.learned_table().unwrap();
        shared_3.flush().await;
        let gw_3 = gateway(replica, fresh_backends()).await;
        assert_eq!(with_session(&gw_3.url(), &late_session).await.status, 200);
        shared_3.flush().await;
        assert_eq!(
            replica_table.backend_of(&late_session).unwrap(),
            late_backend.as_str()
        );
        assert_eq!(
            with_session(&gw_3.url(), &late_session).await.body,
            late_backend
        );

        // Redis dies: every request still succeeds, old sessions stay put, new ones are learned
        // locally.
        redis.kill();
        for (session, backend) in sessions.iter().chain([&(late_session, late_backend)]) {
            let res = with_session(&gw_2.url(), session).await;
            assert_eq!((res.status, &res.body), (200, backend));
        }
        for _ in 0..10 {
            let (session, backend) = login(&gw_2.url()).await;
            assert_eq!(
                restarted_table.backend_of(&session).unwrap(),
                backend.as_str()
            );
            assert_eq!(with_session(&gw_2.url(), &session).await.body, backend);
            // Unknown sessions trigger fetches that fail in the background, not here.
            let res = with_session(&gw_2.url(), "never-seen").await;
            assert_eq!(res.status, 200);
        }
        // The background task tried (and failed) everything it was given, and it is still alive.
        tokio::time::timeout(Duration::from_secs(20), shared_2.flush())
            .await
            .expect("flush finishes while redis is down");
    }
}
