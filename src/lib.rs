//! # tower-sticky
//!
//! Session affinity ("sticky sessions") for Tower, axum and hyper services.
//!
//! A [`StickyLayer`] wraps a keyed set of inner services, [`Backends`], and sends each user to the
//! same one, chosen by a signed cookie ([`affinity::CookieAffinity`]: pinned, hashed or learned),
//! the client IP ([`affinity::IpHash`]), a key on a consistent hash ring ([`affinity::KeyHash`]:
//! header, cookie, path, query, closure; [`ring`]: Ketama, Ketama-compatible, Maglev, bounded
//! load), or spread by [`affinity::RoundRobin`] / [`affinity::LeastInFlight`] when there is no
//! key. Strategies form a fallback chain ("cookie, else IP, else round robin"). When a backend is
//! unusable, each of its users moves to one deterministic substitute; when it is removed, only its
//! users move.
//!
//! The rest of the crate:
//! - [`http_backend::HttpBackend`]: a pooled HTTP client service for remote backends;
//! - [`health`]: passive ejection and active probes; failed-before-sent requests are retried on
//!   the next candidate, so a dead backend costs the client no error;
//! - [`metrics`]: a per-backend stats snapshot, the `metrics` facade (feature `metrics`), tracing;
//! - [`session`]: the `Session` extractor, `SessionLayer`, and memory / Redis / cached stores that
//!   let any backend serve any user without losing writes;
//! - [`serve::with_client_addr`]: serve a `Sticky` with `axum::serve` and the peer address.
//!
//! ```
//! use std::convert::Infallible;
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//! use tower_sticky::{Backends, Routed, StickyLayer, affinity::{IpHash, KeyHash}};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let backend = |name: &'static str| service_fn(move |_req: http::Request<String>| async move {
//!     Ok::<_, Infallible>(http::Response::new(format!("hello from {name}")))
//! });
//! let backends = Backends::new()
//!     .with("a", backend("a"))
//!     .with("b", backend("b"))
//!     .with_weight("c", backend("c"), 2)?;
//! let mut app = ServiceBuilder::new()
//!     .layer(
//!         StickyLayer::builder()
//!             .affinity(KeyHash::header("x-user"))
//!             .fallback(IpHash::new().trusted_proxies(["10.0.0.0/8"])?)
//!             .build(),
//!     )
//!     .service(backends);
//!
//! let req = http::Request::builder().header("x-user", "alice").body(String::new())?;
//! let res = app.ready().await?.call(req).await?;
//! let routed = res.extensions().get::<Routed>().expect("Sticky records its choice");
//! println!("alice -> {} ({})", routed.backend, routed.reason);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![warn(missing_debug_implementations, rust_2018_idioms, unreachable_pub)]

pub mod affinity;
mod backends;
mod error;
mod extensions;
pub mod hash;
mod headers;
pub mod health;
#[cfg(feature = "axum")]
pub mod http_backend;
mod id;
mod layer;
pub mod metrics;
pub mod ring;
#[cfg(feature = "axum")]
pub mod serve;
mod service;
pub mod session;
mod sync;

pub use affinity::Affinity;
pub use backends::{BackendState, Backends, BackendsHandle, MemberInfo, MemberSet};
pub use error::BackendsError;
pub use id::BackendId;
pub use layer::{StickyLayer, StickyLayerBuilder};
pub use metrics::{BackendStats, StickyStats};
pub use service::{
    Delivery, InnerError, ReplayBudget, ResponseFuture, Routed, Sticky, TextBody,
    unavailable_response,
};

/// The boxed error type used where errors of different sources meet (discovery streams).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
