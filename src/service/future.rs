//! [`ResponseFuture`]: drives the chosen backend and finishes the response.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use pin_project_lite::pin_project;
use tower::util::Oneshot;
use tower_service::Service;

use super::{Routed, TextBody, unavailable_response};
use crate::affinity::{ResponseHook, Unavailable};
use crate::backends::InFlight;

pin_project! {
    /// The response future of [`Sticky`](super::Sticky).
    pub struct ResponseFuture<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S, Req>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req>
    where
        S: Service<Req>,
    {
        Routed {
            #[pin]
            call: Oneshot<S, Req>,
            in_flight: Option<InFlight>,
            routed: Option<Routed>,
            hook: Option<ResponseHook>,
        },
        Unavailable {
            why: Unavailable,
        },
    }
}

impl<S: Service<Req>, Req> std::fmt::Debug for ResponseFuture<S, Req> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResponseFuture")
    }
}

impl<S: Service<Req>, Req> ResponseFuture<S, Req> {
    pub(crate) fn routed(
        call: Oneshot<S, Req>,
        in_flight: InFlight,
        routed: Routed,
        hook: Option<ResponseHook>,
    ) -> Self {
        Self {
            state: State::Routed {
                call,
                in_flight: Some(in_flight),
                routed: Some(routed),
                hook,
            },
        }
    }

    pub(crate) fn unavailable(why: Unavailable) -> Self {
        Self {
            state: State::Unavailable { why },
        }
    }
}

impl<S, Req, B> Future for ResponseFuture<S, Req>
where
    S: Service<Req, Response = Response<B>>,
    B: TextBody,
{
    type Output = Result<Response<B>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Unavailable { why } => Poll::Ready(Ok(unavailable_response(*why))),
            StateProj::Routed {
                call,
                in_flight,
                routed,
                hook,
            } => {
                let result = ready!(call.poll(cx));
                // Finish the in-flight count now, not when the future is dropped later.
                let in_flight = in_flight.take();
                match result {
                    Ok(mut res) => {
                        if let Some(routed) = routed.take() {
                            res.extensions_mut().insert(routed);
                        }
                        if let Some(hook) = hook.take() {
                            let (mut head, body) = res.into_parts();
                            hook(&mut head);
                            res = Response::from_parts(head, body);
                        }
                        drop(in_flight);
                        Poll::Ready(Ok(res))
                    }
                    Err(error) => {
                        if let Some(in_flight) = &in_flight {
                            in_flight.failed();
                        }
                        Poll::Ready(Err(error))
                    }
                }
            }
        }
    }
}
