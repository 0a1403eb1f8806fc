//! `HttpBackend` over real HTTP on loopback: what it adds and removes, streaming both ways, h2c,
//! base paths, and its typed errors.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use support::backend::{refused_addr, spawn_hung, text};
use support::http::{client_from, serve_gateway, serve_router};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tower::ServiceExt;
use tower_sticky::affinity::{ClientAddr, RoundRobin};
use tower_sticky::http_backend::{HttpBackend, HttpErrorKind};
use tower_sticky::{Backends, StickyLayer};

/// A backend that reports what it received, one `name: value` per line.
fn reporter() -> Router {
    Router::new().fallback(|req: Request| async move {
        let h = req.headers();
        let get = |n: &str| {
            h.get(n)
                .map_or("-".to_owned(), |v| v.to_str().unwrap().to_owned())
        };
        let mut res = Response::new(Body::from(format!(
            "uri: {}\nversion: {:?}\nhost: {}\nxff: {}\nproto: {}\nxfh: {}\nforwarded: {}\nx-hop: {}\nkeep-alive: {}\nx-end: {}\n",
            req.uri(),
            req.version(),
            get("host"),
            get("x-forwarded-for"),
            get("x-forwarded-proto"),
            get("x-forwarded-host"),
            get("forwarded"),
            get("x-hop"),
            get("keep-alive"),
            get("x-end"),
        )));
        res.headers_mut()
            .insert("x-resp-hop", "secret".parse().unwrap());
        res.headers_mut()
            .insert("connection", "x-resp-hop".parse().unwrap());
        res.headers_mut().insert("x-resp-end", "kept".parse().unwrap());
        res
    })
}

fn line<'a>(report: &'a str, name: &str) -> &'a str {
    report
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} in {report}"))
}

#[tokio::test]
async fn rewrites_authority_adds_forwarding_headers_and_strips_hop_by_hop_both_ways() {
    let backend = serve_router("127.0.0.1:0", reporter()).await;
    let base = format!("{}/api", backend.url());
    let backends = Backends::new().with("a", HttpBackend::new(&base).unwrap());
    let gateway = serve_gateway(
        "127.0.0.1:0",
        StickyLayer::new(RoundRobin::new()).sticky(backends),
    )
    .await;
    let client = client_from([127, 0, 0, 33].into());
    let res = client
        .get(format!("{}/shop/cart?x=1", gateway.url()))
        .header("x-forwarded-for", "198.51.100.1")
        .header("connection", "x-hop")
        .header("x-hop", "must-not-pass")
        .header("x-end", "passes")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers().get("x-resp-hop").is_none(),
        "{:?}",
        res.headers()
    );
    assert_eq!(res.headers()["x-resp-end"], "kept");
    let report = res.text().await.unwrap();

    assert_eq!(line(&report, "uri"), "/api/shop/cart?x=1");
    assert_eq!(line(&report, "version"), "HTTP/1.1");
    assert_eq!(line(&report, "host"), backend.addr.to_string());
    assert_eq!(line(&report, "xff"), "198.51.100.1, 127.0.0.33");
    assert_eq!(line(&report, "proto"), "http");
    assert_eq!(line(&report, "xfh"), gateway.addr.to_string());
    assert_eq!(
        line(&report, "forwarded"),
        format!("for=127.0.0.33;host=\"{}\";proto=http", gateway.addr)
    );
    assert_eq!(line(&report, "x-hop"), "-");
    assert_eq!(line(&report, "x-end"), "passes");
}

#[tokio::test]
async fn speaks_h2c_with_prior_knowledge_and_http1_by_default() {
    let backend = serve_router("127.0.0.1:0", reporter()).await;
    let h2 = HttpBackend::builder(&backend.url())
        .http2_prior_knowledge(true)
        .build()
        .unwrap();
    let h1 = HttpBackend::new(&backend.url()).unwrap();
    for (svc, expected) in [(h2, "HTTP/2.0"), (h1, "HTTP/1.1")] {
        let mut req = http::Request::builder()
            .uri("/v")
            .header("host", "public.example")
            .body(Body::empty())
            .unwrap();
        req.extensions_mut()
            .insert(ClientAddr("[2001:db8::5]:1234".parse().unwrap()));
        let res = svc.oneshot(req).await.unwrap();
        let report = text(res.into_body()).await;
        assert_eq!(line(&report, "version"), expected);
        assert_eq!(line(&report, "xfh"), "public.example");
        assert_eq!(line(&report, "xff"), "2001:db8::5");
        assert!(line(&report, "forwarded").starts_with("for=\"[2001:db8::5]\""));
    }
}

fn channel_body() -> (mpsc::Sender<Result<Bytes, std::io::Error>>, Body) {
    let (tx, rx) = mpsc::channel(4);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (tx, Body::from_stream(stream))
}

