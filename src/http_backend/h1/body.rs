//! The response body as it comes off a backend connection; the connection goes back to the pool
//! the moment the body's last byte has been read (and the request is fully sent).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use axum::body::Body as AxumBody;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::chunked::{ChunkedDecoder, Decoded};
use super::conn::{BODY_READ, Conn, Upload};
use super::decode::Framing;
use crate::BoxError;
use crate::http_backend::pool::Pool;

/// What is left of the body.
#[derive(Debug)]
enum Remaining {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
}

/// Where a finished exchange leaves its connection.
pub(crate) struct Exchange<B> {
    pub(crate) conn: Conn,
    pub(crate) upload: Upload<B>,
    pub(crate) keep_alive: bool,
    pub(crate) pool: Arc<Pool>,
}

impl<B> Exchange<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    /// Pools the connection if it can carry another exchange: the backend keeps it alive, the
    /// request went out whole, and nothing unread follows the response.
    fn finish(self) {
        if self.keep_alive && self.upload.is_done(&self.conn) && self.conn.read.is_empty() {
            self.pool.put(self.conn);
        }
    }
}

/// The body for a response head with `framing`. A body already complete in the read buffer (the
/// usual small response) is handed over as one piece and the connection pooled at once.
pub(crate) fn response_body<B>(framing: Framing, mut exchange: Exchange<B>) -> AxumBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let remaining = match framing {
        Framing::Empty => {
            exchange.finish();
            return AxumBody::empty();
        }
        Framing::Length(n) => {
            let buffered = exchange.conn.read.len() as u64;
            if buffered >= n {
                // Both are within the buffer's length, which is a usize.
                let whole = exchange.conn.read.split_to(n as usize).freeze();
                exchange.finish();
                return AxumBody::from(whole);
            }
            Remaining::Length(n)
        }
        Framing::Chunked => Remaining::Chunked(ChunkedDecoder::default()),
        Framing::UntilClose => {
            exchange.keep_alive = false;
            Remaining::UntilClose
        }
    };
    AxumBody::new(ResponseBody {
        exchange: Some(exchange),
        remaining,
    })
}

/// A response body still streaming from its connection.
struct ResponseBody<B> {
    /// `None` once the body has ended (or failed).
    exchange: Option<Exchange<B>>,
    remaining: Remaining,
}

/// One step of reading the body.
enum Step {
    Frame(Frame<Bytes>, bool),
    End,
    Fail(io::Error),
    Read,
}

impl<B> ResponseBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    /// What the bytes already received give.
    fn step(remaining: &mut Remaining, conn: &mut Conn) -> Step {
        match remaining {
            Remaining::Length(0) => Step::End,
            Remaining::Length(left) => {
                if conn.read.is_empty() {
                    return Step::Read;
                }
                let take = conn
                    .read
                    .len()
                    .min(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= take as u64;
                Step::Frame(Frame::data(conn.read.split_to(take).freeze()), *left == 0)
            }
            Remaining::Chunked(decoder) => match decoder.decode(&mut conn.read) {
                Ok(Decoded::Data(data)) => Step::Frame(Frame::data(data), false),
                Ok(Decoded::Trailers(map)) => Step::Frame(Frame::trailers(map), true),
                Ok(Decoded::Done) => Step::End,
                Ok(Decoded::NeedMore) => Step::Read,
                Err(e) => Step::Fail(io::Error::new(io::ErrorKind::InvalidData, e)),
            },
            Remaining::UntilClose if conn.read.is_empty() => Step::Read,
            Remaining::UntilClose => Step::Frame(Frame::data(conn.read.split().freeze()), false),
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        let Some(exchange) = this.exchange.as_mut() else {
            return Poll::Ready(None);
        };
        // A backend answering before it read the whole request may still want the rest.
        if !exchange.upload.is_done(&exchange.conn) {
            if let Poll::Ready(Err(error)) = exchange.upload.poll_send(&mut exchange.conn, cx) {
                tracing::debug!(%error, "request body not sent whole after an early response");
                exchange.upload.abandon(&mut exchange.conn);
                exchange.keep_alive = false;
            }
        }
        loop {
            match Self::step(&mut this.remaining, &mut exchange.conn) {
                Step::Frame(frame, last) => {
                    if last {
                        if let Some(done) = this.exchange.take() {
                            done.finish();
                        }
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Step::End => {
                    if let Some(done) = this.exchange.take() {
                        done.finish();
                    }
                    return Poll::Ready(None);
                }
                Step::Fail(error) => {
                    this.exchange = None;
                    return Poll::Ready(Some(Err(error)));
                }
                Step::Read => {}
            }
            match ready!(exchange.conn.poll_fill(cx, BODY_READ)) {
                Ok(0) if matches!(this.remaining, Remaining::UntilClose) => {
                    this.exchange = None;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    this.exchange = None;
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the backend closed the connection before the end of the body",
                    ))));
                }
                Ok(_) => {}
                Err(error) => {
                    this.exchange = None;
                    return Poll::Ready(Some(Err(error)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.exchange.is_none() || matches!(self.remaining, Remaining::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Remaining::Length(left) => SizeHint::with_exact(left),
            _ => SizeHint::default(),
        }
    }
}
