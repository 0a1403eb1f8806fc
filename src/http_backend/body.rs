//! Bodies for the client: a request body that can be taken back if it was never read (so an
//! unsent request can be retried elsewhere), a bounded buffer for replays, and the response body
//! that gives its connection back to the pool when read to the end.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full, Limited};
use pin_project_lite::pin_project;

use crate::BoxError;

pub(crate) type ClientBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// Where the original body waits until the client first polls for it.
pub(crate) type Slot<B> = Arc<Mutex<Option<B>>>;

pub(crate) fn lock<B>(slot: &Slot<B>) -> MutexGuard<'_, Option<B>> {
    crate::sync::lock(slot)
}

pin_project! {
    /// Streams the body in the slot, taking it out on the first poll. If the client fails to
    /// connect it never polls, and the body is still in the slot to be sent elsewhere.
    pub(crate) struct TakeBody<B> {
        slot: Slot<B>,
        #[pin]
        body: Option<B>,
    }
}

impl<B> TakeBody<B> {
    pub(crate) fn new(slot: Slot<B>) -> Self {
        Self { slot, body: None }
    }
}

impl<B> Body for TakeBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if this.body.is_none() {
            let taken = lock(this.slot).take();
            match taken {
                Some(body) => this.body.set(Some(body)),
                None => return Poll::Ready(None),
            }
        }
        match this.body.as_pin_mut() {
            Some(body) => body.poll_frame(cx).map_err(Into::into),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.body {
            Some(body) => body.is_end_stream(),
            None => lock(&self.slot).as_ref().is_none_or(|b| b.is_end_stream()),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.body {
            Some(body) => body.size_hint(),
            None => lock(&self.slot)
                .as_ref()
                .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint()),
        }
    }
}

/// Whether a body announces a length within `max` (bodies of unknown length are not buffered).
pub(crate) fn fits(hint: &SizeHint, max: usize) -> bool {
    hint.upper()
        .is_some_and(|upper| upper <= u64::try_from(max).unwrap_or(u64::MAX))
}

/// Reads the whole body, refusing more than `max` bytes whatever it announced.
pub(crate) async fn buffer<B>(body: B, max: usize) -> Result<Bytes, BoxError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    Ok(Limited::new(body, max).collect().await?.to_bytes())
}

pub(crate) fn full(bytes: Bytes) -> ClientBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub(crate) fn empty() -> ClientBody {
    // A boxed zero-sized body: no allocation.
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unpolled_body_can_be_taken_back_and_a_polled_one_cannot() {
        let slot: Slot<Full<Bytes>> = Arc::new(Mutex::new(Some(Full::new(Bytes::from("hi")))));
        let body = TakeBody::new(Arc::clone(&slot));
        assert_eq!(body.size_hint().exact(), Some(2));
        drop(body);
        assert!(lock(&slot).is_some(), "never polled: still there");

        let body = TakeBody::new(Arc::clone(&slot));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "hi");
        assert!(lock(&slot).is_none(), "sent: gone");
    }

    #[tokio::test]
    async fn buffering_is_bounded() {
        assert!(fits(&SizeHint::with_exact(10), 10));
        assert!(!fits(&SizeHint::with_exact(11), 10));
        assert!(
            !fits(&SizeHint::new(), 10),
            "unknown length is not buffered"
        );
        assert_eq!(
            buffer(Full::new(Bytes::from("abc")), 3).await.unwrap(),
            "abc"
        );
        assert!(buffer(Full::new(Bytes::from("abcd")), 3).await.is_err());
    }
}
