//! [`Sticky`]: the service that routes each request to one backend of a [`Backends`] set.

mod call;
mod future;
mod inner_error;
mod text_body;
mod unavailable;

pub use future::ResponseFuture;
pub use inner_error::{Delivery, InnerError};
pub use text_body::TextBody;
pub use unavailable::unavailable_response;

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use crate::affinity::{
    Affinity, Chain, Reason, ResponseHook, RouteContext, Selection, Unavailable,
};
use crate::backends::{InFlight, MemberSet};
use crate::health::PassiveHealth;
use crate::metrics::StickyStats;
use crate::metrics::facade::{self, Event};
use crate::{BackendId, Backends};

/// Which backend served a request and why. `Sticky` inserts it into the request extensions (so
/// handlers see it) and the response extensions (so outer layers see it).
///
/// ```
/// # use tower_sticky::{Routed, BackendId, affinity::Reason};
/// fn log(res: &http::Response<()>) {
///     if let Some(routed) = res.extensions().get::<Routed>() {
///         println!("served by {} ({})", routed.backend, routed.reason);
///     }
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// The backend's id.
    pub backend: BackendId,
    /// Why it was chosen.
    pub reason: Reason,
    /// The name of the strategy that chose it ([`Affinity::name`]).
    pub strategy: &'static str,
}

/// Routes each request to one backend of a [`Backends`] set, chosen by an affinity chain.
///
/// Made by [`StickyLayer`](crate::StickyLayer). `Sticky` is `Clone` (clones share the backends and
/// the strategies' state) and is itself a `tower::Service<http::Request<B>>`, so it can be an
/// inner service of another `Sticky` (region by hash, then host by IP, ...).
///
/// # Readiness
///
/// A balancer can only choose after it has seen the request, so `Sticky` cannot use the readiness
/// of the backend it will pick. [`poll_ready`](Service::poll_ready) only applies pending
/// discovery changes and is always ready; `call` chooses and clones the chosen backend's service,
/// asks it once whether it is ready and, if so, calls it at once; otherwise the response future
/// drives it with [`oneshot`](tower::ServiceExt::oneshot). A busy or slow backend never blocks
/// requests for the others. Inner services must therefore be `Clone`
/// and cheap to clone; wrap others in [`tower::buffer::Buffer`].
///
/// # Errors, retries and edge behaviour
///
/// What happens to an inner service's error is decided by its [`InnerError`] impl. Errors that
/// give the request back (an [`HttpBackend`](crate::http_backend::HttpBackend) that could not
/// connect; or, with [`retry_idempotent`](crate::StickyLayerBuilder::retry_idempotent), an
/// idempotent request whose body was buffered) are retried inside the response future on the
/// strategy's next candidate, the failed backends excluded, up to
/// [`max_retries`](crate::StickyLayerBuilder::max_retries) times; the response hook of the final
/// choice is the one applied. Other errors are returned as they are (`Infallible` and `BoxError`
/// unchanged, so over axum routers `Sticky` stays infallible) or turned into a response
/// (`HttpBackendError` becomes `502`/`504`). The response body type is unchanged
/// (`Sticky<axum::Router>` and `Sticky<HttpBackend>` serve `axum::body::Body`). When no backend
/// is configured or none is usable, `Sticky` answers `503 Service Unavailable` with a one-line
/// plain-text body saying why, at once; the body type must implement [`TextBody`] for that.
///
/// ```
/// use std::convert::Infallible;
/// use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
/// use tower_sticky::{Backends, StickyLayer, affinity::KeyHash};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let backend = |name: &'static str| service_fn(move |_req: http::Request<String>| async move {
///     Ok::<_, Infallible>(http::Response::new(name.to_owned()))
/// });
/// let backends = Backends::new().with("a", backend("a")).with("b", backend("b"));
/// let mut sticky = ServiceBuilder::new()
///     .layer(StickyLayer::new(KeyHash::header("x-user")))
///     .service(backends);
///
/// let req = || http::Request::builder().header("x-user", "alice").body(String::new()).unwrap();
/// let first = sticky.ready().await.unwrap().call(req()).await.unwrap();
/// let again = sticky.ready().await.unwrap().call(req()).await.unwrap();
/// let routed = |r: &http::Response<_>| r.extensions().get::<tower_sticky::Routed>().unwrap().backend.clone();
/// assert_eq!(routed(&first), routed(&again));
/// # }
/// ```
pub struct Sticky<S> {
    // One `Arc` for both, so that cloning a `Sticky` (axum's server does it per request) and
    // keeping what a retry needs in the response future cost one reference count, not two.
    routing: Arc<Routing<S>>,
}

