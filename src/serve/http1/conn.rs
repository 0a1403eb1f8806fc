//! One client connection: read a request head, hand the request to the service, write its
//! response, and again, until either side ends the connection. Everything happens on the
//! connection's own task (no channel, no second task), and a response the service has whole goes
//! out in a single write.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::Duration;

use axum::body::Body as AxumBody;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Request, Response, Version};
use http_body::Body;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tower_service::Service;

use super::body;
use super::io::Io;
use super::request::{self, Framing, Head, HeadError};
use super::response::{self, write_error};
use super::upload::Upload;
use crate::BoxError;
use crate::affinity::ClientAddr;
use crate::http_backend::h1::encode::{write_chunk, write_last_chunk};

/// Response bytes gathered before they are written even though the body has more ready.
const FLUSH_AT: usize = 64 * 1024;

/// How long a request body the service did not read may take to arrive (to be discarded) before
/// the connection is closed instead.
const DISCARD_TIME: Duration = Duration::from_secs(2);

/// After the last response on a connection the client may still be sending; closing with its
/// bytes unread would reset the connection and could destroy the response in flight. This long
/// at most is spent reading (and discarding) until the client closes too.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;

/// How the connection ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The client closed it, or the server is shutting down and it was idle: nothing to linger
    /// for.
    Quiet,
    /// This side decided to close after a response.
    AfterResponse,
}

/// Serves requests from `stream` until the client leaves, an exchange leaves the connection
/// unusable, or `shutdown` turns true while the connection is idle.
pub(crate) async fn serve_connection<S, B>(
    stream: TcpStream,
    peer: SocketAddr,
    mut service: S,
    mut shutdown: watch::Receiver<bool>,
) where
    S: Service<Request<AxumBody>, Response = Response<B>, Error = Infallible>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let mut io = Io::new(stream);
    let end = loop {
        let head = match read_head(&mut io, &mut shutdown).await {
            Ok(Some(head)) => head,
            Ok(None) => break End::Quiet,
            Err(error) => {
                tracing::debug!(%error, %peer, "refused a request");
                write_error(error.status(), &error.to_string(), &mut io.write);
                let _ = poll_fn(|cx| io.poll_flush_out(cx)).await;
                break End::AfterResponse;
            }
        };
        if !exchange(&mut io, &mut service, head, peer).await {
            break End::AfterResponse;
        }
    };
    if end == End::AfterResponse {
        linger(&mut io).await;
    }
}

/// One request and its response; whether the connection can carry another.
async fn exchange<S, B>(io: &mut Io, service: &mut S, head: Head, peer: SocketAddr) -> bool
where
    S: Service<Request<AxumBody>, Response = Response<B>, Error = Infallible>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let version = head.parts.version;
    let head_request = head.parts.method == Method::HEAD;
    let (body, mut upload) = request_body(head.framing, head.expects_continue, &mut io.read);
    let mut req = Request::from_parts(head.parts, body);
    crate::extensions::insert_roomy(req.extensions_mut(), ClientAddr(peer));

    let call = async {
        poll_fn(|cx| service.poll_ready(cx)).await?;
        service.call(req).await
    };
    let mut call = pin!(call);
    // The service answers while the request body goes on arriving at its pace.
    let response = poll_fn(|cx| {
        if let Poll::Ready(result) = call.as_mut().poll(cx) {
            return Poll::Ready(result);
        }
        if let Some(upload) = upload.as_mut() {
            upload.poll(cx, io);
        }
        Poll::Pending
    })
    .await;
    let response = match response {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let reusable = respond(
        io,
        &mut upload,
        response,
        version,
        head_request,
        head.keep_alive,
    )
    .await;
    reusable && finish_upload(io, upload).await
}

/// The body of a request whose head said `framing`: whole when the first read brought all of it
/// (most requests), otherwise streaming from the socket.
fn request_body(
    framing: Framing,
    expects_continue: bool,
    read: &mut BytesMut,
) -> (AxumBody, Option<Upload>) {
    let length = match framing {
        Framing::Empty => return (AxumBody::empty(), None),
        Framing::Length(n) if read.len() as u64 >= n => {
            // Within the buffer's length, which is a usize.
            return (AxumBody::from(read.split_to(n as usize).freeze()), None);
        }
        Framing::Length(n) => Some(n),
        Framing::Chunked => None,
    };
    let (sender, streaming) = body::channel(length);
    (
        AxumBody::new(streaming),
        Some(Upload::new(sender, length, expects_continue)),
    )
}

