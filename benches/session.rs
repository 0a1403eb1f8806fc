//! Session cost, side by side in one run, on one `redis-server` this bench starts itself:
//!
//! 1. load + modify + save through the layer: `SessionLayer` + `RedisStore` vs `tower-sessions`
//!    (`SessionManagerLayer` + `tower-sessions-redis-store`, its documented fred pool of 6), the
//!    same handler work (read a counter, write it back + 1) on sessions of the same content,
//!    many concurrent users, rounds interleaved; requests/s and the ratio (ours / theirs).
//! 2. Redis round trips and bytes Redis sends per request, with and without the `CachedStore`
//!    tier, for a read-only and a read-modify-write request.
//! 3. Memory per idle session in `MemoryStore` (counted by a global allocator).
//!
//! ```text
//! cargo bench --bench session --features redis
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::routing::{get, post};
use http::header::{COOKIE, SET_COOKIE};
use http::{Request, StatusCode};
use tower::ServiceExt;
use tower_sticky::session::{
    CachedStore, CookieConfig, Expiry, Fields, MemoryStore, RedisStore, Session, SessionId,
    SessionLayer, SessionStore,
};

#[path = "../tests/support/redis_server.rs"]
#[allow(dead_code)]
mod redis_server;

/// Counts live heap bytes, for the memory-per-session figure.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator unchanged and only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const USERS: usize = 64;
const REQUESTS: usize = 20_000;
const ROUNDS: usize = 7;

/// The session content both contenders carry: a user, a 10-item cart, a counter.
fn cart() -> Vec<String> {
    (0..10).map(|i| format!("sku-{i:04}-blue-large")).collect()
}

