//! One scenario suite, run against every store over real HTTP on loopback: `MemoryStore`,
//! `RedisStore` (a `redis-server` started by each test on a free port), and each of them behind a
//! per-backend `CachedStore`.
#![cfg(feature = "redis")]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use reqwest::header::HeaderValue;
use tower_sticky::session::{
    CachedStore, Expiry, MemoryStore, RedisStore, Session, SessionId, SessionStore,
};

use support::http::{TestServer, serve_router};
use support::redis_server::RedisServer;
use support::session_app::{COOKIE, User, app, key_set, layer};

#[derive(Clone, Copy, Debug)]
enum Kind {
    Memory,
    MemoryCached,
    Redis,
    RedisCached,
}

/// What one test runs against: the shared part of the store, and a way to give each backend
/// its own store handle (as separate processes would have).
struct Env {
    kind: Kind,
    memory: MemoryStore,
    redis: Option<RedisServer>,
}

impl Env {
    fn new(kind: Kind) -> Self {
        let redis = matches!(kind, Kind::Redis | Kind::RedisCached).then(RedisServer::start);
        Self {
            kind,
            memory: MemoryStore::new(),
            redis,
        }
    }

    /// The store one backend uses: memory backends share one `MemoryStore` (in-process workers),
    /// Redis backends each open their own connection; the cached kinds give each backend its own
    /// cache.
    async fn store(&self) -> Arc<dyn SessionStore> {
        match self.kind {
            Kind::Memory => Arc::new(self.memory.clone()),
            Kind::MemoryCached => Arc::new(CachedStore::new(self.memory.clone(), 1000)),
            Kind::Redis => Arc::new(self.redis_store().await),
            Kind::RedisCached => Arc::new(CachedStore::new(self.redis_store().await, 1000)),
        }
    }

    async fn redis_store(&self) -> RedisStore {
        let url = self.redis.as_ref().expect("redis env").url();
        RedisStore::connect(&url).await.expect("connect to redis")
    }

    /// A backend named `name` on `127.0.0.1:0` with the given expiry and touch policy.
    async fn backend_with(&self, name: &'static str, expiry: Expiry, touch: bool) -> TestServer {
        let layer = layer(self.store().await)
            .expiry(expiry)
            .touch_every_request(touch);
        serve_router("127.0.0.1:0", app(name, layer)).await
    }

    async fn backend(&self, name: &'static str) -> TestServer {
        self.backend_with(name, Expiry::default(), false).await
    }
}

async fn login_then_next_request_sees_the_user(env: Env) {
    let a = env.backend("a").await;
    let mut user = User::new();
    assert_eq!(
        user.get_ok(&format!("{}/whoami", a.url())).await,
        "a:anonymous"
    );
    assert!(user.cookie.is_none(), "an untouched session sets no cookie");
    user.post_ok(&format!("{}/login?key=alice", a.url())).await;
    let cookie = user.cookie.clone().expect("login sets the session cookie");
    assert!(SessionId::parse(&cookie).is_some());
    let set_cookie = user.set_cookies.last().expect("set-cookie");
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("Path=/"));
    assert_eq!(user.get_ok(&format!("{}/whoami", a.url())).await, "a:alice");
    // Another client does not see it.
    assert_eq!(
        User::new().get_ok(&format!("{}/whoami", a.url())).await,
        "a:anonymous"
    );
}

async fn cart_accumulates_across_requests(env: Env) {
    let a = env.backend("a").await;
    let mut user = User::new();
    for (i, item) in ["apple", "pear", "plum"].iter().enumerate() {
        let len = user.post_ok(&format!("{}/cart?key={item}", a.url())).await;
        assert_eq!(len, (i + 1).to_string());
    }
    assert_eq!(
        user.get_ok(&format!("{}/cart", a.url())).await,
        r#"["apple","pear","plum"]"#
    );
}

async fn idle_expiry_ends_an_unused_session(env: Env) {
    let idle = Expiry {
        idle: Duration::from_millis(1000),
        absolute: None,
    };
    let a = env.backend_with("a", idle, false).await;
    let mut user = User::new();
    user.post_ok(&format!("{}/set?key=x&value=1", a.url()))
        .await;
    let first = user.cookie.clone().expect("cookie");
    assert_eq!(user.get_ok(&format!("{}/get?key=x", a.url())).await, "1");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(user.get_ok(&format!("{}/get?key=x", a.url())).await, "none");
    // Writing again starts a new session with a new id (the expired one is not revived).
    user.post_ok(&format!("{}/set?key=y&value=2", a.url()))
        .await;
    assert_ne!(user.cookie.as_deref(), Some(first.as_str()));
    assert_eq!(user.get_ok(&format!("{}/keys", a.url())).await, "y");
}

