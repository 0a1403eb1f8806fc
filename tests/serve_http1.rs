//! `serve::http1::serve` over real TCP on loopback, mostly from a raw socket so that the exact
//! bytes on the wire can be checked: keep-alive and pipelining, request bodies framed by
//! `Content-Length` and by chunking (small, large, streamed back while still arriving),
//! `Expect: 100-continue`, streamed responses to HTTP/1.1 (chunked) and HTTP/1.0 (close-delimited)
//! clients, HEAD, malformed and ambiguous requests (each answered with a status and a closed
//! connection, never forwarded, never fatal to the server), `Connection: close`, the
//! `ClientAddr` extension, graceful shutdown, handlers that ignore the request body, reqwest as an
//! ordinary client, and a property test throwing request-shaped garbage at one shared server.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request};
use axum::routing::{get, post};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::Full;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tower_sticky::affinity::ClientAddr;
use tower_sticky::serve::http1::serve;

/// How long any single read may wait. Generous: a slow CI machine must not fail a correct server.
const READ: Duration = Duration::from_secs(5);

/// The chunks `/stream` sends, with a pause between them so they leave the server separately.
const STREAM_CHUNKS: [&str; 3] = ["alpha-", "beta-", "gamma"];

// ---------------------------------------------------------------------------------------------
// The server under test
// ---------------------------------------------------------------------------------------------

/// `serve` running on `127.0.0.1:0`; dropping it triggers the shutdown future.
struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Server {
    /// Resolves `serve`'s shutdown future.
    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn start<S, B>(service: S) -> Server
where
    S: tower_service::Service<
            http::Request<Body>,
            Response = http::Response<B>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, service, async move {
        let _ = stopped.await;
    }));
    Server {
        addr,
        stop: Some(stop),
        task,
    }
}

/// The application most tests talk to. Every route answers with a body whose length the server
/// knows, except `/stream` and `/stream-echo`, whose length it cannot know in advance.
fn app() -> Router {
    Router::new()
        .route("/", get(|| async { "hello" }))
        .route("/echo", post(|body: Bytes| async move { body }))
        // Sends the request body back as it arrives, so the response starts before the request
        // body has been read to the end.
        .route(
            "/stream-echo",
            post(
                |req: Request| async move { Body::from_stream(req.into_body().into_data_stream()) },
            ),
        )
        .route(
            "/stream",
            get(|| async {
                let chunks = futures_util::stream::iter(STREAM_CHUNKS).then(|chunk| async move {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    Ok::<_, Infallible>(Bytes::from_static(chunk.as_bytes()))
                });
                Body::from_stream(chunks)
            }),
        )
        .route(
            "/addr",
            get(
                |axum::Extension(ClientAddr(addr)): axum::Extension<ClientAddr>| async move {
                    addr.to_string()
                },
            ),
        )
        // Answers without touching the body.
        .route("/ignore", post(|| async { "ignored" }))
        .route(
            "/sleep/{ms}",
            get(|Path(ms): Path<u64>| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                format!("slept {ms}")
            }),
        )
}

// ---------------------------------------------------------------------------------------------
// A raw HTTP/1.1 client
// ---------------------------------------------------------------------------------------------

/// One response as read off the wire.
#[derive(Debug)]
struct Response {
    /// The minor version of the status line (`HTTP/1.x`).
    minor: u8,
    status: u16,
    /// Names lowercased, values lossily decoded.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The body arrived with chunked framing.
    chunked: bool,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `connection: close` (the header may list several tokens).
    fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    }
}

/// Why no response could be read.
#[derive(Debug)]
enum ReadError {
    /// The server closed the connection; `partial` if it had sent part of a response.
    Eof {
        partial: bool,
    },
    Timeout,
    Io(io::Error),
    Malformed(String),
}

/// How a response body is delimited (RFC 9112 section 6.3, as seen by a client).
enum Framing {
    Empty,
    Length(usize),
    Chunked,
    UntilClose,
}

