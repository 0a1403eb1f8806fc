//! [`TextBody`]: response bodies `Sticky` can write its own short answers in.

use bytes::Bytes;
use http_body_util::Full;
use http_body_util::combinators::{BoxBody, UnsyncBoxBody};

/// A response body type that can carry a short plain-text message.
///
/// `Sticky` answers some requests itself (503 when no backend is usable) and keeps the backends'
/// body type unchanged, so `Sticky<axum::Router>` still serves `axum::body::Body` and works with
/// `axum::serve`. Implement this for your own body type if it is not covered here.
///
/// ```
/// use tower_sticky::TextBody;
/// let body = <http_body_util::Full<bytes::Bytes> as TextBody>::from_text("busy".to_owned());
/// # let _ = body;
/// ```
pub trait TextBody: Sized {
    /// A body holding exactly `text`.
    fn from_text(text: String) -> Self;
}

impl TextBody for String {
    fn from_text(text: String) -> Self {
        text
    }
}

impl TextBody for Bytes {
    fn from_text(text: String) -> Self {
        Bytes::from(text)
    }
}

impl TextBody for Full<Bytes> {
    fn from_text(text: String) -> Self {
        Full::new(Bytes::from(text))
    }
}

impl<E> TextBody for BoxBody<Bytes, E>
where
    E: 'static,
{
    fn from_text(text: String) -> Self {
        use http_body_util::BodyExt;
        BoxBody::new(Full::new(Bytes::from(text)).map_err(|never| match never {}))
    }
}

impl<E> TextBody for UnsyncBoxBody<Bytes, E>
where
    E: 'static,
{
    fn from_text(text: String) -> Self {
        use http_body_util::BodyExt;
        UnsyncBoxBody::new(Full::new(Bytes::from(text)).map_err(|never| match never {}))
    }
}

impl<L, R: TextBody> TextBody for http_body_util::Either<L, R> {
    fn from_text(text: String) -> Self {
        http_body_util::Either::Right(R::from_text(text))
    }
}

#[cfg(feature = "axum")]
impl TextBody for axum::body::Body {
    fn from_text(text: String) -> Self {
        axum::body::Body::from(text)
    }
}
