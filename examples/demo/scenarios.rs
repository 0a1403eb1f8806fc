//! One function per scenario; each starts its own backends and gateway and prints what happened.

use std::collections::{BTreeMap, BTreeSet};

use axum::Router;
use axum::routing::post;
use tower_sticky::affinity::cookie::{CookieAffinity, Key};
use tower_sticky::affinity::{IpHash, KeyHash, RoundRobin};
use tower_sticky::ring::{KetamaRing, Ring, RingMember};
use tower_sticky::session::{MemoryStore, Session, SessionError, SessionLayer, SessionStore};
use tower_sticky::{BackendId, StickyLayer};

use crate::world::{
    Result, Server, bars, client, count, gateway, get_page, http_backend, id_backend, loopback,
    remote, title,
};

const IDS: [&str; 3] = ["a", "b", "c"];

async fn three_backends() -> Result<Vec<Server>> {
    let mut servers = Vec::new();
    for id in IDS {
        servers.push(id_backend(id).await?);
    }
    Ok(servers)
}

fn pairs(servers: &[Server]) -> Vec<(&'static str, &Server)> {
    IDS.into_iter().zip(servers).collect()
}

/// Cookie affinity: alice, bob and charlie each keep their backend; the first response pins them.
pub async fn cookie() -> Result<()> {
    title(
        "cookie affinity (pinned, signed): the first response sets srv=..., later requests follow it",
    );
    let servers = three_backends().await?;
    let layer = StickyLayer::builder()
        .cookie(CookieAffinity::pinned("srv").key(Key::generate()).build()?)
        .build();
    let url = gateway(layer, remote(&pairs(&servers))?).await?;
    let mut hits = Vec::new();
    for (i, user) in ["alice", "bob", "charlie"].into_iter().enumerate() {
        let client = client(loopback(10 + i as u8))?;
        let mut line = Vec::new();
        for _ in 0..4 {
            let (_, backend, set_cookie) = get_page(&client, &url, None).await?;
            line.push(format!(
                "{backend}({})",
                if set_cookie { "new" } else { "sticky" }
            ));
            hits.push(backend);
        }
        println!("  {user:<8} {}", line.join(" "));
    }
    bars("requests per backend", &count(&hits, &IDS));
    Ok(())
}

/// IP hash: three client addresses, each on its own backend every time.
pub async fn ip() -> Result<()> {
    title("IP hash (consistent ring): each client address keeps its backend");
    let servers = three_backends().await?;
    let url = gateway(StickyLayer::new(IpHash::new()), remote(&pairs(&servers))?).await?;
    let mut hits = Vec::new();
    for last in [21u8, 22, 23] {
        let client = client(loopback(last))?;
        let mut line = Vec::new();
        for _ in 0..4 {
            let backend = get_page(&client, &url, None).await?.1;
            line.push(backend.clone());
            hits.push(backend);
        }
        println!("  127.0.0.{last:<4} {}", line.join(" "));
    }
    bars("requests per backend", &count(&hits, &IDS));
    Ok(())
}

