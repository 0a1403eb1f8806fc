//! [`InnerError`]: how `Sticky` treats the errors of its inner services.

use std::convert::Infallible;

use http::Response;

use crate::BoxError;

/// Whether a failed request may be sent again to another backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The request never reached the backend (connect refused or timed out): it is always safe
    /// to send it elsewhere.
    NotSent,
    /// The request was sent, but its method is idempotent and its body was buffered (the caller
    /// opted in with [`retry_idempotent`](crate::StickyLayerBuilder::retry_idempotent)).
    SentReplayable,
}

/// How [`Sticky`](crate::Sticky) handles an error of the inner service it routed a request to.
///
/// Two things can happen to a failed request: if the error can give the request back
/// ([`delivery`](Self::delivery), [`take_request`](Self::take_request)), `Sticky` retries it on the strategy's next candidate
/// (the failed backend excluded); otherwise the error is finished by
/// [`into_result`](Self::into_result): either turned into a response (an
/// [`HttpBackend`](crate::http_backend::HttpBackend) error becomes `502`/`504` with a short text
/// body, so `Sticky<HttpBackend>` has `Error = Infallible` and can be served by `axum::serve`) or
/// returned as `Sticky`'s own error. Either way it counts as a failure for passive health.
///
/// Implemented for [`Infallible`] (axum routers, `Sticky` itself), for [`BoxError`] (what
/// `tower::buffer::Buffer`, `Timeout` and friends return; returned unchanged, never retried), and
/// for [`HttpBackendError`](crate::http_backend::HttpBackendError). Implement it for your own
/// error type to let `Sticky` retry your service's unsent requests.
pub trait InnerError<Req, ResBody>: Sized {
    /// The error `Sticky` returns in the end.
    type Error;

    /// Whether [`delivery`](Self::delivery) can ever answer `Some` (by default `true`). `false`
    /// (as for `Infallible` and `BoxError`) tells `Sticky` that it will never retry this
    /// service's requests, so without passive health its response futures need not hold on to
    /// the backends and the policy: one atomic reference count less per request.
    const GIVES_REQUESTS_BACK: bool = true;

    /// Whether the request can be given back to be sent to another backend, and why.
    fn delivery(&self) -> Option<Delivery>;

    /// Takes the request back out of the error (only called when [`delivery`](Self::delivery)
    /// said it can, and `Sticky` will retry it).
    fn take_request(&mut self) -> Option<Req>;

    /// A response to send instead (e.g. `502 Bad Gateway`), or the error to return.
    fn into_result(self) -> Result<Response<ResBody>, Self::Error>;
}

impl<Req, ResBody> InnerError<Req, ResBody> for Infallible {
    type Error = Infallible;
    const GIVES_REQUESTS_BACK: bool = false;

    fn delivery(&self) -> Option<Delivery> {
        match *self {}
    }

    fn take_request(&mut self) -> Option<Req> {
        match *self {}
    }

    fn into_result(self) -> Result<Response<ResBody>, Infallible> {
        match self {}
    }
}

impl<Req, ResBody> InnerError<Req, ResBody> for BoxError {
    type Error = BoxError;
    const GIVES_REQUESTS_BACK: bool = false;

    fn delivery(&self) -> Option<Delivery> {
        None
    }

    fn take_request(&mut self) -> Option<Req> {
        None
    }

    fn into_result(self) -> Result<Response<ResBody>, BoxError> {
        Err(self)
    }
}
