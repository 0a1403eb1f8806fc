//! Helpers for the cookie-affinity tests: backends, a gateway with a given cookie strategy, raw
//! requests that show `Set-Cookie`, and clients with a cookie jar.

use std::time::Duration;

use axum::Router;
use axum::http::header::SET_COOKIE;
use axum::response::IntoResponse;
use axum::routing::get;
use tower_sticky::affinity::CookieAffinity;
use tower_sticky::{Backends, StickyLayer};

use super::http::{Forward, TestServer, serve_gateway, serve_router, spawn_backend};

/// `n` backends named `b0..` answering with their id, behind `Forward`s.
pub async fn backends(n: usize) -> (Vec<TestServer>, Backends<Forward>) {
    let mut servers = Vec::new();
    let backends = Backends::new();
    let handle = backends.handle();
    for i in 0..n {
        let name: &'static str = Box::leak(format!("b{i}").into_boxed_str());
        let server = spawn_backend(name).await;
        handle.insert(name, Forward::new(server.url()));
        servers.push(server);
    }
    (servers, backends)
}

/// A gateway serving `Sticky` with this cookie strategy over `backends`.
pub async fn gateway(cookie: CookieAffinity, backends: Backends<Forward>) -> TestServer {
    let sticky = StickyLayer::builder()
        .cookie(cookie)
        .build()
        .sticky(backends);
    serve_gateway("127.0.0.1:0", sticky).await
}

/// A client with a cookie jar (a browser, as far as affinity goes).
pub fn jar_client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// A client without a jar: the test decides which cookies go out.
pub fn raw_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// One exchange as the tests see it.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub status: u16,
    pub body: String,
    /// `Set-Cookie` lines of the response.
    pub set_cookies: Vec<String>,
    /// `Cache-Control` lines of the response.
    pub cache_control: Vec<String>,
}

impl Exchange {
    /// The value of the `Set-Cookie` for `name`, if the response set it.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.set_cookies
            .iter()
            .find_map(|line| set_cookie_value(line, name))
    }
}

/// The value a `Set-Cookie` line sets, if it sets the cookie `name`.
pub fn set_cookie_value(line: &str, name: &str) -> Option<String> {
    let pair = line.split(';').next()?;
    let (k, v) = pair.split_once('=')?;
    (k.trim() == name).then(|| v.trim().to_owned())
}

/// GET `url` with a raw `Cookie` header (or none).
pub async fn send(client: &reqwest::Client, url: &str, cookie: Option<&[u8]>) -> Exchange {
    let mut req = client.get(url);
    if let Some(cookie) = cookie {
        req = req.header(
            "cookie",
            reqwest::header::HeaderValue::from_bytes(cookie).expect("header bytes"),
        );
    }
    let res = req.send().await.expect("request sent");
    let status = res.status().as_u16();
    let lines = |name: &str| -> Vec<String> {
        res.headers()
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    };
    let set_cookies = lines("set-cookie");
    let cache_control = lines("cache-control");
    Exchange {
        status,
        body: res.text().await.expect("body"),
        set_cookies,
        cache_control,
    }
}

/// A backend for learned mode: `/login` sets `session_id=<id>-<n>` (a fresh value each time),
/// `/logout` deletes it, everything else answers with the backend id.
pub async fn session_backend(id: &'static str) -> TestServer {
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let router = Router::new()
        .route(
            "/login",
            get(move || {
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                async move {
                    (
                        [(SET_COOKIE, format!("session_id={id}-{n}; Path=/; HttpOnly"))],
                        id,
                    )
                        .into_response()
                }
            }),
        )
        .route(
            "/logout",
            get(move || async move {
                (
                    [(SET_COOKIE, "session_id=; Path=/; Max-Age=0".to_owned())],
                    id,
                )
                    .into_response()
            }),
        )
        .fallback(move || async move { id });
    serve_router("127.0.0.1:0", router).await
}
