//! [`HttpBackendError`]: what went wrong, on which backend, and whether the request was sent.

use std::any::Any;
use std::convert::Infallible;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};

use crate::BoxError;
use crate::service::{Delivery, InnerError, TextBody};

/// Why a request to a remote backend failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HttpErrorKind {
    /// No connection could be made (refused, unreachable, connect timeout): the request was not
    /// sent, so it is safe to send it elsewhere.
    #[error("could not connect; the request was not sent")]
    NotSent,
    /// The request was sent (at least in part), then the connection or the protocol failed.
    #[error("the request failed after it was sent")]
    Sent,
    /// No response head arrived within the request timeout (the request may have been sent).
    #[error("no response within {0:?}")]
    Timeout(Duration),
    /// The request's path and the base URL do not make a valid URI.
    #[error("cannot build the target URI")]
    InvalidTarget,
}

/// The request given back by a failed call, so `Sticky` can send it to another backend.
pub(crate) enum Returned {
    /// The original request, its body never read (boxed `Request<B>`; in a mutex so the error
    /// stays `Sync` even when the body is not).
    Original(Mutex<Box<dyn Any + Send>>),
    /// The head and the buffered body of a replayable request.
    Buffered(Box<http::request::Parts>, Bytes),
}

impl Returned {
    /// Gives back `req` as it is.
    pub(crate) fn original<B: Send + 'static>(req: Request<B>) -> Self {
        Self::Original(Mutex::new(Box::new(req)))
    }
}

/// An error of [`HttpBackend`](super::HttpBackend): names the backend and says why, and
/// distinguishes "not sent" ([`HttpErrorKind::NotSent`]) from "sent, then failed".
///
/// Inside a [`Sticky`](crate::Sticky) it never reaches the client as an error: an unsent request
/// (or a replayable one) is retried on the next candidate, anything else becomes `502 Bad
/// Gateway` (`504 Gateway Timeout` for a timeout) with a one-line plain-text body, so
/// `Sticky<HttpBackend>` has `Error = Infallible`.
#[derive(thiserror::Error)]
#[error("backend {backend}: {kind}")]
pub struct HttpBackendError {
    backend: Arc<str>,
    kind: HttpErrorKind,
    #[source]
    source: Option<BoxError>,
    returned: Option<Returned>,
}

impl fmt::Debug for HttpBackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpBackendError")
            .field("backend", &self.backend)
            .field("kind", &self.kind)
            .field("source", &self.source)
            .field("request_returned", &self.returned.is_some())
            .finish()
    }
}

impl HttpBackendError {
    pub(crate) fn new(
        backend: Arc<str>,
        kind: HttpErrorKind,
        source: Option<BoxError>,
        returned: Option<Returned>,
    ) -> Self {
        Self {
            backend,
            kind,
            source,
            returned,
        }
    }

    /// The backend's name (see [`HttpBackendBuilder::name`](super::HttpBackendBuilder::name)).
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// Why it failed.
    pub fn kind(&self) -> HttpErrorKind {
        self.kind
    }

    /// `true` when the request never reached the backend.
    pub fn is_not_sent(&self) -> bool {
        self.kind == HttpErrorKind::NotSent
    }

    /// Takes back the request when the error carries it (not sent, or buffered for replay).
    pub fn take_request<B: From<Bytes> + 'static>(&mut self) -> Option<Request<B>> {
        match self.returned.take()? {
            Returned::Original(any) => any
                .into_inner()
                .unwrap_or_else(PoisonError::into_inner)
                .downcast::<Request<B>>()
                .ok()
                .map(|req| *req),
            Returned::Buffered(parts, bytes) => Some(Request::from_parts(*parts, B::from(bytes))),
        }
    }

    /// The status this error is answered with: 504 for a timeout, else 502.
    pub fn status(&self) -> StatusCode {
        match self.kind {
            HttpErrorKind::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    /// A short plain-text response saying what failed (the innermost cause included).
    pub fn to_response<B: TextBody>(&self) -> Response<B> {
        let mut cause = String::new();
        let mut next: Option<&(dyn std::error::Error + 'static)> = self
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static));
        while let Some(e) = next {
            cause = e.to_string();
            next = e.source();
        }
        let status = self.status();
        let text = if cause.is_empty() {
            format!("{status}: {self}\n")
        } else {
            format!("{status}: {self} ({cause})\n")
        };
        let mut res = Response::new(B::from_text(text));
        *res.status_mut() = status;
        res.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        res
    }
}

impl<B, ResBody> InnerError<Request<B>, ResBody> for HttpBackendError
where
    B: From<Bytes> + 'static,
    ResBody: TextBody,
{
    type Error = Infallible;

    fn delivery(&self) -> Option<Delivery> {
        match (&self.returned, self.kind) {
            (None, _) => None,
            (Some(_), HttpErrorKind::NotSent) => Some(Delivery::NotSent),
            (Some(Returned::Buffered(..)), _) => Some(Delivery::SentReplayable),
            (Some(Returned::Original(_)), _) => None,
        }
    }

    fn take_request(&mut self) -> Option<Request<B>> {
        HttpBackendError::take_request(self)
    }

    fn into_result(self) -> Result<Response<ResBody>, Infallible> {
        Ok(self.to_response())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_error<E: std::error::Error + Send + Sync + 'static>() {}

    #[test]
    fn errors_name_the_backend_and_give_unsent_requests_back() {
        assert_error::<HttpBackendError>();
        let req = Request::builder()
            .uri("/x")
            .body(Bytes::from("body"))
            .unwrap();
        let mut error = HttpBackendError::new(
            "a".into(),
            HttpErrorKind::NotSent,
            Some("connection refused".into()),
            Some(Returned::original(req)),
        );
        assert_eq!(
            error.to_string(),
            "backend a: could not connect; the request was not sent"
        );
        assert!(error.is_not_sent());
        assert_eq!(
            InnerError::<Request<Bytes>, String>::delivery(&error),
            Some(Delivery::NotSent)
        );
        let back: Request<Bytes> = error.take_request().unwrap();
        assert_eq!(
            (back.uri().path(), back.body().as_ref()),
            ("/x", &b"body"[..])
        );
        let res: Response<String> = error.to_response();
        assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
        assert!(res.body().contains("backend a") && res.body().contains("connection refused"));

        let timeout = HttpBackendError::new(
            "b".into(),
            HttpErrorKind::Timeout(Duration::from_millis(50)),
            None,
            None,
        );
        assert_eq!(
            InnerError::<Request<Bytes>, String>::delivery(&timeout),
            None
        );
        assert_eq!(timeout.status(), StatusCode::GATEWAY_TIMEOUT);
    }
}
