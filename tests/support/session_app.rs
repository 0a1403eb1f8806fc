//! A small axum application using sessions, and a client that keeps its session cookie by hand
//! (so tests can also send forged, oversized or non-UTF-8 cookies).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Query;
use axum::routing::{get, post};
use tower_sticky::session::{CookieConfig, Session, SessionError, SessionLayer, SessionStore};

pub const COOKIE: &str = "session";

#[derive(serde::Deserialize)]
struct KeyValue {
    key: String,
    value: Option<String>,
    ms: Option<u64>,
}

/// Routes (all answer plain text; `name` identifies the backend):
/// - `POST /login?key=<user>`: cycle the id, store `user`
/// - `GET /whoami`: `<name>:<user or anonymous>`
/// - `POST /cart?key=<item>`: append to `cart`, answers its length
/// - `GET /cart`: the cart as JSON
/// - `POST /set?key=K&value=V[&ms=N]`: store K=V, then wait N ms (before the save)
/// - `GET /get?key=K`: V or `none`
/// - `GET /keys`: comma-separated keys
/// - `GET /id`: the stored session id or `none`
/// - `POST /logout`: delete the session
pub fn app(name: &'static str, layer: SessionLayer) -> Router {
    Router::new()
        .route(
            "/login",
            post(|s: Session, Query(q): Query<KeyValue>| async move {
                s.cycle_id().await?;
                s.insert("user", &q.key).await?;
                Ok::<_, SessionError>("ok")
            }),
        )
        .route(
            "/whoami",
            get(move |s: Session| async move {
                let user: Option<String> = s.get("user").await?;
                Ok::<_, SessionError>(format!("{name}:{}", user.as_deref().unwrap_or("anonymous")))
            }),
        )
        .route(
            "/cart",
            post(|s: Session, Query(q): Query<KeyValue>| async move {
                let mut cart: Vec<String> = s.get("cart").await?.unwrap_or_default();
                cart.push(q.key);
                s.insert("cart", &cart).await?;
                Ok::<_, SessionError>(cart.len().to_string())
            })
            .get(|s: Session| async move {
                let cart: Vec<String> = s.get("cart").await?.unwrap_or_default();
                Ok::<_, SessionError>(serde_json::to_string(&cart).unwrap_or_default())
            }),
        )
        .route(
            "/set",
            post(|s: Session, Query(q): Query<KeyValue>| async move {
                s.insert(&q.key, &q.value.unwrap_or_default()).await?;
                if let Some(ms) = q.ms {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                Ok::<_, SessionError>("ok")
            }),
        )
        .route(
            "/get",
            get(|s: Session, Query(q): Query<KeyValue>| async move {
                let v: Option<String> = s.get(&q.key).await?;
                Ok::<_, SessionError>(v.unwrap_or_else(|| "none".into()))
            }),
        )
        .route(
            "/keys",
            get(|s: Session| async move { Ok::<_, SessionError>(s.keys().await?.join(",")) }),
        )
        .route(
            "/id",
            get(|s: Session| async move {
                Ok::<_, SessionError>(
                    s.id()
                        .await?
                        .map_or_else(|| "none".to_owned(), |id| id.to_string()),
                )
            }),
        )
        .route(
            "/logout",
            post(|s: Session| async move {
                s.delete().await;
                "bye"
            }),
        )
        .layer(layer)
}

/// The layer the tests use: plain-HTTP cookie (not `Secure`) named [`COOKIE`].
pub fn layer(store: Arc<dyn SessionStore>) -> SessionLayer {
    SessionLayer::from_arc(store).cookie(CookieConfig::new(COOKIE).secure(false))
}

/// A user agent that keeps the session cookie by hand.
#[derive(Clone)]
pub struct User {
    http: reqwest::Client,
    pub cookie: Option<String>,
    /// Every `Set-Cookie` value seen, in order.
    pub set_cookies: Vec<String>,
}

impl Default for User {
    fn default() -> Self {
        Self::new()
    }
}

impl User {
    pub fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
            cookie: None,
            set_cookies: Vec::new(),
        }
    }

    /// Sends a request with the session cookie (or `raw_cookie` instead, if given), records any
    /// `Set-Cookie` for our cookie, and returns status and body.
    pub async fn send_with(
        &mut self,
        method: reqwest::Method,
        url: &str,
        raw_cookie: Option<reqwest::header::HeaderValue>,
    ) -> (u16, String) {
        let mut req = self.http.request(method, url);
        match (raw_cookie, &self.cookie) {
            (Some(raw), _) => req = req.header(reqwest::header::COOKIE, raw),
            (None, Some(value)) => {
                req = req.header(reqwest::header::COOKIE, format!("{COOKIE}={value}"))
            }
            (None, None) => {}
        }
        let res = req.send().await.expect("request sent");
        let status = res.status().as_u16();
        for sc in res.headers().get_all(reqwest::header::SET_COOKIE) {
            let text = sc.to_str().expect("ascii set-cookie").to_owned();
            let first = text.split(';').next().unwrap_or_default();
            if let Some(value) = first.strip_prefix(&format!("{COOKIE}=")) {
                self.cookie = (!value.is_empty()).then(|| value.to_owned());
            }
            self.set_cookies.push(text);
        }
        (status, res.text().await.expect("body"))
    }

    pub async fn get(&mut self, url: &str) -> (u16, String) {
        self.send_with(reqwest::Method::GET, url, None).await
    }

    pub async fn post(&mut self, url: &str) -> (u16, String) {
        self.send_with(reqwest::Method::POST, url, None).await
    }

    /// `GET` that must succeed; returns the body.
    pub async fn get_ok(&mut self, url: &str) -> String {
        let (status, body) = self.get(url).await;
        assert_eq!(status, 200, "GET {url}: {body}");
        body
    }

    /// `POST` that must succeed; returns the body.
    pub async fn post_ok(&mut self, url: &str) -> String {
        let (status, body) = self.post(url).await;
        assert_eq!(status, 200, "POST {url}: {body}");
        body
    }
}

/// Parses `a,b,c` into a set for comparisons.
pub fn key_set(body: &str) -> BTreeMap<String, ()> {
    body.split(',')
        .filter(|k| !k.is_empty())
        .map(|k| (k.to_owned(), ()))
        .collect()
}