/// Waits for the next request head. `Ok(None)`: the client closed the connection, or it was idle
/// when the server began shutting down.
async fn read_head(
    io: &mut Io,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<Head>, HeadError> {
    loop {
        if !io.read.is_empty() {
            if let Some(head) = request::parse_head(&mut io.read)? {
                return Ok(Some(head));
            }
        }
        let idle = io.read.is_empty();
        if idle && *shutdown.borrow() {
            return Ok(None);
        }
        // Between requests the connection also listens for the shutdown; inside a head it
        // finishes the request first.
        let mut stopping = pin!(shutdown.changed());
        let read = poll_fn(|cx| match io.poll_read_more(cx) {
            Poll::Ready(result) => Poll::Ready(Some(result)),
            Poll::Pending if idle && stopping.as_mut().poll(cx).is_ready() => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        })
        .await;
        match read {
            None | Some(Ok(0)) => return Ok(None),
            Some(Ok(_)) => {}
            Some(Err(error)) => {
                tracing::debug!(%error, "reading a request failed");
                return Ok(None);
            }
        }
    }
}

/// Writes `response`; whether the connection can carry another request.
async fn respond<B>(
    io: &mut Io,
    upload: &mut Option<Upload>,
    response: Response<B>,
    version: Version,
    head_request: bool,
    keep_alive: bool,
) -> bool
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let (parts, body) = response.into_parts();
    let mut body = pin!(body);
    let framing = response::framing(
        &parts,
        body.is_end_stream(),
        &body.size_hint(),
        version,
        head_request,
    );
    let close = !keep_alive
        || framing == response::Framing::UntilClose
        || response::asks_to_close(&parts.headers);
    response::write_head(&parts, framing, close, version, &mut io.write);
    drop(parts);
    let whole = match framing {
        response::Framing::None | response::Framing::HeadOf(_) => true,
        framing => write_body(io, upload, body.as_mut(), framing).await,
    };
    let flushed = poll_fn(|cx| {
        let flushed = io.poll_flush_out(cx);
        if flushed.is_pending() {
            if let Some(upload) = upload.as_mut() {
                upload.poll(cx, io);
            }
        }
        flushed
    })
    .await;
    if let Err(error) = &flushed {
        tracing::debug!(%error, "writing a response failed");
    }
    whole && flushed.is_ok() && !close
}

/// Appends the body to the write buffer as its frames come, writing whenever the body makes the
/// connection wait; whether all of it went out as framed.
async fn write_body<B>(
    io: &mut Io,
    upload: &mut Option<Upload>,
    mut body: Pin<&mut B>,
    framing: response::Framing,
) -> bool
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let mut left = match framing {
        response::Framing::Length(n) => Some(n),
        _ => None,
    };
    let mut trailers: Option<HeaderMap> = None;
    loop {
        let frame = poll_fn(|cx| {
            if let Poll::Ready(frame) = body.as_mut().poll_frame(cx) {
                // Boxed at once: the body's own error type need not be `Send`.
                return Poll::Ready(Ok(frame.map(|f| f.map_err(Into::<BoxError>::into))));
            }
            // Waiting for the body: write what is gathered meanwhile, and keep the request body
            // moving (a relay may need it to produce the rest).
            if let Some(upload) = upload.as_mut() {
                upload.poll(cx, io);
            }
            match io.poll_flush_out(cx) {
                Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
                Poll::Ready(Ok(())) | Poll::Pending => Poll::Pending,
            }
        })
        .await;
        let frame = match frame {
            Ok(Some(Ok(frame))) => frame,
            Ok(None) => break,
            Ok(Some(Err(error))) => {
                tracing::debug!(%error, "the response body failed: closing the connection");
                return false;
            }
            Err(error) => {
                tracing::debug!(%error, "writing a response failed");
                return false;
            }
        };
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                trailers = frame.into_trailers().ok();
                continue;
            }
        };
        if !append(io, &mut left, framing, data) {
            return false;
        }
        if io.write.len() >= FLUSH_AT && poll_fn(|cx| io.poll_flush_out(cx)).await.is_err() {
            return false;
        }
    }
    match (framing, left) {
        (response::Framing::Chunked, _) => {
            write_last_chunk(trailers.as_ref(), &mut io.write);
            true
        }
        // A body shorter than its length: the client is left waiting for the rest, so the
        // connection must end.
        (_, Some(left)) => left == 0,
        _ => true,
    }
}

/// Appends one data frame as `framing` says; false when the body is longer than announced.
fn append(
    io: &mut Io,
    left: &mut Option<u64>,
    framing: response::Framing,
    mut data: Bytes,
) -> bool {
    match framing {
        response::Framing::Chunked => write_chunk(&data, &mut io.write),
        _ => {
            if let Some(left) = left {
                let len = data.len() as u64;
                if len > *left {
                    // Within `data`'s length, which is a usize.
                    data.truncate(*left as usize);
                    io.write.extend_from_slice(&data);
                    *left = 0;
                    tracing::debug!("the response body is longer than its Content-Length");
                    return false;
                }
                *left -= len;
            }
            io.write.extend_from_slice(&data);
        }
    }
    true
}

/// After the response: whether the request body was read to its end, reading (and discarding)
/// what the service left, within bounds.
async fn finish_upload(io: &mut Io, upload: Option<Upload>) -> bool {
    let Some(mut upload) = upload else {
        return true;
    };
    upload.abandon();
    if upload.is_done() {
        return true;
    }
    if !upload.can_finish() {
        return false;
    }
    let drained = tokio::time::timeout(
        DISCARD_TIME,
        poll_fn(|cx| {
            upload.poll(cx, io);
            if upload.can_finish() {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        }),
    )
    .await;
    drained.is_ok() && upload.is_done()
}

/// Half-closes the connection and reads what the client still sends, until it closes too or the
/// bounds run out.
async fn linger(io: &mut Io) {
    if poll_fn(|cx| Pin::new(&mut io.stream).poll_shutdown(cx))
        .await
        .is_err()
    {
        return;
    }
    let mut read = 0;
    let _ = tokio::time::timeout(LINGER, async {
        while read < LINGER_BYTES {
            io.read.clear();
            match poll_fn(|cx| io.poll_read_more(cx)).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
    })
    .await;
}
