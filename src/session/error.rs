//! Errors a handler sees when it uses its session, and how they look at the HTTP edge.

use super::store::StoreError;

/// Why a [`Session`](super::Session) operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The store failed (e.g. Redis is down). With the `axum` feature this converts into a
    /// `503 Service Unavailable` response, so handlers can simply use `?`.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A value could not be serialized for storage.
    #[error("session value for key {key:?} could not be serialized: {source}")]
    Serialize {
        /// The session key.
        key: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// A stored value does not deserialize into the requested type.
    #[error("session value for key {key:?} has an unexpected shape: {source}")]
    Deserialize {
        /// The session key.
        key: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
}

impl SessionError {
    /// The HTTP status this error stands for: `503` when the store is unavailable or full
    /// (retrying later can work), `500` otherwise.
    pub fn status(&self) -> http::StatusCode {
        match self {
            Self::Store(StoreError::Unavailable(_) | StoreError::Full { .. }) => {
                http::StatusCode::SERVICE_UNAVAILABLE
            }
            _ => http::StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The short plain-text body sent to the client (no internal details).
    pub fn public_message(&self) -> &'static str {
        match self {
            Self::Store(StoreError::Unavailable(_)) => "session store unavailable",
            Self::Store(StoreError::Full { .. }) => "session store full",
            Self::Store(_) => "session store error",
            Self::Serialize { .. } | Self::Deserialize { .. } => "session data error",
        }
    }
}

#[cfg(feature = "axum")]
impl axum::response::IntoResponse for SessionError {
    fn into_response(self) -> axum::response::Response {
        tracing::warn!(error = %self, "session error");
        super::layer::plain_text(self.status(), self.public_message())
    }
}
