//! [`Call`]: drives the chosen backend's service for one request.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use pin_project_lite::pin_project;
use tower::ServiceExt;
use tower::util::Oneshot;
use tower_service::Service;

use crate::affinity::Unavailable;

pin_project! {
    /// The call of one request on one backend.
    ///
    /// Most inner services (axum routers, `HttpBackend`, anything behind `Buffer` with room) are
    /// ready at once, so the service is asked once up front and, when ready, called right away:
    /// the future then holds only the inner service's future, not the request, which keeps
    /// `Sticky`'s response future small and cheap to move. A service that is not ready yet is
    /// driven by `oneshot` on the heap, so the common case does not pay for its size.
    #[project = CallProj]
    pub(crate) enum Call<S, Req>
    where
        S: Service<Req>,
    {
        Called {
            #[pin]
            future: S::Future,
        },
        Waiting {
            future: Pin<Box<Oneshot<S, Req>>>,
        },
        Refused {
            error: Option<S::Error>,
        },
        // No backend could be chosen: `ResponseFuture` answers 503 without polling this.
        Unavailable {
            why: Unavailable,
        },
    }
}

impl<S: Service<Req>, Req> Call<S, Req> {
    /// Borrows the service rather than taking it: the caller drops its clone only after the call
    /// is stored in place, so the inner future is not first kept aside (and copied, hundreds of
    /// bytes for an axum router) while the clone is dropped.
    #[inline]
    pub(crate) fn start(service: &mut S, req: Req) -> Self
    where
        S: Clone,
    {
        // A no-op waker: if the service is not ready, `oneshot` asks again with the real one.
        let mut cx = Context::from_waker(Waker::noop());
        match service.poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => Call::Called {
                future: service.call(req),
            },
            Poll::Ready(Err(error)) => Call::Refused { error: Some(error) },
            // Rare (a busy backend): one more clone is cheap next to boxing the oneshot.
            Poll::Pending => Call::Waiting {
                future: Box::pin(service.clone().oneshot(req)),
            },
        }
    }

    /// Why no backend was chosen, when none was.
    pub(crate) fn unavailable(&self) -> Option<Unavailable> {
        match self {
            Call::Unavailable { why } => Some(*why),
            _ => None,
        }
    }
}

impl<S: Service<Req>, Req> Future for Call<S, Req> {
    type Output = Result<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            CallProj::Called { future } => future.poll(cx),
            CallProj::Waiting { future } => future.as_mut().poll(cx),
            CallProj::Refused { error } => match error.take() {
                Some(error) => Poll::Ready(Err(error)),
                // Polled again after completion; `ResponseFuture` never does this.
                None => Poll::Pending,
            },
            // `ResponseFuture` answers before polling this.
            CallProj::Unavailable { .. } => Poll::Pending,
        }
    }
}