/// The backends and the policy a `Sticky` routes with.
pub(crate) struct Routing<S> {
    pub(crate) backends: Backends<S>,
    pub(crate) policy: Arc<Policy>,
}

impl<S: Clone> Routing<S> {
    /// [`Policy::pick`] over these backends.
    pub(crate) fn pick(
        &self,
        parts: &mut http::request::Parts,
        excluded: &[BackendId],
    ) -> Result<Attempt<S>, Unavailable> {
        self.policy.pick(&self.backends, parts, excluded)
    }
}

/// The strategy chain and failure handling shared by all clones of a `Sticky` (and every
/// `Sticky` one layer makes).
#[derive(Debug)]
pub(crate) struct Policy {
    pub(crate) chain: Chain,
    pub(crate) passive: Option<PassiveHealth>,
    pub(crate) retry_not_sent: bool,
    pub(crate) max_retries: u32,
    pub(crate) panic_threshold: Option<f64>,
    pub(crate) replay: Option<ReplayPolicy>,
}

/// What a response future without its routing (see [`InnerError::GIVES_REQUESTS_BACK`]) applies:
/// no passive health, no retries.
pub(crate) static DETACHED: Policy = Policy {
    chain: Chain::new(),
    passive: None,
    retry_not_sent: false,
    max_retries: 0,
    panic_threshold: None,
    replay: None,
};

impl Default for Policy {
    fn default() -> Self {
        Self {
            chain: Chain::new(),
            passive: None,
            retry_not_sent: true,
            max_retries: 3,
            panic_threshold: None,
            replay: None,
        }
    }
}

/// Which requests may be buffered so they can be replayed on another backend after being sent.
#[derive(Debug, Clone)]
pub(crate) struct ReplayPolicy {
    pub(crate) methods: Vec<http::Method>,
    pub(crate) budget: ReplayBudget,
}

/// Put in a request's extensions by `Sticky` when the request may be replayed on another backend
/// if it fails after being sent: its method is marked idempotent and the user opted in with
/// [`retry_idempotent`](crate::StickyLayerBuilder::retry_idempotent). An inner service that sees
/// it may buffer up to `max_body_bytes` of the body and give the request back in its error
/// ([`Delivery::SentReplayable`]); [`HttpBackend`](crate::http_backend::HttpBackend) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayBudget {
    /// The most body bytes to buffer; longer bodies are streamed and not replayed.
    pub max_body_bytes: usize,
}

/// One routed attempt: the service clone to drive and what to record about it.
pub(crate) struct Attempt<S> {
    pub(crate) service: S,
    pub(crate) in_flight: InFlight,
    pub(crate) routed: Routed,
    pub(crate) hook: Option<ResponseHook>,
}

