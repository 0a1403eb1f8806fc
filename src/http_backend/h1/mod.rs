//! HTTP/1.1 to a backend without a connection task.
//!
//! hyper's client runs each connection in a task of its own and hands every request and response
//! to it through channels, so one proxied request wakes two tasks and crosses two channels.
//! Here the task that serves the client's connection writes the request and reads the response
//! itself: head parsing is `httparse` (as in hyper), framing follows RFC 9112, and connections
//! are kept in the backend's pool between exchanges. HTTP/2 backends still go through hyper.
//!
//! - The request head and whatever body frames are ready go out in one write; a streaming body
//!   goes on being sent while the response comes in, and while its body is read.
//! - A pooled connection the backend closed is noticed before use (no system call while the
//!   socket shows no activity); one that fails before any response byte arrived is replaced by
//!   a new connection once, when the request can be sent again.
//! - A body complete in the first read (most responses) is handed over as one piece and its
//!   connection pooled at once.

mod body;
mod chunked;
mod conn;
mod decode;
mod encode;

pub(crate) use conn::Conn;

use std::future::poll_fn;
use std::io;
use std::sync::Arc;
use std::task::Poll;

use axum::body::Body as AxumBody;
use bytes::Bytes;
use http::request::Parts;
use http::{Method, Request, Response};
use http_body::Body;

use self::body::Exchange;
use self::conn::{HEAD_READ, Upload, UploadError};
use self::decode::{Head, HeadError};
use self::encode::BodyFraming;
use super::HttpBackendError;
use super::error::Returned;
use super::{HttpErrorKind, Inner, Kept, given_back, headers, replayable};
use crate::{BoxError, ReplayBudget};

/// Why no response head came.
#[derive(Debug, thiserror::Error)]
enum Cause {
    #[error(transparent)]
    Upload(UploadError),
    #[error("reading from the backend failed: {0}")]
    Read(io::Error),
    #[error("the backend closed the connection without a response")]
    Closed,
    #[error(transparent)]
    Head(HeadError),
}

/// An exchange that produced no response head.
#[derive(Debug)]
struct Failed {
    cause: Cause,
    /// Whether any byte of the request reached the socket.
    wrote: bool,
    /// Whether any byte of a response arrived.
    answered: bool,
}

/// Sends the request in `upload` on `conn` and waits for the final response head.
async fn exchange<B>(
    conn: &mut Conn,
    upload: &mut Upload<B>,
    head_request: bool,
) -> Result<Head, Failed>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let mut answered = false;
    let mut write_error = None;
    poll_fn(|cx| {
        loop {
            if write_error.is_none() {
                match upload.poll_send(conn, cx) {
                    Poll::Ready(Err(UploadError::Io(error))) => {
                        // The backend may have answered and closed (say, 413 for a large
                        // upload): read what it sent before reporting the write.
                        upload.abandon(conn);
                        write_error = Some(error);
                    }
                    Poll::Ready(Err(error)) => {
                        return Poll::Ready(Err(Failed {
                            cause: Cause::Upload(error),
                            wrote: upload.wrote,
                            answered,
                        }));
                    }
                    _ => {}
                }
            }
            let fail = |cause| {
                Poll::Ready(Err(Failed {
                    cause,
                    wrote: upload.wrote,
                    answered,
                }))
            };
            match decode::parse_head(&mut conn.read, head_request) {
                Ok(Some(head)) => return Poll::Ready(Ok(head)),
                Ok(None) => {}
                Err(error) => return fail(Cause::Head(error)),
            }
            match conn.poll_fill(cx, HEAD_READ) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    let cause = match write_error.take() {
                        Some(error) => Cause::Upload(UploadError::Io(error)),
                        None => Cause::Closed,
                    };
                    return fail(cause);
                }
                Poll::Ready(Ok(_)) => answered = true,
                Poll::Ready(Err(error)) => return fail(Cause::Read(error)),
            }
        }
    })
    .await
}