/// Consistent hashing on a header, and what virtual nodes do to the spread.
pub async fn hash() -> Result<()> {
    title("consistent hashing on X-User: user-1..user-30, 3 requests each");
    let servers = three_backends().await?;
    let url = gateway(
        StickyLayer::new(KeyHash::header("x-user")),
        remote(&pairs(&servers))?,
    )
    .await?;
    let client = client(loopback(1))?;
    let mut homes = BTreeMap::new();
    for i in 1..=30 {
        let user = format!("user-{i}");
        let mut seen = BTreeSet::new();
        for _ in 0..3 {
            seen.insert(get_page(&client, &url, Some(("x-user", &user))).await?.1);
        }
        let home = seen.iter().next().cloned().unwrap_or_default();
        if seen.len() != 1 {
            println!("  {user} moved between {seen:?}!");
        }
        homes.insert(user, home);
    }
    let line: Vec<String> = homes
        .iter()
        .take(10)
        .map(|(u, b)| format!("{u}->{b}"))
        .collect();
    println!("  {} ...", line.join(" "));
    bars("users per backend", &count(homes.values(), &IDS));

    println!("effect of virtual nodes (10,000 keys on 3 backends, busiest / average):");
    let ids: Vec<BackendId> = IDS.iter().map(|id| BackendId::from(*id)).collect();
    let members: Vec<RingMember<'_>> = ids.iter().map(|id| RingMember { id, weight: 1 }).collect();
    for points in [1u32, 10, 40, 160, 1000] {
        let ring = KetamaRing::with_points_per_weight(&members, points);
        let mut load = [0usize; 3];
        for k in 0..10_000 {
            if let Some(p) = ring.primary(format!("user-{k}").as_bytes()) {
                load[p] += 1;
            }
        }
        let max = load.iter().copied().max().unwrap_or(0) as f64;
        let ratio = max / (10_000.0 / 3.0);
        println!(
            "  {points:>5} per backend | {:<30} {ratio:.2}  {load:?}",
            "#".repeat(((ratio - 1.0) * 30.0).round().clamp(0.0, 30.0) as usize)
        );
    }
    Ok(())
}

/// A backend whose cart lives in the shared session store.
fn cart_backend(id: &'static str, store: impl SessionStore) -> Router {
    async fn add(session: Session, body: String) -> std::result::Result<String, SessionError> {
        let mut cart: Vec<String> = session.get("cart").await?.unwrap_or_default();
        cart.push(body);
        session.insert("cart", &cart).await?;
        Ok(cart.join(","))
    }
    async fn show(session: Session) -> std::result::Result<String, SessionError> {
        let cart: Vec<String> = session.get("cart").await?.unwrap_or_default();
        Ok(cart.join(","))
    }
    Router::new()
        .route("/cart", post(add).get(show))
        .layer(SessionLayer::new(store))
        .layer(axum::middleware::map_response(
            move |mut res: axum::response::Response| async move {
                res.headers_mut()
                    .insert("x-backend", http::HeaderValue::from_static(id));
                res
            },
        ))
}

async fn shared_store(spec: &str) -> Result<std::sync::Arc<dyn SessionStore>> {
    if spec == "memory" {
        return Ok(std::sync::Arc::new(MemoryStore::new()));
    }
    #[cfg(feature = "redis")]
    {
        let store = tower_sticky::session::RedisStore::connect(spec).await?;
        Ok(std::sync::Arc::new(store))
    }
    #[cfg(not(feature = "redis"))]
    {
        Err(format!("--store {spec}: build with --features redis").into())
    }
}

/// Shared sessions: round robin over the backends, the cart lives in one store.
pub async fn sessions(store: &str) -> Result<()> {
    title(&format!(
        "shared sessions: round robin, the cart lives in the {store} store"
    ));
    let shared = shared_store(store).await?;
    let mut servers = Vec::new();
    for id in IDS {
        servers.push(Server::start(cart_backend(id, shared.clone())).await?);
    }
    let url = gateway(
        StickyLayer::new(RoundRobin::new()),
        remote(&pairs(&servers))?,
    )
    .await?;
    let alice = client(loopback(30))?;
    for item in ["apple", "bread", "cheese"] {
        let res = alice.post(format!("{url}/cart")).body(item).send().await?;
        let backend = header(&res, "x-backend");
        println!(
            "  alice adds {item:<7} on {backend}: cart = {}",
            res.text().await?
        );
    }
    for _ in IDS {
        let res = alice.get(format!("{url}/cart")).send().await?;
        let backend = header(&res, "x-backend");
        println!("  alice reads on {backend}: cart = {}", res.text().await?);
    }
    Ok(())
}

fn header(res: &reqwest::Response, name: &str) -> String {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?")
        .to_owned()
}