/// A raw connection with a read buffer that survives between responses (so pipelined responses,
/// or bytes the server should not have sent, are not lost).
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Self {
        let stream = timeout(READ, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect");
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write request");
    }

    /// Writes and ignores errors: for requests the server may refuse (and close on) before
    /// reading them to the end.
    async fn send_lossy(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    /// Reads once more into the buffer; `Ok(0)` at end of stream.
    async fn read_more(&mut self, wait: Duration) -> Result<usize, ReadError> {
        let mut chunk = [0u8; 16 * 1024];
        match timeout(wait, self.stream.read(&mut chunk)).await {
            Err(_) => Err(ReadError::Timeout),
            Ok(Err(e)) => Err(ReadError::Io(e)),
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(n)
            }
        }
    }

    /// Reads until the buffer holds at least `n` bytes.
    async fn fill(&mut self, n: usize, wait: Duration) -> Result<(), ReadError> {
        while self.buf.len() < n {
            if self.read_more(wait).await? == 0 {
                return Err(ReadError::Eof { partial: true });
            }
        }
        Ok(())
    }

    /// Reads up to and including the next CRLF, returning the line without it.
    async fn line(&mut self, wait: Duration) -> Result<Vec<u8>, ReadError> {
        loop {
            if let Some(at) = find(&self.buf, b"\r\n") {
                let line = self.buf[..at].to_vec();
                self.buf.drain(..at + 2);
                return Ok(line);
            }
            if self.buf.len() > 64 * 1024 {
                return Err(ReadError::Malformed("chunk line too long".into()));
            }
            if self.read_more(wait).await? == 0 {
                return Err(ReadError::Eof { partial: true });
            }
        }
    }

    /// Reads one response. `head_request`: it answers a HEAD, so it has no body whatever its
    /// headers say. Interim (1xx) responses are returned like any other.
    async fn try_response(
        &mut self,
        head_request: bool,
        wait: Duration,
    ) -> Result<Response, ReadError> {
        let (head_len, mut response, framing) = loop {
            if let Some(parsed) = parse_head(&self.buf, head_request)? {
                break parsed;
            }
            if self.buf.len() > 1024 * 1024 {
                return Err(ReadError::Malformed("response head over 1 MiB".into()));
            }
            if self.read_more(wait).await? == 0 {
                return Err(ReadError::Eof {
                    partial: !self.buf.is_empty(),
                });
            }
        };
        self.buf.drain(..head_len);
        match framing {
            Framing::Empty => {}
            Framing::Length(n) => {
                self.fill(n, wait).await?;
                response.body = self.buf.drain(..n).collect();
            }
            Framing::Chunked => {
                response.chunked = true;
                loop {
                    let line = self.line(wait).await?;
                    let size = chunk_size(&line)?;
                    if size == 0 {
                        // Trailer fields, then the empty line.
                        while !self.line(wait).await?.is_empty() {}
                        break;
                    }
                    self.fill(size + 2, wait).await?;
                    if &self.buf[size..size + 2] != b"\r\n" {
                        return Err(ReadError::Malformed(
                            "chunk data not followed by CRLF".into(),
                        ));
                    }
                    response.body.extend(self.buf.drain(..size));
                    self.buf.drain(..2);
                }
            }
            Framing::UntilClose => loop {
                match self.read_more(wait).await {
                    Ok(0) => {
                        response.body = std::mem::take(&mut self.buf);
                        break;
                    }
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
            },
        }
        Ok(response)
    }

    async fn response(&mut self) -> Response {
        self.try_response(false, READ)
            .await
            .expect("a complete response")
    }

    async fn head_response(&mut self) -> Response {
        self.try_response(true, READ)
            .await
            .expect("a complete response to HEAD")
    }

    /// The server closed the connection (a reset counts: closing with unread request bytes makes
    /// the kernel send one) and sent nothing more before doing so.
    async fn assert_closed(&mut self) {
        assert!(
            self.buf.is_empty(),
            "unexpected bytes after the response: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        match self.read_more(READ).await {
            Ok(0) => {}
            Ok(_) => panic!(
                "expected the connection to close, got more bytes: {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
            Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("expected the connection to close: {e:?}"),
        }
    }

    /// Nothing arrives and the connection does not close within a short while.
    async fn assert_open(&mut self) {
        match self.read_more(Duration::from_millis(200)).await {
            Err(ReadError::Timeout) => {}
            other => panic!(
                "expected an open, quiet connection, got {other:?} with {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }
}

/// Parses a response head at the start of `buf`: `None` if incomplete, else its length, the
/// response without a body, and how the body is delimited.
fn parse_head(
    buf: &[u8],
    head_request: bool,
) -> Result<Option<(usize, Response, Framing)>, ReadError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Response::new(&mut headers);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => {
            return Err(ReadError::Malformed(format!(
                "{e}: {:?}",
                String::from_utf8_lossy(&buf[..buf.len().min(200)])
            )));
        }
    };
    let status = parsed.code.expect("complete head has a status");
    let response = Response {
        minor: parsed.version.expect("complete head has a version"),
        status,
        headers: parsed
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect(),
        body: Vec::new(),
        chunked: false,
    };
    let framing = if head_request || (100..200).contains(&status) || status == 204 || status == 304
    {
        Framing::Empty
    } else if let Some(te) = response.header("transfer-encoding") {
        let last = te.rsplit(',').next().unwrap_or("").trim();
        if last.eq_ignore_ascii_case("chunked") {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else {
        let lengths: Vec<&str> = response
            .headers
            .iter()
            .filter(|(n, _)| n == "content-length")
            .map(|(_, v)| v.trim())
            .collect();
        match lengths.as_slice() {
            [] => Framing::UntilClose,
            [one] => Framing::Length(
                one.parse()
                    .map_err(|_| ReadError::Malformed(format!("bad content-length {one:?}")))?,
            ),
            _ => return Err(ReadError::Malformed("several content-length fields".into())),
        }
    };
    Ok(Some((len, response, framing)))
}

/// The size in a chunk-size line (hex, optionally followed by `;extensions`).
fn chunk_size(line: &[u8]) -> Result<usize, ReadError> {
    let text = String::from_utf8_lossy(line);
    let hex = text.split(';').next().unwrap_or("").trim();
    usize::from_str_radix(hex, 16)
        .map_err(|_| ReadError::Malformed(format!("bad chunk size line {text:?}")))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A deterministic body with no repeating short period, so misplaced bytes show.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn get_request(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").into_bytes()
}

fn post_request(path: &str, body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

/// A fresh connection still gets `200 hello`: the server survived whatever came before.
async fn assert_alive(addr: SocketAddr) {
    let mut conn = Conn::open(addr).await;
    conn.send(&get_request("/")).await;
    let res = conn.response().await;
    assert_eq!((res.status, res.text().as_str()), (200, "hello"));
}

// ---------------------------------------------------------------------------------------------
// Connection reuse
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn keep_alive_serves_several_requests_on_one_connection() {
    let server = start(app()).await;
    let mut conn = Conn::open(server.addr).await;
    for _ in 0..3 {
        conn.send(&get_request("/")).await;
        let res = conn.response().await;
        assert_eq!(res.minor, 1);
        assert_eq!(res.status, 200);
        assert_eq!(res.header("content-length"), Some("5"));
        assert!(!res.chunked);
        assert!(!res.closes(), "{res:?}");
        assert_eq!(res.text(), "hello");
    }
    // Still open after a pause: the server keeps idle connections, at least briefly.
    conn.assert_open().await;
    conn.send(&post_request("/echo", b"again")).await;
    let res = conn.response().await;
    assert_eq!((res.status, res.text().as_str()), (200, "again"));
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let server = start(app()).await;
    let mut conn = Conn::open(server.addr).await;
    // The first request is the slowest, so an implementation answering as handlers finish
    // would reorder; the POST checks that body framing holds inside a pipeline.
    let mut batch = get_request("/sleep/100");
    batch.extend(post_request("/echo", b"middle"));
    batch.extend(get_request("/"));
    conn.send(&batch).await;
    let texts = [
        conn.response().await.text(),
        conn.response().await.text(),
        conn.response().await.text(),
    ];
    assert_eq!(texts, ["slept 100", "middle", "hello"]);
    conn.assert_open().await;
}

// ---------------------------------------------------------------------------------------------
// Request bodies
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn content_length_bodies_are_delivered_exactly() {
    let server = start(app()).await;
    let mut conn = Conn::open(server.addr).await;
    for body in [
        &b""[..],
        b"x",
        b"hello, world",
        b"\r\n\r\nGET / HTTP/1.1\r\n\r\n",
    ] {
        conn.send(&post_request("/echo", body)).await;
        let res = conn.response().await;
        assert_eq!(res.status, 200);
        assert_eq!(res.body, body);
        assert_eq!(
            res.header("content-length"),
            Some(body.len().to_string().as_str())
        );
    }
}

#[tokio::test]
async fn chunked_bodies_are_delivered_exactly() {
    let server = start(app()).await;
    let mut conn = Conn::open(server.addr).await;
    let cases: [(&[u8], &[u8]); 4] = [
        (b"5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n", b"hello, world"),
        // Upper-case hex and a chunk extension, which must be skipped, not delivered.
        (b"A;name=value\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
        // Trailer fields must be consumed, or they would be read as the next request.
        (b"3\r\nabc\r\n0\r\nX-Trailer: yes\r\n\r\n", b"abc"),
        (b"0\r\n\r\n", b""),
    ];
    for (encoded, decoded) in cases {
        let mut req =
            b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        req.extend_from_slice(encoded);
        conn.send(&req).await;
        let res = conn.response().await;
        assert_eq!(res.status, 200, "{res:?}");
        assert_eq!(
            res.body,
            decoded,
            "for {:?}",
            String::from_utf8_lossy(encoded)
        );
    }
    // The connection is still in step after all of them.
    conn.send(&get_request("/")).await;
    assert_eq!(conn.response().await.text(), "hello");
}

#[tokio::test]
async fn chunked_body_arriving_byte_by_byte_is_delivered_exactly() {
    let server = start(app()).await;
    let mut conn = Conn::open(server.addr).await;
    conn.send(b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await;
    // Every boundary of the chunk framing falls between two reads at some point.
    for byte in b"4\r\nwiki\r\n5\r\npedia\r\n0\r\n\r\n" {
        conn.send(&[*byte]).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let res = conn.response().await;
    assert_eq!((res.status, res.text().as_str()), (200, "wikipedia"));
}

#[tokio::test]
async fn large_content_length_body_sent_in_pieces_is_echoed_exactly() {
    let server = start(app()).await;
    let mut conn = Conn::open(server.addr).await;
    let body = pattern(1024 * 1024);
    conn.send(
        format!(
            "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await;
    // Uneven pieces, so piece boundaries do not line up with any buffer size.
    for piece in body.chunks(50_000) {
        conn.send(piece).await;
    }
    let res = conn.response().await;
    assert_eq!(res.status, 200);
    assert_eq!(res.body.len(), body.len());
    assert!(res.body == body, "echoed body differs");
    // And the connection is still usable: not one byte too many or too few was consumed.
    conn.send(&get_request("/")).await;
    assert_eq!(conn.response().await.text(), "hello");
}

#[tokio::test]
async fn large_chunked_body_is_echoed_exactly() {
    let server = start(app()).await;
    let mut conn = Conn::open(server.addr).await;
    let body = pattern(1024 * 1024 + 7);
    let mut req =
        b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for chunk in body.chunks(10_007) {
        req.extend(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(chunk);
        req.extend(b"\r\n");
    }
    req.extend(b"0\r\n\r\n");
    conn.send(&req).await;
    let res = conn.response().await;
    assert_eq!(res.status, 200);
    assert!(res.body == body, "echoed body differs");
}

#[tokio::test]
async fn large_body_is_streamed_back_while_it_still_arrives() {
    // The writer sends the head and the first piece, then holds the rest back until echoed bytes
    // have come back: this passes only if the server hands the body to the service as it arrives
    // and writes the response as the service produces it, instead of buffering either whole.
    let server = start(app()).await;
    let stream = TcpStream::connect(server.addr).await.expect("connect");
    let (mut read_half, mut write_half) = stream.into_split();
    let body = pattern(4 * 1024 * 1024);
    let sent = body.clone();
    let (echo_seen, wait_for_echo) = oneshot::channel::<()>();
    let writer = tokio::spawn(async move {
        write_half
            .write_all(
                format!(
                    "POST /stream-echo HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n",
                    sent.len()
                )
                .as_bytes(),
            )
            .await
            .expect("write head");
        let (first, rest) = sent.split_at(64 * 1024);
        write_half.write_all(first).await.expect("write body");
        // Dropped unsent if the reader gave up; it reports the failure then.
        let _ = wait_for_echo.await;
        // The rest in pieces while the reader keeps reading, so neither side's buffers fill.
        for piece in rest.chunks(64 * 1024) {
            write_half.write_all(piece).await.expect("write body");
        }
        write_half
    });
    let mut raw = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut echo_seen = Some(echo_seen);
    while !raw.ends_with(b"\r\n0\r\n\r\n") {
        let n = timeout(READ, read_half.read(&mut chunk))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "stalled after {} response bytes (echo seen: {})",
                    raw.len(),
                    echo_seen.is_none()
                )
            })
            .expect("read");
        assert_ne!(n, 0, "connection closed mid-response");
        raw.extend_from_slice(&chunk[..n]);
        // Some echoed body bytes, beyond the response head, have arrived.
        if find(&raw, b"\r\n\r\n").is_some_and(|end| raw.len() > end + 4 + 16) {
            if let Some(tx) = echo_seen.take() {
                let _ = tx.send(());
            }
        }
    }
    let write_half = timeout(READ, writer).await.expect("writer").expect("join");
    let mut conn = Conn {
        stream: read_half.reunite(write_half).expect("same stream"),
        buf: raw,
    };
    let res = conn.response().await;
    assert_eq!(res.status, 200);
    assert!(
        res.chunked,
        "unknown-length body should be chunked: {res:?}"
    );
    assert_eq!(res.body.len(), body.len());
    assert!(res.body == body, "echoed body differs");
}

#[tokio::test]
async fn expect_100_continue_gets_an_interim_response_before_the_body_is_sent() {
    let server = start(app()).await;
    let mut conn = Conn::open(server.addr).await;
    conn.send(
        b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n",
    )
    .await;
    // The client holds the body back until it has the go-ahead.
    const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
    conn.fill(CONTINUE.len(), READ)
        .await
        .expect("a 100 Continue before the body is sent");
    assert_eq!(
        String::from_utf8_lossy(&conn.buf[..CONTINUE.len()]),
        String::from_utf8_lossy(CONTINUE)
    );
    conn.buf.drain(..CONTINUE.len());
    assert!(
        conn.buf.is_empty(),
        "more than the interim response arrived"
    );
    conn.send(b"hello there").await;
    let res = conn.response().await;
    assert_eq!((res.status, res.text().as_str()), (200, "hello there"));
    // Exactly one interim response was sent: the next request is answered directly.
    conn.send(&get_request("/")).await;
    assert_eq!(conn.response().await.text(), "hello");
}

// ---------------------------------------------------------------------------------------------
// Response bodies
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn streamed_response_is_chunked_for_http11_and_keeps_the_connection() {
    let server = start(app()).await;
    let mut conn = Conn::open(server.addr).await;
    conn.send(&get_request("/stream")).await;
    let res = conn.response().await;
    assert_eq!(res.status, 200);
    assert!(res.chunked, "{res:?}");
    assert_eq!(res.header("transfer-encoding"), Some("chunked"));
    assert_eq!(res.header("content-length"), None);
    assert_eq!(res.text(), STREAM_CHUNKS.concat());
    conn.send(&get_request("/")).await;
    assert_eq!(conn.response().await.text(), "hello");
}

#[tokio::test]
async fn streamed_response_to_http10_is_close_delimited() {
    let server = start(app()).await;
    let mut conn = Conn::open(server.addr).await;
    conn.send(b"GET /stream HTTP/1.0\r\nHost: test\r\n\r\n")
        .await;
    // HTTP/1.0 has no chunking: the body runs to the end of the connection, so `try_response`
    // returns only once the server has closed it.
    let res = conn.response().await;
    assert_eq!(res.status, 200);
    assert!(!res.chunked, "chunked sent to an HTTP/1.0 client: {res:?}");
    assert_eq!(res.header("transfer-encoding"), None);
    assert_eq!(res.header("content-length"), None);
    assert_eq!(res.text(), STREAM_CHUNKS.concat());
}

#[tokio::test]
async fn http10_request_with_known_length_is_answered() {
    let server = start(app()).await;
    let mut conn = Conn::open(server.addr).await;
    conn.send(b"GET / HTTP/1.0\r\n\r\n").await;
    let res = conn.response().await;
    assert_eq!((res.status, res.text().as_str()), (200, "hello"));
    // No keep-alive was asked for, so the server closes.
    conn.assert_closed().await;
}

#[tokio::test]
async fn head_gets_get_headers_without_a_body() {
    let server = start(app()).await;
    let mut conn = Conn::open(server.addr).await;
    conn.send(b"HEAD / HTTP/1.1\r\nHost: test\r\n\r\n").await;
    let res = conn.head_response().await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-length"), Some("5"));
    // Any stray body bytes would be left in the buffer and spoil this response.
    conn.send(&get_request("/")).await;
    let res = conn.response().await;
    assert_eq!((res.status, res.text().as_str()), (200, "hello"));
}

#[tokio::test]
async fn head_drops_a_body_the_service_returned_anyway() {
    // axum's router empties HEAD bodies (and sets Content-Length) itself; a plain service does
    // not, so here the server alone is responsible for both.
    let service = tower::service_fn(|_req: http::Request<Body>| async {
        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(
            b"raw body",
        ))))
    });
    let server = start(service).await;
    let mut conn = Conn::open(server.addr).await;
    conn.send(b"HEAD / HTTP/1.1\r\nHost: test\r\n\r\n").await;
    let head = conn.head_response().await;
    assert_eq!(head.status, 200);
    // Stray body bytes would be left in the buffer and spoil this response.
    conn.send(&get_request("/")).await;
    let get = conn.response().await;
    assert_eq!((get.status, get.text().as_str()), (200, "raw body"));
    conn.send(b"HEAD / HTTP/1.1\r\nHost: test\r\n\r\n").await;
    conn.head_response().await;
    conn.assert_open().await;
    // The same length header a GET gets.
    assert_eq!(get.header("content-length"), Some("8"));
    assert_eq!(
        head.header("content-length"),
        get.header("content-length"),
        "HEAD lacks the GET's content-length: {head:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------------

/// Sends `request` on a fresh connection and checks that the answer is an error status with a
/// body, that the connection is then closed, and that the server still serves others.
async fn assert_rejected(addr: SocketAddr, request: &[u8], allowed: &[u16]) {
    let mut conn = Conn::open(addr).await;
    conn.send_lossy(request).await;
    let shown = String::from_utf8_lossy(&request[..request.len().min(120)]).into_owned();
    let res = conn
        .try_response(false, READ)
        .await
        .unwrap_or_else(|e| panic!("no response to {shown:?}: {e:?}"));
    assert!(
        allowed.contains(&res.status),
        "status {} (expected one of {allowed:?}) for {shown:?}: {res:?}",
        res.status
    );
    assert!(!res.body.is_empty(), "error without a body for {shown:?}");
    conn.assert_closed().await;
    assert_alive(addr).await;
}

#[tokio::test]
async fn malformed_request_lines_get_400() {
    let server = start(app()).await;
    for request in [
        &b"HELLO\r\n\r\n"[..],
        b"GET\r\n\r\n",
        b"GET /\r\nHost: test\r\n\r\n",
        b"GET / HTTP/1.1 extra\r\nHost: test\r\n\r\n",
        b"\x00\x01\x02\xff / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
    ] {
        assert_rejected(server.addr, request, &[400]).await;
    }
}

#[tokio::test]
async fn a_head_over_64_kib_gets_431() {
    let server = start(app()).await;
    let mut request = b"GET / HTTP/1.1\r\nHost: test\r\nX-Big: ".to_vec();
    request.extend(std::iter::repeat_n(b'a', 70 * 1024));
    request.extend(b"\r\n\r\n");
    assert_rejected(server.addr, &request, &[431]).await;
    // Many small fields adding up to over the limit count the same.
    let mut request = b"GET / HTTP/1.1\r\nHost: test\r\n".to_vec();
    for i in 0..2000 {
        request.extend(format!("X-Field-{i}: {}\r\n", "b".repeat(30)).as_bytes());
    }
    request.extend(b"\r\n");
    assert_rejected(server.addr, &request, &[431]).await;
}

#[tokio::test]
async fn a_head_well_under_64_kib_is_accepted() {
    // The other side of the limit: a large but legal head must not be refused.
    let server = start(app()).await;
    let mut conn = Conn::open(server.addr).await;
    let mut request = b"GET / HTTP/1.1\r\nHost: test\r\nX-Big: ".to_vec();
    request.extend(std::iter::repeat_n(b'a', 32 * 1024));
    request.extend(b"\r\n\r\n");
    conn.send(&request).await;
    let res = conn.response().await;
    assert_eq!((res.status, res.text().as_str()), (200, "hello"));
}

#[tokio::test]
async fn content_length_with_transfer_encoding_gets_400() {
    // The classic request-smuggling ambiguity: never guess which framing the sender meant.
    let server = start(app()).await;
    for request in [
        &b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"[..],
        b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ] {
        assert_rejected(server.addr, request, &[400]).await;
    }
}

#[tokio::test]
async fn invalid_content_length_gets_400() {
    let server = start(app()).await;
    for value in [
        "12a",
        "-1",
        "+5",
        "0x5",
        "5 5",
        "",
        "99999999999999999999999",
    ] {
        let request =
            format!("POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: {value}\r\n\r\nhello");
        assert_rejected(server.addr, request.as_bytes(), &[400]).await;
    }
    // Two different lengths, as two fields and as one list.
    for fields in [
        "Content-Length: 5\r\nContent-Length: 6\r\n",
        "Content-Length: 5, 6\r\n",
    ] {
        let request = format!("POST /echo HTTP/1.1\r\nHost: test\r\n{fields}\r\nhello!");
        assert_rejected(server.addr, request.as_bytes(), &[400]).await;
    }
}

#[tokio::test]
async fn transfer_encoding_not_ending_in_chunked_is_refused() {
    let server = start(app()).await;
    for coding in ["gzip", "chunked, gzip", "identity"] {
        let request = format!(
            "POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: {coding}\r\n\r\nhello"
        );
        assert_rejected(server.addr, request.as_bytes(), &[400, 501]).await;
    }
}

#[tokio::test]
async fn connection_close_is_honoured() {
    let server = start(app()).await;
    let mut conn = Conn::open(server.addr).await;
    conn.send(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await;
    let res = conn.response().await;
    assert_eq!((res.status, res.text().as_str()), (200, "hello"));
    assert!(res.closes(), "response lacks connection: close: {res:?}");
    conn.assert_closed().await;
}

#[tokio::test]
async fn connection_close_among_other_tokens_is_honoured() {
    let server = start(app()).await;
    let mut conn = Conn::open(server.addr).await;
    conn.send(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: TE, Close\r\n\r\n")
        .await;
    let res = conn.response().await;
    assert_eq!(res.status, 200);
    assert!(res.closes(), "response lacks connection: close: {res:?}");
    conn.assert_closed().await;
}

// ---------------------------------------------------------------------------------------------
// What handlers see
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn client_addr_is_the_peer_socket_address() {
    let server = start(app()).await;
    for _ in 0..2 {
        let mut conn = Conn::open(server.addr).await;
        let local = conn.stream.local_addr().expect("local addr");
        for _ in 0..2 {
            conn.send(&get_request("/addr")).await;
            let res = conn.response().await;
            assert_eq!(res.status, 200, "{res:?}");
            assert_eq!(res.text(), local.to_string());
        }
    }
}

#[tokio::test]
async fn ignored_body_sent_with_the_head_does_not_spoil_the_connection() {
    let server = start(app()).await;
    let mut conn = Conn::open(server.addr).await;
    let body = pattern(1024);
    conn.send(&post_request("/ignore", &body)).await;
    let res = conn.response().await;
    assert_eq!((res.status, res.text().as_str()), (200, "ignored"));
    assert_next_request_answered_or_closed(&mut conn, &res).await;
}

#[tokio::test]
async fn ignored_body_sent_after_the_response_does_not_spoil_the_connection() {
    // The handler answers before the body has even been sent; the body bytes then arrive where
    // a careless server would look for the next request head.
    let server = start(app()).await;
    let mut conn = Conn::open(server.addr).await;
    conn.send(b"POST /ignore HTTP/1.1\r\nHost: test\r\nContent-Length: 1024\r\n\r\n")
        .await;
    let res = conn.response().await;
    assert_eq!((res.status, res.text().as_str()), (200, "ignored"));
    let mut body = b"GET /not-a-request HTTP/1.1\r\nHost: test\r\n\r\n".to_vec();
    body.resize(1024, b'z');
    conn.send_lossy(&body).await;
    assert_next_request_answered_or_closed(&mut conn, &res).await;
}

/// After a response to a request whose body the handler ignored: either the server read past the
/// body and answers the next request, or it closed the connection (then it should have said so).
async fn assert_next_request_answered_or_closed(conn: &mut Conn, first: &Response) {
    conn.send_lossy(&get_request("/")).await;
    match conn.try_response(false, READ).await {
        Ok(res) => {
            assert_eq!(
                (res.status, res.text()),
                (200, "hello".to_owned()),
                "{res:?}"
            );
        }
        Err(ReadError::Eof { partial: false }) => {}
        Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("neither an answer nor a clean close: {e:?} (first: {first:?})"),
    }
}

// ---------------------------------------------------------------------------------------------
// Graceful shutdown
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn graceful_shutdown_finishes_requests_in_flight_and_closes_idle_connections() {
    // The slow handler waits for a signal rather than a fixed sleep, so the test decides when it
    // finishes and can check `serve` has not returned while it is still running.
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let (s, r) = (Arc::clone(&started), Arc::clone(&release));
    let app = Router::new().route("/", get(|| async { "hello" })).route(
        "/slow",
        get(move || {
            let (started, release) = (Arc::clone(&s), Arc::clone(&r));
            async move {
                started.notify_one();
                release.notified().await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                "slow done"
            }
        }),
    );
    let mut server = start(app).await;
    let addr = server.addr;

    let mut idle = Conn::open(addr).await;
    idle.send(&get_request("/")).await;
    assert_eq!(idle.response().await.text(), "hello");

    let mut slow = Conn::open(addr).await;
    slow.send(&get_request("/slow")).await;
    timeout(READ, started.notified())
        .await
        .expect("slow handler started");

    server.shutdown();
    idle.assert_closed().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !server.task.is_finished(),
        "serve returned while a request was still in flight"
    );

    release.notify_one();
    let res = slow.response().await;
    assert_eq!((res.status, res.text().as_str()), (200, "slow done"));
    // Its request done, that connection is idle too and must not hold the server up.
    slow.assert_closed().await;

    timeout(READ, &mut server.task)
        .await
        .expect("serve did not return after shutdown")
        .expect("serve task panicked");
    assert_not_served(addr).await;
}

#[tokio::test]
async fn shutdown_with_nothing_in_flight_returns_promptly() {
    let mut server = start(app()).await;
    assert_alive(server.addr).await;
    server.shutdown();
    timeout(READ, &mut server.task)
        .await
        .expect("serve did not return after shutdown")
        .expect("serve task panicked");
    assert_not_served(server.addr).await;
}

/// After `serve` returned: a connection is refused, or if the kernel still accepts it, no
/// request on it is answered.
async fn assert_not_served(addr: SocketAddr) {
    let Ok(Ok(mut stream)) = timeout(READ, TcpStream::connect(addr)).await else {
        return;
    };
    let _ = stream.write_all(&get_request("/")).await;
    let mut buf = [0u8; 256];
    match timeout(Duration::from_millis(500), stream.read(&mut buf)).await {
        Err(_) | Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!(
            "answered after shutdown: {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// An ordinary client
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn reqwest_client_works() {
    let server = start(app()).await;
    let base = format!("http://{}", server.addr);
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    for _ in 0..3 {
        let res = client.get(format!("{base}/")).send().await.expect("GET /");
        assert_eq!(res.status(), 200);
        assert_eq!(res.text().await.expect("body"), "hello");
    }
    let body = pattern(1024 * 1024);
    let res = client
        .post(format!("{base}/echo"))
        .body(body.clone())
        .send()
        .await
        .expect("POST /echo");
    assert_eq!(res.status(), 200);
    assert!(
        res.bytes().await.expect("body") == body,
        "echoed body differs"
    );

    let res = client
        .get(format!("{base}/stream"))
        .send()
        .await
        .expect("GET /stream");
    assert_eq!(res.text().await.expect("body"), STREAM_CHUNKS.concat());

    let res = client
        .get(format!("{base}/missing"))
        .send()
        .await
        .expect("GET");
    assert_eq!(res.status(), 404);

    // Sequential requests reuse one pooled connection, so the peer address stays the same.
    let mut peers = Vec::new();
    for _ in 0..2 {
        let res = client
            .get(format!("{base}/addr"))
            .send()
            .await
            .expect("GET");
        peers.push(res.text().await.expect("body"));
    }
    assert_eq!(peers[0], peers[1], "keep-alive not used by reqwest");
}

// ---------------------------------------------------------------------------------------------
// Garbage in
// ---------------------------------------------------------------------------------------------

/// Byte strings that are often nearly requests: HTTP fragments glued together, with some random
/// bytes between them. (HEAD is left out: the client here could not tell which response answers
/// a HEAD, and so whether it has a body.)
fn request_like() -> impl Strategy<Value = Vec<u8>> {
    let fragment = prop_oneof![
        4 => prop::sample::select(vec![
            &b"GET "[..], b"POST ", b"PUT ", b"/", b"/echo", b"/stream", b"/ignore", b"/?q=1",
            b" HTTP/1.1", b" HTTP/1.0", b" HTTP/2", b"\r\n", b"\n", b"\r", b"Host: x",
            b"Content-Length: ", b"Transfer-Encoding: ", b"chunked", b"gzip", b", ",
            b"Expect: 100-continue", b"Connection: close", b"Connection: keep-alive",
            b"0", b"5", b"ff", b"12a", b"-1", b":", b" ", b"\t", b"\r\n\r\n", b"hello",
        ])
        .prop_map(<[u8]>::to_vec),
        1 => proptest::collection::vec(any::<u8>(), 0..8),
    ];
    proptest::collection::vec(fragment, 0..24).prop_map(|parts| parts.concat())
}

/// Valid requests with a few bytes replaced, inserted, or removed, or cut short: close to what
/// the parser accepts, so its edges get exercised rather than only its first check.
fn mutated_request() -> impl Strategy<Value = Vec<u8>> {
    let bases: Vec<&'static [u8]> = vec![
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"POST /ignore HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
    ];
    // (position, byte, what to do there): 0 replace, 1 insert, 2 remove, 3 cut off.
    let edits = proptest::collection::vec((any::<usize>(), any::<u8>(), 0..4u8), 0..4);
    (prop::sample::select(bases), edits).prop_map(|(base, edits)| {
        let mut bytes = base.to_vec();
        for (at, byte, op) in edits {
            if bytes.is_empty() {
                break;
            }
            let at = at % bytes.len();
            match op {
                0 => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                2 => {
                    bytes.remove(at);
                }
                _ => bytes.truncate(at),
            }
        }
        bytes
    })
}

/// What one connection fed `input` (then half-closed) got back: every response must parse and
/// carry a sensible status, and the server must close the connection soon after.
async fn garbage_case(addr: SocketAddr, input: &[u8]) -> Result<(), String> {
    const WAIT: Duration = Duration::from_secs(2);
    let mut conn = Conn::open(addr).await;
    // The server may refuse early and close; writing into that is not a failure.
    let _ = conn.stream.write_all(input).await;
    let _ = conn.stream.shutdown().await;
    loop {
        match conn.try_response(false, WAIT).await {
            Ok(res) => {
                if res.minor > 1 {
                    return Err(format!("version HTTP/1.{}", res.minor));
                }
                if !matches!(res.status, 100..=299 | 400..=499 | 501 | 505) {
                    return Err(format!("status {}: {res:?}", res.status));
                }
            }
            // Closed after zero or more whole responses.
            Err(ReadError::Eof { partial: false }) => return Ok(()),
            Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::ConnectionReset => {
                return Ok(());
            }
            Err(ReadError::Timeout) => {
                return Err(format!(
                    "neither answered nor closed within {WAIT:?} of the client finishing"
                ));
            }
            Err(ReadError::Malformed(why)) => return Err(format!("malformed response: {why}")),
            Err(e) => return Err(format!("{e:?}")),
        }
    }
}

#[test]
fn garbage_gets_a_parseable_answer_or_none_and_the_server_survives() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // One server for all cases; it runs on the runtime's workers between the `block_on`s.
    let server = rt.block_on(start(app()));
    let addr = server.addr;
    let mut runner = TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        max_shrink_iters: 64,
        max_shrink_time: 30_000,
        ..Config::default()
    });
    let strategy = prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..512),
        1 => request_like(),
        2 => mutated_request(),
    ];
    let result = runner.run(&strategy, |input| {
        rt.block_on(garbage_case(addr, &input)).map_err(|e| {
            TestCaseError::fail(format!("{e} for {:?}", String::from_utf8_lossy(&input)))
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    rt.block_on(assert_alive(addr));
    drop(server);
}
