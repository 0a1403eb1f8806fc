//! Sticky pairing: a `Sticky` that hashes the session cookie keeps each user on one backend,
//! whose local `CachedStore` (in front of a shared Redis) then serves the session from memory;
//! when the user is moved away, modifies the session elsewhere and comes back, the cache never
//! serves the stale copy.
#![cfg(feature = "redis")]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use tower_sticky::affinity::{KeyHash, RoundRobin};
use tower_sticky::session::{CachedStore, RedisStore};
use tower_sticky::{Backends, StickyLayer};

use support::http::{Forward, TestServer, serve_gateway, serve_router};
use support::redis_server::RedisServer;
use support::session_app::{COOKIE, User, app, layer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_on_the_session_cookie_keeps_the_user_and_the_cache_never_goes_stale() {
    let redis = RedisServer::start();
    let mut servers: Vec<TestServer> = Vec::new();
    let mut caches = BTreeMap::new();
    let mut backends = Backends::new();
    for name in ["a", "b", "c"] {
        let shared = RedisStore::connect(&redis.url()).await.expect("connect");
        let cache = CachedStore::new(shared, 1000);
        caches.insert(name, cache.clone());
        let server = serve_router("127.0.0.1:0", app(name, layer(Arc::new(cache)))).await;
        backends = backends.with(name, Forward::new(server.url()));
        servers.push(server);
    }
    let handle = backends.handle();
    let sticky = StickyLayer::builder()
        .affinity(KeyHash::cookie(COOKIE))
        .fallback(RoundRobin::new())
        .build()
        .sticky(backends);
    let gateway = serve_gateway("127.0.0.1:0", sticky).await;
    let url = gateway.url();

    let mut user = User::new();
    user.post_ok(&format!("{url}/login?key=alice")).await;
    assert!(user.cookie.is_some());
    // From now on the cookie decides: always the same backend, and it sees the session.
    let home = user.get_ok(&format!("{url}/whoami")).await;
    let (home_name, who) = home.split_once(':').expect("name:user");
    assert_eq!(who, "alice");
    for _ in 0..5 {
        assert_eq!(user.get_ok(&format!("{url}/whoami")).await, home);
    }
    user.post_ok(&format!("{url}/cart?key=tea")).await;
    let home_cache = caches[home_name].clone();
    let hits_before = home_cache.hits();
    for _ in 0..3 {
        assert_eq!(user.get_ok(&format!("{url}/cart")).await, r#"["tea"]"#);
    }
    assert!(
        home_cache.hits() >= hits_before + 3,
        "the home backend served the session from its cache"
    );

    // The home backend becomes unusable: the user moves, the session follows, and it changes.
    handle.set_healthy(home_name, false).expect("known backend");
    let away = user.get_ok(&format!("{url}/whoami")).await;
    let (away_name, who) = away.split_once(':').expect("name:user");
    assert_ne!(away_name, home_name);
    assert_eq!(who, "alice");
    user.post_ok(&format!("{url}/cart?key=milk")).await;
    assert_eq!(
        user.get_ok(&format!("{url}/cart")).await,
        r#"["tea","milk"]"#
    );

    // Home again: its cache holds the old cart, which must not be served.
    handle.set_healthy(home_name, true).expect("known backend");
    let misses_before = home_cache.misses();
    assert_eq!(user.get_ok(&format!("{url}/whoami")).await, home);
    assert_eq!(
        user.get_ok(&format!("{url}/cart")).await,
        r#"["tea","milk"]"#
    );
    assert!(
        home_cache.misses() > misses_before,
        "the changed session was reloaded"
    );
}