async fn ours_setup(s: Session) -> StatusCode {
    let ok = s.insert("user", "alice@example.com").await.is_ok()
        && s.insert("cart", &cart()).await.is_ok()
        && s.insert("counter", &0u64).await.is_ok();
    if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

async fn ours_bump(s: Session) -> StatusCode {
    let Ok(n) = s.get::<u64>("counter").await else {
        return StatusCode::SERVICE_UNAVAILABLE;
    };
    match s.insert("counter", &(n.unwrap_or(0) + 1)).await {
        Ok(()) => StatusCode::OK,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

async fn ours_read(s: Session) -> StatusCode {
    match s.get::<Vec<String>>("cart").await {
        Ok(Some(_)) => StatusCode::OK,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

async fn theirs_setup(s: tower_sessions::Session) -> StatusCode {
    let ok = s.insert("user", "alice@example.com").await.is_ok()
        && s.insert("cart", cart()).await.is_ok()
        && s.insert("counter", 0u64).await.is_ok();
    if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

async fn theirs_bump(s: tower_sessions::Session) -> StatusCode {
    let Ok(n) = s.get::<u64>("counter").await else {
        return StatusCode::SERVICE_UNAVAILABLE;
    };
    match s.insert("counter", n.unwrap_or(0) + 1).await {
        Ok(()) => StatusCode::OK,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn ours_app(store: impl SessionStore) -> Router {
    Router::new()
        .route("/setup", post(ours_setup))
        .route("/bump", post(ours_bump))
        .route("/read", get(ours_read))
        .layer(SessionLayer::new(store).cookie(CookieConfig::new("sid").secure(false)))
}

async fn theirs_app(url: &str) -> Router {
    use tower_sessions_redis_store::fred::prelude::{ClientLike, Config, Pool};
    let pool = Pool::new(Config::from_url(url).expect("url"), None, None, None, 6).expect("pool");
    let _connection = pool.connect();
    pool.wait_for_connect().await.expect("fred connects");
    let store = tower_sessions_redis_store::RedisStore::new(pool);
    Router::new()
        .route("/setup", post(theirs_setup))
        .route("/bump", post(theirs_bump))
        .layer(tower_sessions::SessionManagerLayer::new(store).with_secure(false))
}

/// Creates `USERS` sessions through `/setup`; returns their `Cookie` header values.
async fn sign_up(app: &Router) -> Vec<String> {
    let mut cookies = Vec::new();
    for _ in 0..USERS {
        let req = Request::post("/setup")
            .body(Body::empty())
            .expect("request");
        let res = app.clone().oneshot(req).await.expect("infallible");
        assert_eq!(res.status(), StatusCode::OK);
        let set = res.headers()[SET_COOKIE]
            .to_str()
            .expect("ascii")
            .to_owned();
        cookies.push(set.split(';').next().expect("name=value").to_owned());
    }
    cookies
}

/// Sends `REQUESTS` requests to `path`, `USERS` at a time (each user its own session).
async fn drive(app: &Router, method: &str, path: &str, cookies: &[String]) -> Duration {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for cookie in cookies {
        let (app, cookie, method, path) = (
            app.clone(),
            cookie.clone(),
            method.to_owned(),
            path.to_owned(),
        );
        tasks.push(tokio::spawn(async move {
            for _ in 0..REQUESTS / USERS {
                let req = Request::builder()
                    .method(method.as_str())
                    .uri(path.as_str())
                    .header(COOKIE, cookie.as_str())
                    .body(Body::empty())
                    .expect("request");
                let res = app.clone().oneshot(req).await.expect("infallible");
                assert_eq!(res.status(), StatusCode::OK);
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    start.elapsed()
}

fn rate(d: Duration) -> f64 {
    (REQUESTS / USERS * USERS) as f64 / d.as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn redis_bytes_out(url: &str) -> u64 {
    let mut conn = redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(&mut conn)
        .await
        .expect("info");
    info.lines()
        .find_map(|l| l.strip_prefix("total_net_output_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

async fn compare_with_tower_sessions(url: &str) {
    let ours = ours_app(RedisStore::connect(url).await.expect("connect"));
    let theirs = theirs_app(url).await;
    let our_users = sign_up(&ours).await;
    let their_users = sign_up(&theirs).await;
    // Warm up both.
    drive(&ours, "POST", "/bump", &our_users).await;
    drive(&theirs, "POST", "/bump", &their_users).await;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        a.push(rate(drive(&ours, "POST", "/bump", &our_users).await));
        b.push(rate(drive(&theirs, "POST", "/bump", &their_users).await));
    }
    // Each round's pair ran back to back, so its ratio is the least disturbed by other load on
    // the machine; report the median ratio and its range.
    let mut ratios: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x / y).collect();
    ratios.sort_by(f64::total_cmp);
    let (lo, hi) = (ratios[0], ratios[ratios.len() - 1]);
    let (ra, rb, r) = (median(a), median(b), median(ratios));
    println!(
        "load+modify+save, {USERS} concurrent users, median of {ROUNDS} rounds of {REQUESTS}:"
    );
    println!("  tower-sticky SessionLayer + RedisStore      {ra:>9.0} req/s");
    println!("  tower-sessions + tower-sessions-redis-store {rb:>9.0} req/s");
    println!("  ratio (ours / theirs), per-round median     {r:>9.2}  (range {lo:.2}..{hi:.2})");
}

async fn cache_tier(url: &str) {
    println!("Redis cost per request (same sessions: user + 10-item cart + counter):");
    for (label, cached) in [("RedisStore", false), ("CachedStore<RedisStore>", true)] {
        let redis_store = RedisStore::connect(url).await.expect("connect");
        let app = if cached {
            ours_app(CachedStore::new(redis_store.clone(), 10_000))
        } else {
            ours_app(redis_store.clone())
        };
        let users = sign_up(&app).await;
        drive(&app, "GET", "/read", &users).await;
        for (what, method, path) in [
            ("read-only", "GET", "/read"),
            ("read+write", "POST", "/bump"),
        ] {
            let (trips, bytes) = (redis_store.round_trips(), redis_bytes_out(url).await);
            let took = drive(&app, method, path, &users).await;
            let n = (REQUESTS / USERS * USERS) as f64;
            // One INFO call's own reply is included in the byte count; negligible over n.
            let trips = (redis_store.round_trips() - trips) as f64 / n;
            let bytes = (redis_bytes_out(url).await - bytes) as f64 / n;
            println!(
                "  {label:<24} {what:<10} {trips:.2} round trips, {bytes:>6.0} bytes from Redis, {:>8.0} req/s",
                rate(took)
            );
        }
    }
}

fn memory_per_session() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        const N: usize = 100_000;
        for (label, fields) in [
            ("empty", Fields::new()),
            (
                "user id + counter",
                Fields::from([
                    ("user".to_owned(), "\"alice@example.com\"".to_owned()),
                    ("counter".to_owned(), "0".to_owned()),
                ]),
            ),
        ] {
            let store = MemoryStore::new();
            let ids: Vec<SessionId> = (0..N).map(|_| SessionId::generate()).collect();
            let before = LIVE.load(Ordering::Relaxed);
            for id in &ids {
                assert!(
                    store
                        .create(id, &fields, &Expiry::default())
                        .await
                        .expect("create")
                );
            }
            let after = LIVE.load(Ordering::Relaxed);
            println!(
                "  MemoryStore, {label:<18}: {:>5} bytes per idle session ({N} sessions)",
                (after - before) / N as isize
            );
        }
    });
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("session bench: run with `cargo bench --bench session --features redis`");
        return;
    }
    let redis = redis_server::RedisServer::start();
    let url = redis.url();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        compare_with_tower_sessions(&url).await;
        cache_tier(&url).await;
    });
    println!("Memory:");
    memory_per_session();
}
