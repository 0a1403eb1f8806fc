//! Remote-backend helpers for the health, failover and metrics tests: id backends with a health
//! endpoint and an echo of what they received, servers that hang or drop connections, and
//! `HttpBackend` sets over them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::routing::{any, get};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tower_sticky::Backends;
use tower_sticky::http_backend::HttpBackend;

use super::http::{TestServer, id_router, serve_router};

/// An id backend that also answers `/healthz` (counting probes) and `/echo` (method, path, body
/// and the forwarding headers it received, one per line).
pub fn full_router(id: &'static str, probes: Arc<AtomicU64>) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(move || async move {
                probes.fetch_add(1, Ordering::Relaxed);
                "ok"
            }),
        )
        .route(
            "/echo",
            any(move |req: Request| async move {
                let (parts, body) = req.into_parts();
                let bytes = axum::body::to_bytes(body, 1 << 20)
                    .await
                    .unwrap_or_default();
                format!(
                    "{id} {} {} {}",
                    parts.method,
                    parts.uri,
                    String::from_utf8_lossy(&bytes)
                )
            }),
        )
        .merge(id_router(id))
}

/// Serves [`full_router`] on `bind`; returns the server and its probe counter.
pub async fn spawn_full(bind: &str, id: &'static str) -> (TestServer, Arc<AtomicU64>) {
    let probes = Arc::new(AtomicU64::new(0));
    let server = serve_router(bind, full_router(id, Arc::clone(&probes))).await;
    (server, probes)
}

/// An `HttpBackend` named `id` for `server`, with short timeouts.
pub fn http_backend(id: &str, url: &str) -> HttpBackend {
    HttpBackend::builder(url)
        .name(id)
        .connect_timeout(Duration::from_millis(500))
        .request_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// A set of `HttpBackend`s, one per `(id, url)`.
pub fn http_backends(list: &[(&str, String)]) -> Backends<HttpBackend> {
    list.iter()
        .map(|(id, url)| (id.to_string(), http_backend(id, url)))
        .collect()
}

/// A loopback address on which nothing listens (bound, then closed): connecting is refused.
pub async fn refused_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// A server that accepts connections and reads requests but never answers (a hung process).
/// Returns its address and a counter of accepted connections.
pub async fn spawn_hung() -> (SocketAddr, Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&accepted);
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::Relaxed);
            held.push(tokio::spawn(async move {
                let mut stream = stream;
                let mut buf = [0u8; 4096];
                while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
            }));
        }
    });
    (addr, accepted, task)
}

/// A server that reads the request head and then closes the connection without answering: the
/// request was sent, then failed.
pub async fn spawn_dropper() -> (SocketAddr, Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&seen);
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                if let Ok(n) = stream.read(&mut buf).await {
                    if n > 0 {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                }
                drop(stream);
            });
        }
    });
    (addr, seen, task)
}

/// Reads an axum body to a string.
pub async fn text(body: Body) -> String {
    String::from_utf8_lossy(&axum::body::to_bytes(body, 1 << 20).await.unwrap()).into_owned()
}

/// A header key that a Ketama ring over `ids` (weight 1 each) maps to `target`.
pub fn key_for(target: &str, ids: &[&str], skip: usize) -> String {
    use tower_sticky::BackendId;
    use tower_sticky::ring::{RingKind, RingMember};
    let ids: Vec<BackendId> = ids.iter().map(|s| BackendId::from(*s)).collect();
    let members: Vec<RingMember<'_>> = ids.iter().map(|id| RingMember { id, weight: 1 }).collect();
    let ring = RingKind::Ketama.build(&members);
    (0..)
        .map(|i| format!("user-{i}"))
        .filter(|k| ids[ring.primary(k.as_bytes()).unwrap()] == target)
        .nth(skip)
        .unwrap()
}
