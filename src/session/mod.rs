//! Sessions: a [`Session`] per request, kept in a [`SessionStore`] that every backend can share.
//!
//! - [`SessionLayer`] (feature `axum`) reads the session cookie, hands the handler a [`Session`]
//!   (an axum extractor), and after the handler saves only what changed.
//! - Stores: [`MemoryStore`] (this process), `RedisStore` (feature `redis`; single node or
//!   Cluster), [`CachedStore`] (a never-stale local tier in front of a shared store), or your own
//!   [`SessionStore`].
//! - No lost writes: data is stored key by key, so concurrent requests of one session that change
//!   different keys both persist. Writes to the same key: the last request to finish wins.
//! - Ids: 128 bits from a CSPRNG; only ids the server issued and still holds are accepted.
//! - Expiry: idle and absolute, enforced by the store itself.
//!
//! Pair it with a [`Sticky`](crate::Sticky) that hashes the session cookie
//! ([`KeyHash::cookie`](crate::affinity::KeyHash::cookie)) so each user keeps hitting one backend
//! and its [`CachedStore`] stays warm; if that backend goes away, any other one has the session.
//!
//! ```
//! use axum::{Router, routing::get};
//! use tower_sticky::session::{MemoryStore, Session, SessionError, SessionLayer};
//!
//! async fn visits(session: Session) -> Result<String, SessionError> {
//!     let n: u64 = session.get("visits").await?.unwrap_or(0) + 1;
//!     session.insert("visits", &n).await?;
//!     Ok(format!("visit #{n}"))
//! }
//!
//! let app: Router = Router::new()
//!     .route("/", get(visits))
//!     .layer(SessionLayer::new(MemoryStore::default()));
//! ```

mod cache;
mod cookie_config;
mod error;
#[cfg(feature = "axum")]
mod extractor;
#[cfg(feature = "axum")]
mod handle;
mod id;
#[cfg(feature = "axum")]
mod layer;
mod memory;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
mod redis_scripts;
mod store;

pub use cache::CachedStore;
pub use cookie_config::CookieConfig;
pub use error::SessionError;
#[cfg(feature = "axum")]
pub use extractor::SessionLayerMissing;
#[cfg(feature = "axum")]
pub use handle::Session;
pub use id::SessionId;
#[cfg(feature = "axum")]
pub use layer::{SessionLayer, SessionService};
pub use memory::MemoryStore;
#[cfg(feature = "redis")]
pub use redis::RedisStore;
pub use store::{
    Changes, Expiry, Fields, LoadIfChanged, SessionRecord, SessionStore, StoreError, StoreFuture,
};