async fn touch_keeps_an_active_session_alive(env: Env) {
    let idle = Expiry {
        idle: Duration::from_millis(1500),
        absolute: None,
    };
    let a = env.backend_with("a", idle, true).await;
    let mut user = User::new();
    user.post_ok(&format!("{}/set?key=x&value=1", a.url()))
        .await;
    // Read-only requests, each within the idle window, for twice the idle time.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(3200) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(user.get_ok(&format!("{}/get?key=x", a.url())).await, "1");
    }
}

async fn absolute_expiry_ends_even_an_active_session(env: Env) {
    let expiry = Expiry {
        idle: Duration::from_secs(30),
        absolute: Some(Duration::from_millis(2000)),
    };
    let a = env.backend_with("a", expiry, true).await;
    let mut user = User::new();
    let created = Instant::now();
    user.post_ok(&format!("{}/set?key=x&value=1", a.url()))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    user.post_ok(&format!("{}/set?key=x&value=2", a.url()))
        .await;
    assert_eq!(user.get_ok(&format!("{}/get?key=x", a.url())).await, "2");
    // Keep it busy past the absolute limit.
    while created.elapsed() < Duration::from_millis(2600) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        user.get(&format!("{}/get?key=x", a.url())).await;
    }
    assert_eq!(user.get_ok(&format!("{}/get?key=x", a.url())).await, "none");
}

async fn cycle_id_keeps_data_and_retires_the_old_id(env: Env) {
    let a = env.backend("a").await;
    let mut user = User::new();
    user.post_ok(&format!("{}/cart?key=book", a.url())).await;
    let before = user.cookie.clone().expect("cookie");
    user.post_ok(&format!("{}/login?key=alice", a.url())).await;
    let after = user.cookie.clone().expect("cookie");
    assert_ne!(before, after, "login must issue a new id");
    assert_eq!(user.get_ok(&format!("{}/id", a.url())).await, after);
    assert_eq!(
        user.get_ok(&format!("{}/cart", a.url())).await,
        r#"["book"]"#
    );
    assert_eq!(user.get_ok(&format!("{}/whoami", a.url())).await, "a:alice");
    // Whoever still holds the old id has nothing.
    let mut attacker = User::new();
    attacker.cookie = Some(before);
    assert_eq!(attacker.get_ok(&format!("{}/id", a.url())).await, "none");
    assert_eq!(
        attacker.get_ok(&format!("{}/whoami", a.url())).await,
        "a:anonymous"
    );
}

async fn forged_and_unknown_ids_are_never_adopted(env: Env) {
    let a = env.backend("a").await;
    let forged = SessionId::generate().to_string();
    let mut user = User::new();
    user.cookie = Some(forged.clone());
    assert_eq!(
        user.get_ok(&format!("{}/whoami", a.url())).await,
        "a:anonymous"
    );
    assert_eq!(user.cookie, None, "the unknown id's cookie is removed");
    user.cookie = Some(forged.clone());
    user.post_ok(&format!("{}/set?key=x&value=1", a.url()))
        .await;
    let issued = user.cookie.clone().expect("cookie");
    assert_ne!(issued, forged, "the client's id must not be adopted");
    assert_eq!(user.get_ok(&format!("{}/id", a.url())).await, issued);
    // A logged-out id is unknown too.
    user.post_ok(&format!("{}/logout", a.url())).await;
    assert_eq!(user.cookie, None, "logout removes the cookie");
    let mut replay = User::new();
    replay.cookie = Some(issued);
    assert_eq!(
        replay.get_ok(&format!("{}/get?key=x", a.url())).await,
        "none"
    );
    // Garbage shapes.
    for junk in [
        "../../etc/passwd",
        "",
        "0",
        "ABCDEF",
        "%00%ff",
        "\"quoted\"",
    ] {
        let raw = HeaderValue::from_str(&format!("{COOKIE}={junk}")).expect("header");
        let (status, body) = User::new()
            .send_with(
                reqwest::Method::GET,
                &format!("{}/whoami", a.url()),
                Some(raw),
            )
            .await;
        assert_eq!((status, body.as_str()), (200, "a:anonymous"), "{junk:?}");
    }
}

