//! Moving a request body from the socket to the service, at the service's pace: the connection
//! polls this beside the exchange (and beside writing the response, since a relayed body may
//! still be going up while the answer comes down).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use http_body::Frame;
use tokio::io::AsyncWrite;

use super::body::{RequestBodyError, Sender, Want};
use super::io::Io;
use crate::http_backend::h1::chunked::{ChunkedDecoder, Decoded};

/// What the client is told before it sends a body it announced with `Expect: 100-continue`.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The most body bytes read only to be thrown away (the service did not want them) before the
/// connection is closed instead: reading a large upload nobody wants costs more than a new
/// connection.
const DISCARD_LIMIT: u64 = 256 * 1024;

/// How much of the body is still to come.
#[derive(Debug)]
enum Remaining {
    Length(u64),
    Chunked(ChunkedDecoder),
}

/// The part of the body in the read buffer, if any.
enum Piece {
    Frame(Frame<bytes::Bytes>, bool),
    End,
    NeedMore,
}

/// A request body in transit.
#[derive(Debug)]
pub(crate) struct Upload {
    /// `None` once the exchange is over: what still arrives is discarded.
    sender: Option<Sender>,
    remaining: Remaining,
    /// Bytes of `100 Continue` still to write, when the client waits for it.
    continue_left: Option<&'static [u8]>,
    /// The body has been read to its end.
    done: bool,
    /// The body cannot be read to its end: the connection must close.
    broken: bool,
    discarded: u64,
}

impl Upload {
    /// A body of `length` bytes (`None`: chunked) behind `sender`.
    pub(crate) fn new(sender: Sender, length: Option<u64>, expects_continue: bool) -> Self {
        Self {
            sender: Some(sender),
            remaining: match length {
                Some(n) => Remaining::Length(n),
                None => Remaining::Chunked(ChunkedDecoder::default()),
            },
            continue_left: expects_continue.then_some(CONTINUE),
            done: false,
            broken: false,
            discarded: 0,
        }
    }

    /// Whether the body was read to its end, so the connection can carry the next request.
    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    /// Whether reading on can still bring the body to its end.
    pub(crate) fn can_finish(&self) -> bool {
        // A client still waiting for `100 Continue` may never send the body.
        !self.done && !self.broken && self.continue_left.is_none()
    }

    /// The exchange is over: what is left is read only to be discarded, and a reader still
    /// holding the body learns that it was abandoned.
    pub(crate) fn abandon(&mut self) {
        self.sender = None;
    }

    /// Moves the body along as far as the reader's demand and the socket allow; wakes the task
    /// when it can go on.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>, io: &mut Io) {
        while !self.done && !self.broken {
            let want = match &self.sender {
                Some(sender) => match sender.poll_want(cx) {
                    Poll::Ready(want) => want,
                    Poll::Pending => return,
                },
                None => Want::Gone,
            };
            if let Some(left) = self.continue_left {
                if want == Want::Gone {
                    // Nobody wants the body: the client is not invited to send it.
                    return;
                }
                match Pin::new(&mut io.stream).poll_write(cx, left) {
                    Poll::Ready(Ok(n)) if n > 0 => {
                        self.continue_left = Some(&left[n..]).filter(|rest| !rest.is_empty());
                        continue;
                    }
                    Poll::Ready(Ok(_)) => {
                        return self.fail(io::Error::from(io::ErrorKind::WriteZero).into());
                    }
                    Poll::Ready(Err(error)) => return self.fail(error.into()),
                    Poll::Pending => return,
                }
            }
            match self.piece(&mut io.read) {
                Ok(Piece::Frame(frame, last)) => {
                    self.done = last;
                    self.deliver(want, frame, last);
                }
                Ok(Piece::End) => {
                    self.done = true;
                    if let Some(sender) = &self.sender {
                        sender.end();
                    }
                }
                Ok(Piece::NeedMore) => match io.poll_read_more(cx) {
                    Poll::Ready(Ok(0)) => return self.fail(RequestBodyError::Incomplete),
                    Poll::Ready(Ok(_)) => {}
                    Poll::Ready(Err(error)) => return self.fail(error.into()),
                    Poll::Pending => return,
                },
                Err(error) => return self.fail(error.into()),
            }
        }
    }

    fn deliver(&mut self, want: Want, frame: Frame<bytes::Bytes>, last: bool) {
        match (&self.sender, want) {
            (Some(sender), Want::Frame) => sender.send(frame, last),
            _ => {
                let len = frame.data_ref().map_or(0, |data| data.len() as u64);
                self.discarded += len;
                if self.discarded > DISCARD_LIMIT {
                    self.broken = true;
                }
            }
        }
    }

    fn fail(&mut self, error: RequestBodyError) {
        tracing::debug!(%error, "request body not read to its end");
        self.broken = true;
        if let Some(sender) = &self.sender {
            sender.fail(error);
        }
    }

    /// The next piece of the body in `read`.
    fn piece(
        &mut self,
        read: &mut BytesMut,
    ) -> Result<Piece, crate::http_backend::h1::chunked::ChunkError> {
        match &mut self.remaining {
            Remaining::Length(0) => Ok(Piece::End),
            Remaining::Length(left) => {
                if read.is_empty() {
                    return Ok(Piece::NeedMore);
                }
                let take = usize::try_from(*left).unwrap_or(usize::MAX).min(read.len());
                let data = read.split_to(take).freeze();
                *left -= take as u64;
                Ok(Piece::Frame(Frame::data(data), *left == 0))
            }
            Remaining::Chunked(decoder) => Ok(match decoder.decode(read)? {
                Decoded::Data(data) => Piece::Frame(Frame::data(data), false),
                Decoded::Trailers(trailers) => Piece::Frame(Frame::trailers(trailers), true),
                Decoded::Done => Piece::End,
                Decoded::NeedMore => Piece::NeedMore,
            }),
        }
    }
}
