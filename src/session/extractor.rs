//! `Session` as an axum extractor.

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::request::Parts;

use super::handle::Session;
use super::layer::plain_text;

/// The rejection when a handler asks for a [`Session`] but no [`SessionLayer`](super::SessionLayer)
/// wraps the route: a `500` naming the mistake.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the Session extractor needs SessionLayer around the route")]
pub struct SessionLayerMissing;

impl IntoResponse for SessionLayerMissing {
    fn into_response(self) -> Response {
        plain_text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the Session extractor needs SessionLayer around the route",
        )
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = SessionLayerMissing;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Session>()
            .cloned()
            .ok_or(SessionLayerMissing)
    }
}