async fn oversized_and_non_utf8_cookies_get_a_new_session(env: Env) {
    let a = env.backend("a").await;
    let oversized = format!("{COOKIE}={}", "a".repeat(6000));
    let cases: Vec<HeaderValue> = vec![
        HeaderValue::from_str(&oversized).expect("header"),
        HeaderValue::from_bytes(b"session=\xff\xfe\xfd; other=\xc3\x28").expect("obs-text"),
        HeaderValue::from_bytes(b"\xe2\x82; session=\x80").expect("obs-text"),
    ];
    for raw in cases {
        let mut user = User::new();
        let (status, body) = user
            .send_with(
                reqwest::Method::POST,
                &format!("{}/set?key=x&value=1", a.url()),
                Some(raw),
            )
            .await;
        assert_eq!((status, body.as_str()), (200, "ok"));
        let issued = user.cookie.clone().expect("a fresh session was issued");
        assert!(SessionId::parse(&issued).is_some());
        assert_eq!(user.get_ok(&format!("{}/get?key=x", a.url())).await, "1");
    }
}

async fn concurrent_writes_to_different_keys_are_all_kept(env: Env) {
    let a = env.backend("a").await;
    let mut user = User::new();
    user.post_ok(&format!("{}/set?key=base&value=0", a.url()))
        .await;
    const TASKS: usize = 40;
    let mut tasks = Vec::new();
    for i in 0..TASKS {
        let mut u = user.clone();
        let url = format!("{}/set?key=k{i}&value={i}&ms=30", a.url());
        // Each request loads, waits (so they all overlap), then saves only its own key.
        tasks.push(tokio::spawn(async move { u.post(&url).await }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task").0, 200);
    }
    let keys = key_set(&user.get_ok(&format!("{}/keys", a.url())).await);
    assert_eq!(keys.len(), TASKS + 1, "lost writes: {keys:?}");
    for i in [0, TASKS / 2, TASKS - 1] {
        assert_eq!(
            user.get_ok(&format!("{}/get?key=k{i}", a.url())).await,
            i.to_string()
        );
    }
}

async fn failover_the_next_backend_sees_the_whole_session(env: Env) {
    let a = env.backend("a").await;
    let b = env.backend("b").await;
    let c = env.backend("c").await;
    let mut user = User::new();
    user.post_ok(&format!("{}/login?key=alice", a.url())).await;
    user.post_ok(&format!("{}/cart?key=tea", a.url())).await;
    user.post_ok(&format!("{}/cart?key=milk", a.url())).await;
    let a_url = a.url();
    a.stop().await;
    assert!(
        reqwest::get(format!("{a_url}/whoami")).await.is_err(),
        "backend a is down"
    );
    assert_eq!(user.get_ok(&format!("{}/whoami", b.url())).await, "b:alice");
    assert_eq!(
        user.get_ok(&format!("{}/cart", b.url())).await,
        r#"["tea","milk"]"#
    );
    user.post_ok(&format!("{}/cart?key=honey", b.url())).await;
    assert_eq!(
        user.get_ok(&format!("{}/cart", c.url())).await,
        r#"["tea","milk","honey"]"#
    );
    assert_eq!(user.get_ok(&format!("{}/whoami", c.url())).await, "c:alice");
}

macro_rules! suite {
    ($($module:ident => $kind:expr),* $(,)?) => {$(
        mod $module {
            use super::*;
            suite!(@tests $kind;
                login_then_next_request_sees_the_user,
                cart_accumulates_across_requests,
                idle_expiry_ends_an_unused_session,
                touch_keeps_an_active_session_alive,
                absolute_expiry_ends_even_an_active_session,
                cycle_id_keeps_data_and_retires_the_old_id,
                forged_and_unknown_ids_are_never_adopted,
                oversized_and_non_utf8_cookies_get_a_new_session,
                concurrent_writes_to_different_keys_are_all_kept,
                failover_the_next_backend_sees_the_whole_session,
            );
        }
    )*};
    (@tests $kind:expr; $($scenario:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $scenario() {
            let run = super::$scenario(Env::new($kind));
            tokio::time::timeout(Duration::from_secs(60), run)
                .await
                .expect("scenario finished in time");
        }
    )*};
}

suite!(
    memory => Kind::Memory,
    memory_cached => Kind::MemoryCached,
    redis => Kind::Redis,
    redis_cached => Kind::RedisCached,
);

#[tokio::test]
async fn missing_layer_is_a_clear_500() {
    let router = Router::new().route(
        "/",
        get(|_s: Session| async { "unreachable without the layer" }),
    );
    let server = serve_router("127.0.0.1:0", router).await;
    let (status, body) = User::new().get(&server.url()).await;
    assert_eq!(status, 500);
    assert!(body.contains("needs SessionLayer"), "{body}");
}