/// Scaling: a backend added (who moved: only to it), one removed (where its users went).
pub async fn scaling() -> Result<()> {
    title("scaling: 30 users by X-User; add backend d, then remove b");
    let mut servers = three_backends().await?;
    servers.push(id_backend("d").await?);
    let all: Vec<(&'static str, &Server)> =
        ["a", "b", "c", "d"].into_iter().zip(&servers).collect();
    let backends = remote(&all[..3])?;
    let handle = backends.handle();
    let url = gateway(StickyLayer::new(KeyHash::header("x-user")), backends).await?;
    let client = client(loopback(1))?;
    let users: Vec<String> = (1..=30).map(|i| format!("user-{i}")).collect();
    let homes = |url: String, client: reqwest::Client, users: Vec<String>| async move {
        let mut map = BTreeMap::new();
        for user in &users {
            map.insert(
                user.clone(),
                get_page(&client, &url, Some(("x-user", user))).await?.1,
            );
        }
        Result::Ok(map)
    };
    let before = homes(url.clone(), client.clone(), users.clone()).await?;
    bars("users per backend (a, b, c)", &count(before.values(), &IDS));

    handle.insert("d", http_backend("d", &servers[3])?);
    let after_add = homes(url.clone(), client.clone(), users.clone()).await?;
    let moved: Vec<String> = users
        .iter()
        .filter(|u| before[*u] != after_add[*u])
        .map(|u| format!("{u}: {}->{}", before[u], after_add[u]))
        .collect();
    println!(
        "  added d: {} of 30 moved (ideal ~{:.0}), all to d: {}",
        moved.len(),
        30.0 / 4.0,
        moved.iter().all(|m| m.ends_with("->d"))
    );
    println!("    {}", moved.join(", "));
    bars(
        "users per backend (a, b, c, d)",
        &count(after_add.values(), &["a", "b", "c", "d"]),
    );

    handle.remove("b");
    let after_remove = homes(url, client, users.clone()).await?;
    let mut went: BTreeMap<String, usize> = BTreeMap::new();
    let mut others_moved = 0;
    for user in &users {
        if after_add[user] == "b" {
            *went.entry(after_remove[user].clone()).or_default() += 1;
        } else if after_add[user] != after_remove[user] {
            others_moved += 1;
        }
    }
    println!(
        "  removed b: its users went to {went:?}; users of other backends moved: {others_moved}"
    );
    Ok(())
}

/// Failover: a backend is killed; its users move to one substitute each, nobody sees an error.
pub async fn failover() -> Result<()> {
    title("failover: 12 users pinned by cookie; backend a is killed mid-way");
    let mut servers = three_backends().await?;
    let layer = StickyLayer::builder()
        .cookie(CookieAffinity::pinned("srv").key(Key::generate()).build()?)
        .build();
    let url = gateway(layer, remote(&pairs(&servers))?).await?;
    let users: Vec<reqwest::Client> = (0..12)
        .map(|i| client(loopback(40 + i)))
        .collect::<Result<_>>()?;
    let mut before = Vec::new();
    for user in &users {
        before.push(get_page(user, &url, None).await?.1);
    }
    bars("users per backend before", &count(&before, &IDS));
    let victim = servers.remove(0);
    victim.kill().await;
    println!("  killed backend a");
    let mut errors = 0;
    let mut after = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let mut seen = BTreeSet::new();
        for _ in 0..3 {
            let (status, backend, _) = get_page(user, &url, None).await?;
            if status != 200 {
                errors += 1;
            }
            seen.insert(backend);
        }
        let now: Vec<String> = seen.into_iter().collect();
        if before[i] == "a" {
            println!(
                "  user-{:<2} was on a, now on {}",
                i + 1,
                now.join(" then ")
            );
        }
        after.push(now.join("+"));
    }
    bars("users per backend after", &count(&after, &["b", "c"]));
    println!("  client-visible errors: {errors}");
    Ok(())
}