impl Inner {
    /// Forwards one request over HTTP/1.1 (see the module docs).
    pub(super) async fn forward_h1<B>(
        self: Arc<Self>,
        req: Request<B>,
    ) -> Result<Response<AxumBody>, HttpBackendError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        // Connect first: a request that cannot get a connection goes back to `Sticky` untouched.
        let (mut conn, mut reused) = match self.pool.idle_h1() {
            Some(conn) => (conn, true),
            None => match self.pool.connect_h1().await {
                Ok(conn) => (conn, false),
                Err(error) => {
                    tracing::debug!(backend = %self.name, %error, "connect failed; request not sent");
                    let returned = Some(Returned::original(req));
                    return Err(self.error(HttpErrorKind::NotSent, Some(error.into()), returned));
                }
            },
        };
        let (mut parts, body) = req.into_parts();
        let (mut streamed, kept) = match self.outgoing(&parts, body).await {
            Ok(outgoing) => outgoing,
            Err(error) => {
                self.pool.put(conn);
                return Err(self.error(HttpErrorKind::Sent, Some(error), None));
            }
        };
        let Some(undo) = self.prepare(&mut parts) else {
            self.pool.put(conn);
            return Err(self.error(HttpErrorKind::InvalidTarget, None, None));
        };
        let framing = match (&kept, &streamed) {
            (Kept::Buffered(_, bytes), _) => BodyFraming::of(
                bytes.is_empty(),
                &http_body::SizeHint::with_exact(bytes.len() as u64),
            ),
            (_, Some(body)) => BodyFraming::of(body.is_end_stream(), &body.size_hint()),
            _ => BodyFraming::Empty,
        };
        let head_request = parts.method == Method::HEAD;
        loop {
            let mut upload = Upload::start(
                &mut conn,
                |out| {
                    encode::write_head(&parts, framing, out);
                    if let Kept::Buffered(_, bytes) = &kept {
                        out.extend_from_slice(bytes);
                    }
                },
                framing,
                streamed.take(),
            );
            let waited = exchange(&mut conn, &mut upload, head_request);
            let result = match self.request_timeout {
                Some(limit) => match tokio::time::timeout(limit, waited).await {
                    Ok(result) => result,
                    Err(_) => {
                        return Err(self.error(
                            HttpErrorKind::Timeout(limit),
                            None,
                            replayable(kept),
                        ));
                    }
                },
                None => waited.await,
            };
            let failed = match result {
                Ok(head) => return Ok(self.respond_h1(head, conn, upload)),
                Err(failed) => failed,
            };
            // A pooled connection that died before the backend answered (it closed the idle
            // connection as the request went out) gets one more try on a new connection, when
            // the request can be sent again: its body was empty or buffered, and it was either not
            // written at all or is idempotent.
            let resendable = !matches!(kept, Kept::Streamed);
            let again = reused
                && !failed.answered
                && resendable
                && (!failed.wrote || parts.method.is_idempotent());
            if !again {
                tracing::debug!(backend = %self.name, error = %failed.cause, "request failed on its connection");
                if !failed.wrote && resendable {
                    self.restore(&mut parts, undo);
                    let returned = given_back(parts, kept);
                    return Err(self.error(
                        HttpErrorKind::NotSent,
                        Some(failed.cause.into()),
                        returned,
                    ));
                }
                return Err(self.error(
                    HttpErrorKind::Sent,
                    Some(failed.cause.into()),
                    replayable(kept),
                ));
            }
            conn = match self.pool.connect_h1().await {
                Ok(conn) => conn,
                Err(connect) => {
                    tracing::debug!(backend = %self.name, error = %connect, "reconnect failed; request not sent");
                    self.restore(&mut parts, undo);
                    let returned = given_back(parts, kept);
                    return Err(self.error(HttpErrorKind::NotSent, Some(connect.into()), returned));
                }
            };
            reused = false;
        }
    }

    /// The body to stream (none when empty or buffered) and what can be given back on failure.
    async fn outgoing<B>(&self, parts: &Parts, body: B) -> Result<(Option<B>, Kept<B>), BoxError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        match parts.extensions.get::<ReplayBudget>().copied() {
            Some(ReplayBudget { max_body_bytes })
                if super::body::fits(&body.size_hint(), max_body_bytes) =>
            {
                // Boxed: the rare path; its state would enlarge every request's future.
                let bytes = Box::pin(super::body::buffer(body, max_body_bytes)).await?;
                Ok((None, Kept::Buffered(Box::new(parts.clone()), bytes)))
            }
            _ if body.is_end_stream() => Ok((None, Kept::Empty(body))),
            _ => Ok((Some(body), Kept::Streamed)),
        }
    }

    fn respond_h1<B>(&self, head: Head, conn: Conn, upload: Upload<B>) -> Response<AxumBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let Head {
            mut parts,
            framing,
            keep_alive,
        } = head;
        headers::remove_hop_by_hop(&mut parts.headers);
        let exchange = Exchange {
            conn,
            upload,
            keep_alive,
            pool: Arc::clone(&self.pool),
        };
        Response::from_parts(parts, body::response_body(framing, exchange))
    }
}
