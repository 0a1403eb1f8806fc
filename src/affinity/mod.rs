//! Affinity strategies: how a [`Sticky`](crate::Sticky) picks a backend for a request.
//!
//! Every strategy implements [`Affinity`]. It sees the request head and a [`RouteContext`] (the
//! current members, their health and the rings) and answers with a [`Selection`]: a chosen member,
//! "I have no key for this request" (the next strategy in the chain is asked), or "unavailable"
//! (answer 503).
//!
//! | strategy | key | survives scaling |
//! |---|---|---|
//! | [`IpHash`] (ring mode, default) | client IP (trusted-proxy aware, prefix grouping) | yes |
//! | [`IpHash::modulo`] | `fnv1a(ip) % total_weight`, the classic mapping | no |
//! | [`KeyHash`] | header, cookie, path, query parameter or closure | yes |
//! | [`RoundRobin`] | none (smooth weighted round robin) | n/a |
//! | [`LeastInFlight`] | none (fewest in-flight requests per unit of weight) | n/a |
//! | [`CookieAffinity::pinned`] | signed cookie naming the backend (HAProxy `cookie insert`) | clients stay until their backend goes |
//! | [`CookieAffinity::hashed`] | signed random token in a cookie, on the ring (Heroku) | yes |
//! | [`CookieAffinity::learn`] | the app's own cookie, learned from `Set-Cookie` (LRU + TTL, Redis) | learned clients stay |

mod chain;
mod client_ip;
mod context;
pub mod cookie;
mod ip;
mod key;
mod least_in_flight;
mod round_robin;

pub use chain::Chain;
pub use client_ip::{ClientAddr, ClientIpResolver, ForwardedHeader};
pub use context::{RingRef, RouteContext};
pub use cookie::CookieAffinity;
pub use ip::IpHash;
pub use key::{KeyHash, KeySource};
pub use least_in_flight::LeastInFlight;
pub use round_robin::RoundRobin;

use std::fmt;

use crate::ring::RingKind;

/// A way of choosing a backend for a request.
///
/// Implement it to add a strategy; `Sticky` calls [`select`](Affinity::select) once per request
/// on the request path, so it must not block. Strategies that read a ring name its kind in
/// [`rings`](Affinity::rings) so the ring is kept built for them.
///
/// ```
/// use tower_sticky::affinity::{Affinity, Choice, Reason, RouteContext, Selection};
///
/// /// Sends everything to the backend named by the `x-backend` header, when it is usable.
/// #[derive(Debug)]
/// struct ByHeader;
///
/// impl Affinity for ByHeader {
///     fn select(&self, req: &http::request::Parts, ctx: &RouteContext<'_>) -> Selection {
///         let Some(name) = req.headers.get("x-backend").and_then(|v| v.to_str().ok()) else {
///             return Selection::NoKey;
///         };
///         match ctx.position(name).filter(|&p| ctx.is_usable(p)) {
///             Some(position) => Selection::Chosen(Choice::new(position, Reason::Sticky)),
///             None => Selection::NoKey,
///         }
///     }
///     fn name(&self) -> &'static str {
///         "by-header"
///     }
/// }
/// ```
pub trait Affinity: Send + Sync + fmt::Debug + 'static {
    /// Chooses a member for this request.
    fn select(&self, req: &http::request::Parts, ctx: &RouteContext<'_>) -> Selection;

    /// A short name for logs, traces and metrics (`"ip-hash"`, `"cookie"`, ...).
    fn name(&self) -> &'static str;

    /// The ring kinds this strategy reads through [`RouteContext::ring`].
    fn rings(&self) -> Vec<RingKind> {
        Vec::new()
    }

    /// Adjusts the request once a backend has been chosen, before it is sent there (by default
    /// nothing). Cookie affinity in [`indirect`](cookie::CookieAffinityBuilder::indirect) mode
    /// removes its own cookie here, so backends never see it.
    fn prepare_request(&self, _req: &mut http::request::Parts) {}

    /// Whether [`prepare_request`](Self::prepare_request) may change requests (by default
    /// `true`). A strategy whose `prepare_request` does nothing returns `false`, so that a chain
    /// of such strategies skips the calls on every request.
    fn edits_requests(&self) -> bool {
        true
    }
}

/// What a strategy decided.
#[derive(Debug)]
pub enum Selection {
    /// Route to this member.
    Chosen(Choice),
    /// This strategy has no key for the request; ask the next one in the chain.
    NoKey,
    /// Stop: answer 503 with this reason (e.g. strict mode and the pinned backend is down).
    Unavailable(Unavailable),
}

/// Why a request could not be routed; it becomes the body of the 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unavailable {
    /// The backend set is empty.
    NoBackends,
    /// There are backends but none may take this request (all unhealthy, draining or excluded).
    NoHealthyBackend,
    /// Strict affinity: the client's backend is down and moving it elsewhere is not allowed.
    AffinityBackendDown,
}

impl Unavailable {
    /// The plain-text message sent to the client.
    pub fn message(&self) -> &'static str {
        match self {
            Unavailable::NoBackends => "no backends configured",
            Unavailable::NoHealthyBackend => "no healthy backend available",
            Unavailable::AffinityBackendDown => "the backend this client is pinned to is down",
        }
    }
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

/// Changes a strategy wants made to the response of the request it routed (e.g. `Set-Cookie`).
pub type ResponseHook = Box<dyn FnOnce(&mut http::response::Parts) + Send + 'static>;

/// A chosen member and why.
pub struct Choice {
    /// Position of the member in the [`RouteContext`].
    pub position: usize,
    /// Why this member.
    pub reason: Reason,
    /// Runs on the response head before it is returned (only when set: most requests have none).
    pub on_response: Option<ResponseHook>,
}

impl Choice {
    /// A choice with no response hook.
    pub fn new(position: usize, reason: Reason) -> Self {
        Self {
            position,
            reason,
            on_response: None,
        }
    }

    /// Adds a hook that runs on the response head.
    pub fn on_response(
        mut self,
        hook: impl FnOnce(&mut http::response::Parts) + Send + 'static,
    ) -> Self {
        self.on_response = Some(Box::new(hook));
        self
    }
}

impl fmt::Debug for Choice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Choice")
            .field("position", &self.position)
            .field("reason", &self.reason)
            .field("on_response", &self.on_response.is_some())
            .finish()
    }
}

/// Why a backend was chosen; recorded in [`Routed`](crate::Routed), traces and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// The client's key (cookie, IP, header...) maps to this backend and it is usable.
    Sticky,
    /// A client with no affinity yet was assigned (and will stick from now on).
    New,
    /// The client's own backend is unusable; this is its deterministic substitute.
    Failover,
    /// No affinity applies: spread by round robin or least in flight.
    Balanced,
}

impl Reason {
    /// Lower-case name: `sticky`, `new`, `failover`, `balanced`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Reason::Sticky => "sticky",
            Reason::New => "new",
            Reason::Failover => "failover",
            Reason::Balanced => "balanced",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