#[tokio::test]
async fn streams_request_and_response_bodies_without_buffering() {
    // The backend reports the request's first chunk as soon as it has it, and answers with a
    // body the test feeds chunk by chunk.
    let (first_tx, mut first_rx) = mpsc::channel::<String>(1);
    let (resp_tx, resp_body) = channel_body();
    let resp_body = std::sync::Mutex::new(Some(resp_body));
    let resp_body = std::sync::Arc::new(resp_body);
    let router = Router::new().fallback(move |req: Request| {
        let first_tx = first_tx.clone();
        let resp_body = resp_body.clone();
        async move {
            let mut body = req.into_body().into_data_stream();
            let first = body.next().await.unwrap().unwrap();
            first_tx
                .send(String::from_utf8_lossy(&first).into_owned())
                .await
                .unwrap();
            let mut rest = Vec::new();
            while let Some(chunk) = body.next().await {
                rest.extend_from_slice(&chunk.unwrap());
            }
            assert_eq!(rest, b"two");
            resp_body.lock().unwrap().take().unwrap()
        }
    });
    let backend = serve_router("127.0.0.1:0", router).await;
    let svc = HttpBackend::new(&backend.url()).unwrap();

    let (req_tx, req_body) = channel_body();
    let call = tokio::spawn(svc.oneshot(http::Request::post("/up").body(req_body).unwrap()));
    req_tx.send(Ok(Bytes::from("one"))).await.unwrap();
    // Arrives while the request body is still open: the proxy did not buffer it.
    let first = timeout(Duration::from_secs(5), first_rx.recv()).await;
    assert_eq!(first.expect("first chunk streamed").as_deref(), Some("one"));
    req_tx.send(Ok(Bytes::from("two"))).await.unwrap();
    drop(req_tx);

    resp_tx.send(Ok(Bytes::from("a"))).await.unwrap();
    let res = timeout(Duration::from_secs(5), call)
        .await
        .expect("response head")
        .unwrap()
        .unwrap();
    let mut body = res.into_body();
    let frame = timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("first response chunk streamed")
        .unwrap()
        .unwrap();
    assert_eq!(frame.into_data().unwrap(), "a");
    resp_tx.send(Ok(Bytes::from("b"))).await.unwrap();
    drop(resp_tx);
    assert_eq!(body.collect().await.unwrap().to_bytes(), "b");
}

#[tokio::test]
async fn connect_refused_is_not_sent_and_gives_the_request_back() {
    let addr: SocketAddr = refused_addr().await;
    let svc = HttpBackend::builder(&format!("http://{addr}"))
        .name("dead")
        .build()
        .unwrap();
    let req = http::Request::post("/orders")
        .body(Body::from("payload"))
        .unwrap();
    let mut error = timeout(Duration::from_secs(5), svc.oneshot(req))
        .await
        .unwrap()
        .unwrap_err();
    assert!(error.is_not_sent(), "{error:?}");
    assert_eq!(error.backend(), "dead");
    assert!(error.to_string().contains("backend dead"), "{error}");
    let back: http::Request<Body> = error.take_request().expect("request given back");
    assert_eq!(back.uri().path(), "/orders");
    assert_eq!(text(back.into_body()).await, "payload");
}