impl Policy {
    /// Runs the chain over the current snapshot with `excluded` backends (those that already
    /// failed this request) treated as unusable, and starts the attempt on the chosen backend.
    pub(crate) fn pick<S: Clone>(
        &self,
        backends: &Backends<S>,
        parts: &mut http::request::Parts,
        excluded: &[BackendId],
    ) -> Result<Attempt<S>, Unavailable> {
        let snapshot = backends.shared().load();
        if snapshot.set.is_empty() {
            return Err(Unavailable::NoBackends);
        }
        // Positions of failed backends in this snapshot. First tries (nearly every request) skip
        // even the empty collect: it is not free on this path.
        let excluded: Vec<usize> = if excluded.is_empty() {
            Vec::new()
        } else {
            excluded
                .iter()
                .filter_map(|id| snapshot.set.position(id.as_str()))
                .collect()
        };
        let mut ctx = RouteContext::new(&snapshot.set, &excluded);
        if let Some(threshold) = self.panic_threshold {
            if below_threshold(&snapshot.set, threshold) {
                ctx = ctx.ignoring_health();
            }
        }
        let (selection, strategy) = self.chain.select_named(parts, &ctx);
        let choice = match selection {
            Selection::Chosen(choice) => choice,
            Selection::Unavailable(why) => {
                tracing::debug!(reason = %why, "no backend for request");
                return Err(why);
            }
            // The layer always ends the chain with round robin, so this is only reached when
            // every member is filtered out by a custom strategy.
            Selection::NoKey => return Err(Unavailable::NoHealthyBackend),
        };
        let (Some(member), Some(service)) = (
            snapshot.set.get(choice.position),
            snapshot.services.get(choice.position),
        ) else {
            return Err(Unavailable::NoHealthyBackend);
        };
        let retried = !excluded.is_empty();
        let reason = if retried {
            Reason::Failover
        } else {
            choice.reason
        };
        let routed = Routed {
            backend: member.id().clone(),
            reason,
            strategy,
        };
        let state = member.shared_state();
        match reason {
            Reason::New => {
                state.count_new_assignment();
                facade::record(member.id(), state, Event::NewAssignment);
            }
            Reason::Failover => {
                state.count_reassignment();
                facade::record(member.id(), state, Event::Reassignment);
            }
            _ => {}
        }
        self.chain.prepare_request(parts);
        let in_flight = state.begin();
        facade::record(member.id(), state, Event::Begin);
        // With room for what the inner service adds (see `crate::extensions`).
        crate::extensions::insert_roomy(&mut parts.extensions, routed.clone());
        Ok(Attempt {
            service: service.clone(),
            in_flight,
            routed,
            hook: choice.on_response,
        })
    }
}

/// Envoy's panic threshold: fewer than `threshold` (a fraction) of the members are healthy.
fn below_threshold(set: &MemberSet, threshold: f64) -> bool {
    let healthy = set
        .members()
        .iter()
        .filter(|m| m.state().is_healthy())
        .count();
    (healthy as f64) < threshold * set.len() as f64
}

impl<S> Clone for Sticky<S> {
    fn clone(&self) -> Self {
        Self {
            routing: Arc::clone(&self.routing),
        }
    }
}

impl<S> fmt::Debug for Sticky<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sticky")
            .field("backends", &self.routing.backends)
            .field("strategies", &self.routing.policy.chain)
            .finish()
    }
}

impl<S: Clone> Sticky<S> {
    pub(crate) fn new(backends: Backends<S>, policy: Arc<Policy>) -> Self {
        backends.require_rings(&policy.chain.rings());
        Self {
            routing: Arc::new(Routing { backends, policy }),
        }
    }

    /// The backend set this service routes over (a handle to the same set).
    pub fn backends(&self) -> &Backends<S> {
        &self.routing.backends
    }
}

impl<S> Sticky<S> {
    /// Counters of every backend now (see [`StickyStats`]); the same as
    /// [`Backends::stats`].
    pub fn stats(&self) -> StickyStats {
        self.routing.backends.stats()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Sticky<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Error: InnerError<Request<ReqBody>, ResBody>,
    ResBody: TextBody,
{
    type Response = Response<ResBody>;
    type Error = <S::Error as InnerError<Request<ReqBody>, ResBody>>::Error;
    type Future = ResponseFuture<S, Request<ReqBody>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.routing.backends.shared().poll_discover(cx);
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        ResponseFuture::start(&self.routing, req)
    }
}
