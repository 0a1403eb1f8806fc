//! Real HTTP on loopback: backends that answer with their id, a gateway serving a `Sticky` with
//! connect info, a small forwarding service standing in for remote backends, and clients bound to
//! chosen source addresses (the whole of 127.0.0.0/8 is loopback on Linux).

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, Request};
use axum::routing::get as get_route;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tower::Service;

/// A router that answers every path with its id; `/slow?ms=N` waits first.
pub fn id_router(id: &'static str) -> Router {
    #[derive(serde::Deserialize)]
    struct Slow {
        ms: u64,
    }
    Router::new()
        .route(
            "/slow",
            get_route(move |Query(q): Query<Slow>| async move {
                tokio::time::sleep(Duration::from_millis(q.ms)).await;
                id
            }),
        )
        .fallback(move || async move { id })
}

/// A backend server on `127.0.0.1:0`, stopped when dropped or [`TestServer::stop`]ped.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    /// Stops accepting and closes the listener (in-flight requests are finished gracefully).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Serves `router` on `bind` (e.g. `127.0.0.1:0` or `[::1]:0`) with connect info.
pub async fn serve_router(bind: &str, router: Router) -> TestServer {
    let listener = TcpListener::bind(bind).await.expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async {
            let _ = rx.await;
        })
        .await;
    });
    TestServer {
        addr,
        stop: Some(tx),
        task,
    }
}

/// A backend answering with its id, on `127.0.0.1:0`.
pub async fn spawn_backend(id: &'static str) -> TestServer {
    serve_router("127.0.0.1:0", id_router(id)).await
}

/// Serves any axum-compatible service (e.g. a `Sticky`) as the gateway, with connect info.
pub async fn serve_gateway<S>(bind: &str, service: S) -> TestServer
where
    S: Service<Request, Response = axum::response::Response, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    serve_router(bind, Router::new().fallback_service(service)).await
}

/// A minimal forwarding service standing in for a remote backend: sends the request to `base`
/// and returns its response. Connection failures become 502.
#[derive(Clone)]
pub struct Forward {
    client: Client<HttpConnector, Body>,
    base: String,
}

impl Forward {
    pub fn new(base: String) -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base,
        }
    }
}

impl Service<Request> for Forward {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let client = self.client.clone();
        let uri = format!("{}{}", self.base, path);
        Box::pin(async move {
            *req.uri_mut() = uri.parse().expect("uri");
            match client.request(req).await {
                Ok(res) => Ok(res.map(Body::new)),
                Err(e) => Ok(http::Response::builder()
                    .status(502)
                    .body(Body::from(format!("forward failed: {e}")))
                    .expect("response")),
            }
        })
    }
}

/// An HTTP client whose connections come from `source` (e.g. 127.0.0.7).
pub fn client_from(source: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source)
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// GET `url` with extra headers; returns status and body text.
pub async fn get(client: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut req = client.get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = req.send().await.expect("request sent");
    let status = res.status().as_u16();
    (status, res.text().await.expect("body"))
}

/// Reads a body to a string (for in-process calls).
pub async fn body_text(body: Body) -> String {
    String::from_utf8_lossy(&body.collect().await.expect("body").to_bytes()).into_owned()
}
