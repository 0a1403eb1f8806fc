//! `HttpBackend`'s HTTP/1.1 client against a scripted backend on loopback that writes exact bytes:
//! framings a well-behaved server rarely produces (chunked with trailers, bodies that run to the
//! close, interim responses, conflicting lengths), broken responses, and connections that die at
//! awkward moments. Also what the backend receives for each request framing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tower::ServiceExt;
use tower_sticky::http_backend::{HttpBackend, HttpErrorKind};

/// What the scripted backend does with one request.
#[derive(Clone)]
enum Reply {
    /// Write these bytes and wait for the next request on the connection.
    Send(&'static [u8]),
    /// Write these bytes, then close the connection.
    SendAndClose(&'static [u8]),
    /// Write these bytes, keep the connection a moment, then close it without a word.
    SendThenIdleClose(&'static [u8], Duration),
    /// Close the connection without answering.
    Close,
}

/// A backend on loopback whose answer to request `n` of connection `c` is `script(c, n)`.
struct Scripted {
    url: String,
    connections: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<Vec<u8>>>>,
}

async fn scripted(script: fn(usize, usize) -> Reply) -> Scripted {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let (count, seen) = (Arc::clone(&connections), Arc::clone(&requests));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let conn = count.fetch_add(1, Ordering::SeqCst);
            let seen = Arc::clone(&seen);
            tokio::spawn(serve_connection(stream, conn, script, seen));
        }
    });
    Scripted {
        url,
        connections,
        requests,
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    conn: usize,
    script: fn(usize, usize) -> Reply,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
) {
    let mut buf = Vec::new();
    for n in 0.. {
        let Some(request) = read_request(&mut stream, &mut buf).await else {
            return;
        };
        seen.lock().unwrap().push(request);
        match script(conn, n) {
            Reply::Send(bytes) => {
                if stream.write_all(bytes).await.is_err() {
                    return;
                }
            }
            Reply::SendAndClose(bytes) => {
                let _ = stream.write_all(bytes).await;
                return;
            }
            Reply::SendThenIdleClose(bytes, after) => {
                let _ = stream.write_all(bytes).await;
                tokio::time::sleep(after).await;
                return;
            }
            Reply::Close => return,
        }
    }
}

/// One whole request (head and body, by `Content-Length` or chunked) from the connection.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let body_start = end + 4;
            let total = if head.contains("transfer-encoding: chunked") {
                // The last chunk, then the (possibly empty) trailer section.
                find(&buf[body_start..], b"0\r\n")
                    .and_then(|last| {
                        let from = body_start + last + 3;
                        find(&buf[from..], b"\r\n").map(|_| from)
                    })
                    .and_then(|from| {
                        if buf[from..].starts_with(b"\r\n") {
                            Some(from + 2)
                        } else {
                            find(&buf[from..], b"\r\n\r\n").map(|e| from + e + 4)
                        }
                    })
            } else {
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                (buf.len() >= body_start + length).then_some(body_start + length)
            };
            if let Some(total) = total {
                return Some(buf.drain(..total).collect());
            }
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

async fn send(
    backend: &HttpBackend,
    req: http::Request<Body>,
) -> Result<http::Response<Body>, tower_sticky::http_backend::HttpBackendError> {
    timeout(Duration::from_secs(5), backend.clone().oneshot(req))
        .await
        .expect("an answer in time")
}

async fn get(backend: &HttpBackend, path: &str) -> http::Response<Body> {
    send(
        backend,
        http::Request::get(path).body(Body::empty()).unwrap(),
    )
    .await
    .expect("a response")
}

async fn body_of(res: http::Response<Body>) -> Bytes {
    timeout(Duration::from_secs(5), res.into_body().collect())
        .await
        .expect("the body in time")
        .expect("a whole body")
        .to_bytes()
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

#[tokio::test]
async fn a_chunked_response_streams_with_its_trailers_and_the_connection_is_reused() {
    let server = scripted(|_, _| {
        Reply::Send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nx-sum: 12\r\n\r\n")
    })
    .await;
    let backend = HttpBackend::new(&server.url).unwrap();
    for _ in 0..3 {
        let res = get(&backend, "/").await;
        assert!(
            res.headers().get("transfer-encoding").is_none(),
            "hop-by-hop"
        );
        let collected = res.into_body().collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["x-sum"], "12");
        assert_eq!(collected.to_bytes(), "hello, world");
    }
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_body_that_runs_to_the_close_is_read_whole_and_its_connection_not_reused() {
    let server =
        scripted(|_, _| Reply::SendAndClose(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")).await;
    let backend = HttpBackend::new(&server.url).unwrap();
    for _ in 0..2 {
        assert_eq!(body_of(get(&backend, "/").await).await, "until the end");
    }
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn interim_responses_are_skipped_and_head_responses_have_no_body() {
    let server = scripted(|_, n| match n {
        0 => Reply::Send(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"),
        // A HEAD response announces the length of the body a GET would get, and sends none.
        _ => Reply::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
    })
    .await;
    let backend = HttpBackend::new(&server.url).unwrap();
    let res = get(&backend, "/").await;
    assert_eq!(res.status(), 201);
    assert_eq!(body_of(res).await, "ok");
    for _ in 0..2 {
        let res = send(
            &backend,
            http::Request::head("/").body(Body::empty()).unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(res.headers()["content-length"], "5");
        assert_eq!(body_of(res).await, "");
    }
    assert_eq!(
        server.connections.load(Ordering::SeqCst),
        1,
        "after a HEAD the connection is still in step"
    );
}

#[tokio::test]
async fn broken_responses_are_bad_gateway_errors_and_never_reused() {
    let server = scripted(|c, _| match c {
        0 => Reply::Send(b"garbage\r\n\r\n"),
        1 => Reply::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok"),
        2 => Reply::SendAndClose(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"),
        3 => Reply::SendAndClose(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
        _ => Reply::Send(OK),
    })
    .await;
    let backend = HttpBackend::new(&server.url).unwrap();
    for _ in 0..2 {
        let error = send(
            &backend,
            http::Request::get("/").body(Body::empty()).unwrap(),
        )
        .await
        .unwrap_err();
        assert_eq!(error.kind(), HttpErrorKind::Sent);
        assert_eq!(error.status(), 502);
    }
    // A head that promises more than comes, and a chunked body that is not: the body fails.
    for _ in 0..2 {
        let res = get(&backend, "/").await;
        assert!(res.into_body().collect().await.is_err());
    }
    assert_eq!(body_of(get(&backend, "/").await).await, "ok");
    assert_eq!(
        server.connections.load(Ordering::SeqCst),
        5,
        "each failure closed its connection"
    );
}

#[tokio::test]
async fn a_response_with_both_lengths_is_read_as_chunked_and_its_connection_dropped() {
    let server = scripted(|_, _| {
        Reply::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
    })
    .await;
    let backend = HttpBackend::new(&server.url).unwrap();
    for _ in 0..2 {
        let res = get(&backend, "/").await;
        assert!(res.headers().get("content-length").is_none());
        assert_eq!(body_of(res).await, "ok");
    }
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_connection_the_backend_closed_while_idle_is_not_used() {
    let server = scripted(|_, _| Reply::SendThenIdleClose(OK, Duration::from_millis(20))).await;
    let backend = HttpBackend::new(&server.url).unwrap();
    assert_eq!(body_of(get(&backend, "/").await).await, "ok");
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Not idempotent, so it could not be resent: it must go on a live connection from the start.
    let post = http::Request::post("/").body(Body::from("x")).unwrap();
    let res = send(&backend, post)
        .await
        .expect("no error for a connection that died idle");
    assert_eq!(body_of(res).await, "ok");
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_pooled_connection_dying_under_a_request_resends_only_what_is_safe_to_resend() {
    // The first connection answers once, then takes the next request and closes without a word
    // (the race where a backend closes an idle connection as a request goes out).
    let server = scripted(|c, n| match (c, n) {
        (0, 0) | (2, 0) => Reply::Send(OK),
        (0, _) | (2, _) => Reply::Close,
        _ => Reply::Send(OK),
    })
    .await;
    let backend = HttpBackend::new(&server.url).unwrap();
    assert_eq!(body_of(get(&backend, "/").await).await, "ok");
    let res = get(&backend, "/again").await;
    assert_eq!(
        body_of(res).await,
        "ok",
        "an idempotent request is resent on a new connection"
    );
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);

    // Connection 2 (the third) answers once, then dies under a POST: it may have been processed,
    // so it is not sent again.
    drop(backend);
    let backend = HttpBackend::new(&server.url).unwrap();
    assert_eq!(body_of(get(&backend, "/").await).await, "ok");
    let error = send(
        &backend,
        http::Request::post("/pay").body(Body::from("1")).unwrap(),
    )
    .await
    .unwrap_err();
    assert_eq!(error.kind(), HttpErrorKind::Sent);
    let posts = server
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.starts_with(b"POST /pay "))
        .count();
    assert_eq!(posts, 1, "the POST reached the backend once");
}

#[tokio::test]
async fn request_bodies_are_framed_by_length_or_chunked_with_trailers() {
    let server = scripted(|_, _| Reply::Send(OK)).await;
    let backend = HttpBackend::new(&server.url).unwrap();

    let sized = http::Request::put("/sized")
        .body(Body::from("12345"))
        .unwrap();
    body_of(send(&backend, sized).await.unwrap()).await;
    let empty_post = http::Request::post("/empty").body(Body::empty()).unwrap();
    body_of(send(&backend, empty_post).await.unwrap()).await;

    let (tx, rx) = mpsc::channel::<Result<http_body::Frame<Bytes>, std::io::Error>>(4);
    let stream = http_body_util::StreamBody::new(tokio_stream_from(rx));
    let streamed = http::Request::post("/streamed")
        .body(Body::new(stream))
        .unwrap();
    let call = tokio::spawn({
        let backend = backend.clone();
        async move { send(&backend, streamed).await }
    });
    tx.send(Ok(http_body::Frame::data(Bytes::from("ab"))))
        .await
        .unwrap();
    tx.send(Ok(http_body::Frame::data(Bytes::from("cde"))))
        .await
        .unwrap();
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-digest", "7".parse().unwrap());
    tx.send(Ok(http_body::Frame::trailers(trailers)))
        .await
        .unwrap();
    drop(tx);
    body_of(call.await.unwrap().unwrap()).await;

    let seen = server.requests.lock().unwrap().clone();
    let text: Vec<String> = seen
        .iter()
        .map(|r| String::from_utf8_lossy(r).into_owned())
        .collect();
    assert!(
        text[0].starts_with("PUT /sized HTTP/1.1\r\n"),
        "{}",
        text[0]
    );
    assert!(text[0].contains("\r\ncontent-length: 5\r\n") && text[0].ends_with("\r\n\r\n12345"));
    assert!(text[1].contains("\r\ncontent-length: 0\r\n"), "{}", text[1]);
    assert!(
        text[2].contains("\r\ntransfer-encoding: chunked\r\n"),
        "{}",
        text[2]
    );
    assert!(
        text[2].ends_with("\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\nx-digest: 7\r\n\r\n"),
        "{}",
        text[2]
    );
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
}

/// A stream of the frames sent on `rx`.
fn tokio_stream_from<T: Send + 'static>(
    rx: mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}
