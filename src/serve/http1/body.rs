//! A request body that is still arriving: the connection reads it from the socket and hands it
//! over one frame at a time through a one-slot mailbox, only when the service asks for more (so a
//! slow service holds the client back through TCP, and `100 Continue` is sent only when the body
//! is wanted).
//!
//! The reader may be polled from another task (an HTTP/2 backend's connection task, say), hence
//! the lock and the two wakers rather than plain fields.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::http_backend::h1::chunked::ChunkError;

/// Why the request body did not arrive whole.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestBodyError {
    /// The client closed the connection before the body's end.
    #[error("the client closed the connection before the request body ended")]
    Incomplete,
    /// The chunked framing was broken.
    #[error("invalid chunked request body: {0}")]
    Chunked(#[from] ChunkError),
    /// Reading from the client failed.
    #[error("reading the request body failed: {0}")]
    Io(#[from] io::Error),
    /// The exchange ended (the response was sent) before the body was read.
    #[error("the response was already sent; the rest of the request body was discarded")]
    Abandoned,
}

#[derive(Debug, Default)]
struct Mailbox {
    /// The next frame, or the error that ends the body.
    frame: Option<Result<Frame<Bytes>, RequestBodyError>>,
    /// No frame will follow the one in `frame` (if any).
    ended: bool,
    /// The reader has asked for a frame at least once.
    wanted: bool,
    /// The reader is gone: nobody will take another frame.
    dropped: bool,
    reader: Option<Waker>,
    pump: Option<Waker>,
}

fn lock(shared: &Mutex<Mailbox>) -> MutexGuard<'_, Mailbox> {
    // A panic while holding the lock leaves plain data behind, still consistent.
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The reading end, inside the request the service gets.
#[derive(Debug)]
pub(crate) struct StreamingBody {
    shared: Arc<Mutex<Mailbox>>,
    /// The announced length, if the body has a `Content-Length`.
    length: Option<u64>,
}

/// The writing end, kept by the connection.
#[derive(Debug)]
pub(crate) struct Sender {
    shared: Arc<Mutex<Mailbox>>,
}

/// What the reader wants next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Want {
    /// A frame: the slot is empty and the reader has asked.
    Frame,
    /// Nothing more: the reader dropped the body (read the rest only to discard it).
    Gone,
}

/// A new mailbox for a body of `length` bytes (`None`: chunked).
pub(crate) fn channel(length: Option<u64>) -> (Sender, StreamingBody) {
    let shared = Arc::new(Mutex::new(Mailbox::default()));
    (
        Sender {
            shared: shared.clone(),
        },
        StreamingBody { shared, length },
    )
}

impl Sender {
    /// Ready when the reader wants a frame or is gone; otherwise wakes this task when it is.
    pub(crate) fn poll_want(&self, cx: &mut Context<'_>) -> Poll<Want> {
        let mut mailbox = lock(&self.shared);
        if mailbox.dropped {
            return Poll::Ready(Want::Gone);
        }
        if mailbox.wanted && mailbox.frame.is_none() {
            return Poll::Ready(Want::Frame);
        }
        if !mailbox
            .pump
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            mailbox.pump = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Hands `frame` to the reader; `last`: the body ends with it.
    pub(crate) fn send(&self, frame: Frame<Bytes>, last: bool) {
        self.put(Some(Ok(frame)), last);
    }

    /// Ends the body without another frame.
    pub(crate) fn end(&self) {
        self.put(None, true);
    }

    /// Ends the body with an error.
    pub(crate) fn fail(&self, error: RequestBodyError) {
        self.put(Some(Err(error)), true);
    }

    fn put(&self, frame: Option<Result<Frame<Bytes>, RequestBodyError>>, last: bool) {
        let waker = {
            let mut mailbox = lock(&self.shared);
            if frame.is_some() {
                mailbox.frame = frame;
            }
            mailbox.ended |= last;
            mailbox.reader.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        // The connection is done with this body: a reader still waiting learns it now.
        let waker = {
            let mut mailbox = lock(&self.shared);
            if !mailbox.ended {
                mailbox.frame = Some(Err(RequestBodyError::Abandoned));
                mailbox.ended = true;
            }
            mailbox.reader.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl Body for StreamingBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        let (result, waker) = {
            let mut mailbox = lock(&self.shared);
            if let Some(frame) = mailbox.frame.take() {
                (Poll::Ready(Some(frame)), mailbox.pump.take())
            } else if mailbox.ended {
                (Poll::Ready(None), None)
            } else {
                mailbox.wanted = true;
                mailbox.reader = Some(cx.waker().clone());
                (Poll::Pending, mailbox.pump.take())
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        result
    }

    fn is_end_stream(&self) -> bool {
        let mailbox = lock(&self.shared);
        mailbox.ended && mailbox.frame.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        self.length
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

impl Drop for StreamingBody {
    fn drop(&mut self) {
        let waker = {
            let mut mailbox = lock(&self.shared);
            mailbox.dropped = true;
            mailbox.pump.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn frames_flow_only_when_asked_and_the_end_is_seen() {
        let (sender, mut body) = channel(Some(5));
        let mut cx = Context::from_waker(Waker::noop());
        // Nobody asked yet: the connection must not read (and must not send 100 Continue).
        assert!(sender.poll_want(&mut cx).is_pending());
        assert_eq!(body.size_hint().exact(), Some(5));
        assert!(Pin::new(&mut body).poll_frame(&mut cx).is_pending());
        assert_eq!(sender.poll_want(&mut cx), Poll::Ready(Want::Frame));
        sender.send(Frame::data(Bytes::from_static(b"he")), false);
        // The slot is full until the reader takes it.
        assert!(sender.poll_want(&mut cx).is_pending());
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "he");
        sender.send(Frame::data(Bytes::from_static(b"llo")), true);
        assert!(!body.is_end_stream());
        let rest = body.collect().await.unwrap().to_bytes();
        assert_eq!(rest, "llo");
    }

    #[tokio::test]
    async fn a_dropped_reader_is_gone_and_a_dropped_sender_fails_the_reader() {
        let (sender, body) = channel(None);
        drop(body);
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(sender.poll_want(&mut cx), Poll::Ready(Want::Gone));

        let (sender, body) = channel(None);
        drop(sender);
        let error = body.collect().await.unwrap_err();
        assert!(matches!(error, RequestBodyError::Abandoned), "{error}");
    }
}