#[tokio::test]
async fn a_hung_backend_times_out_with_a_typed_error() {
    let (addr, accepted, _task) = spawn_hung().await;
    let svc = HttpBackend::builder(&format!("http://{addr}"))
        .name("hung")
        .request_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let error = timeout(
        Duration::from_secs(5),
        svc.oneshot(http::Request::get("/").body(Body::empty()).unwrap()),
    )
    .await
    .expect("the timeout fires, the call does not hang")
    .unwrap_err();
    assert_eq!(
        error.kind(),
        HttpErrorKind::Timeout(Duration::from_millis(200))
    );
    assert!(!error.is_not_sent());
    assert_eq!(error.status(), http::StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(accepted.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[test]
fn base_urls_are_checked() {
    for (bad, why) in [
        ("not a url", "not a URL"),
        ("https://127.0.0.1:1", "only http"),
        ("http://127.0.0.1:1/?q=1", "query"),
        ("/just/a/path", "no scheme"),
    ] {
        let err = HttpBackend::new(bad).unwrap_err();
        assert!(err.to_string().contains(why), "{bad}: {err}");
    }
    assert_eq!(
        HttpBackend::new("http://10.0.0.7:8080/").unwrap().name(),
        "10.0.0.7:8080"
    );
}

/// A backend that answers with the client port of the connection the request came on, plus a
/// body of `?len=N` bytes, and `Connection: close` for `?close`.
fn port_reporter() -> Router {
    Router::new().fallback(
        |axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
         req: Request| async move {
            let query = req.uri().query().unwrap_or("");
            let len: usize = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("len="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let mut res = Response::new(Body::from(format!("{}\n{}", peer.port(), "x".repeat(len))));
            if query.contains("close") {
                res.headers_mut()
                    .insert("connection", "close".parse().unwrap());
            }
            res
        },
    )
}

async fn port_of(backend: &HttpBackend, path: &str) -> (String, Response<Body>) {
    let req = http::Request::builder()
        .uri(path)
        .body(Body::empty())
        .unwrap();
    let res = backend.clone().oneshot(req).await.unwrap();
    let (head, body) = res.into_parts();
    let mut body = body.into_data_stream();
    let first = body.next().await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&first).to_string();
    let port = text.lines().next().unwrap().to_owned();
    // The rest of the body stays unread in the returned response.
    (port, Response::from_parts(head, Body::from_stream(body)))
}

#[tokio::test]
async fn connections_are_reused_only_after_their_response_was_read_to_the_end() {
    let server = serve_router("127.0.0.1:0", port_reporter()).await;
    let backend = HttpBackend::new(&server.url()).unwrap();

    // Read to the end: the next request goes on the same connection.
    let (first, res) = port_of(&backend, "/").await;
    res.into_body().collect().await.unwrap();
    let (second, res) = port_of(&backend, "/").await;
    res.into_body().collect().await.unwrap();
    assert_eq!(first, second, "a finished connection is reused");

    // While a response is still streaming, its connection is busy: a new one is made.
    let (streaming, open) = port_of(&backend, "/?len=300000").await;
    let (meanwhile, res) = port_of(&backend, "/").await;
    res.into_body().collect().await.unwrap();
    assert_ne!(streaming, meanwhile, "a busy connection is not shared");

    // Dropping a body before its end closes that connection instead of pooling it; nothing
    // breaks for the next requests.
    drop(open);
    for _ in 0..3 {
        let (port, res) = port_of(&backend, "/").await;
        res.into_body().collect().await.unwrap();
        assert_ne!(port, streaming, "a half-read connection is never reused");
    }
}

#[tokio::test]
async fn a_connection_the_server_closes_is_replaced_without_an_error() {
    let server = serve_router("127.0.0.1:0", port_reporter()).await;
    let backend = HttpBackend::new(&server.url()).unwrap();
    let (closing, res) = port_of(&backend, "/?close").await;
    res.into_body().collect().await.unwrap();
    // Give the connection task a moment to see the close (it also works without: a closed
    // connection fails its readiness check and is dropped).
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (next, res) = port_of(&backend, "/").await;
    res.into_body().collect().await.unwrap();
    assert_ne!(closing, next);
}

#[tokio::test]
async fn with_no_idle_connections_kept_every_request_connects() {
    let server = serve_router("127.0.0.1:0", port_reporter()).await;
    let backend = HttpBackend::builder(&server.url())
        .pool_max_idle(0)
        .build()
        .unwrap();
    let mut ports = std::collections::HashSet::new();
    for _ in 0..3 {
        let (port, res) = port_of(&backend, "/").await;
        res.into_body().collect().await.unwrap();
        ports.insert(port);
    }
    assert_eq!(ports.len(), 3);
}

#[tokio::test]
async fn idle_connections_older_than_the_idle_timeout_are_not_reused() {
    let server = serve_router("127.0.0.1:0", port_reporter()).await;
    let backend = HttpBackend::builder(&server.url())
        .pool_idle_timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let (old, res) = port_of(&backend, "/").await;
    res.into_body().collect().await.unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    let (second, res) = port_of(&backend, "/").await;
    res.into_body().collect().await.unwrap();
    assert_ne!(old, second, "the expired connection was not handed out");
    let (third, res) = port_of(&backend, "/").await;
    res.into_body().collect().await.unwrap();
    assert_eq!(
        second, third,
        "a connection idle for less than the timeout is reused"
    );
}

#[tokio::test]
async fn a_connection_still_sending_an_early_answered_request_does_not_hold_up_the_next() {
    // The backend answers at once without reading the request body; the client keeps that body
    // open, so the first connection is not free when the second request comes.
    let server = serve_router("127.0.0.1:0", port_reporter()).await;
    let backend = HttpBackend::new(&server.url()).unwrap();
    let (req_tx, req_body) = channel_body();
    req_tx.send(Ok(Bytes::from("start"))).await.unwrap();
    let early = backend
        .clone()
        .oneshot(http::Request::post("/").body(req_body).unwrap());
    let res = timeout(Duration::from_secs(5), early)
        .await
        .expect("an early answer arrives")
        .unwrap();
    res.into_body().collect().await.unwrap();

    let next = timeout(Duration::from_secs(5), port_of(&backend, "/")).await;
    let (_, res) = next.expect("the next request is not stuck behind the unfinished one");
    res.into_body().collect().await.unwrap();
    drop(req_tx);
}
