//! The demo's moving parts: backends as real HTTP servers, a gateway, clients, and printing.

use std::collections::BTreeMap;
use std::error::Error;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tower::ServiceExt;
use tower_sticky::http_backend::HttpBackend;
use tower_sticky::serve::with_client_addr;
use tower_sticky::{Backends, StickyLayer};

pub type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// A server on a free loopback port; stopped (like a crash, without draining) by `kill`.
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    pub async fn start(router: Router) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, mut stopped) = oneshot::channel::<()>();
        // Connections live in a set of this task's, so a kill drops them all at once, as a crash
        // would (`axum::serve` would leave its connection tasks running).
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let router = router.clone();
                        let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                            router.clone().oneshot(req.map(axum::body::Body::new))
                        });
                        connections.spawn(
                            hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service),
                        );
                    }
                    _ = &mut stopped => break,
                    // Reap finished connections so the set does not grow.
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        Ok(Self {
            addr,
            stop: Some(stop),
            task,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server at once: the listener closes and every connection is dropped.
    pub async fn kill(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// A backend that answers every path with its id.
pub async fn id_backend(id: &'static str) -> Result<Server> {
    Server::start(Router::new().fallback(get(move || async move { id }))).await
}

/// The gateway's client for one backend server.
pub fn http_backend(id: &'static str, server: &Server) -> Result<HttpBackend> {
    Ok(HttpBackend::builder(&server.url())
        .name(id)
        .connect_timeout(Duration::from_millis(300))
        .build()?)
}

/// Remote backends for a gateway: one `HttpBackend` per server.
pub fn remote(servers: &[(&'static str, &Server)]) -> Result<Backends<HttpBackend>> {
    let mut backends = Backends::new();
    for (id, server) in servers {
        backends = backends.with(*id, http_backend(id, server)?);
    }
    Ok(backends)
}

/// Serves `layer` over `backends` on a free loopback port; returns the URL.
pub async fn gateway(layer: StickyLayer, backends: Backends<HttpBackend>) -> Result<String> {
    let sticky = layer.sticky(backends);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, with_client_addr(sticky)).await;
    });
    Ok(url)
}

/// A user's HTTP client: its own cookie jar and source address.
pub fn client(source: IpAddr) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .cookie_store(true)
        .local_address(source)
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()?)
}

pub fn loopback(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// One GET; returns (status, body, whether the response set a cookie).
pub async fn get_page(
    client: &reqwest::Client,
    url: &str,
    header: Option<(&str, &str)>,
) -> Result<(u16, String, bool)> {
    let mut req = client.get(url);
    if let Some((name, value)) = header {
        req = req.header(name, value);
    }
    let res = req.send().await?;
    let status = res.status().as_u16();
    let set_cookie = res.headers().contains_key("set-cookie");
    Ok((status, res.text().await?, set_cookie))
}

pub fn title(text: &str) {
    println!("\n== {text} ==");
}

/// A bar chart of requests (or users) per backend.
pub fn bars(label: &str, load: &BTreeMap<String, usize>) {
    let max = load.values().copied().max().unwrap_or(0).max(1);
    println!("{label}:");
    for (backend, n) in load {
        println!("  {backend:>3} | {:<30} {n}", "#".repeat(n * 30 / max));
    }
}

pub fn count<'a>(
    hits: impl IntoIterator<Item = &'a String>,
    ids: &[&str],
) -> BTreeMap<String, usize> {
    let mut load: BTreeMap<String, usize> = ids.iter().map(|id| (id.to_string(), 0)).collect();
    for hit in hits {
        *load.entry(hit.clone()).or_default() += 1;
    }
    load
}
