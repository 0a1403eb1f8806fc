//! [`Sticky`]: the service that routes each request to one backend of a [`Backends`] set.

mod future;
mod text_body;
mod unavailable;

pub use future::ResponseFuture;
pub use text_body::TextBody;
pub use unavailable::unavailable_response;

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::ServiceExt;
use tower_service::Service;

use crate::affinity::{Affinity, Chain, Reason, RouteContext, Selection, Unavailable};
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
/// discovery changes and is always ready; `call` chooses, clones the chosen backend's service and
/// drives it with [`oneshot`](tower::ServiceExt::oneshot) inside the response future, so a busy
/// or slow backend never blocks requests for the others. Inner services must therefore be `Clone`
/// and cheap to clone; wrap others in [`tower::buffer::Buffer`].
///
/// # Errors and edge behaviour
///
/// Errors of the chosen backend are returned unchanged (`Error = S::Error`, so over axum routers
/// it stays `Infallible`), and so is the response body type (`Sticky<axum::Router>` serves
/// `axum::body::Body`). When no backend is configured or none is usable, `Sticky` answers
/// `503 Service Unavailable` with a one-line plain-text body saying why, at once; the body type
/// must implement [`TextBody`] for that.
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
    backends: Backends<S>,
    policy: Arc<Policy>,
}

/// The strategy chain shared by all clones of a `Sticky` (and every `Sticky` one layer makes).
#[derive(Debug)]
pub(crate) struct Policy {
    pub(crate) chain: Chain,
}

impl Policy {
    fn select(
        &self,
        req: &http::request::Parts,
        ctx: &RouteContext<'_>,
    ) -> (Selection, &'static str) {
        self.chain.select_named(req, ctx)
    }
}

impl<S> Clone for Sticky<S> {
    fn clone(&self) -> Self {
        Self {
            backends: self.backends.clone(),
            policy: Arc::clone(&self.policy),
        }
    }
}

impl<S> fmt::Debug for Sticky<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sticky")
            .field("backends", &self.backends)
            .field("strategies", &self.policy.chain)
            .finish()
    }
}

impl<S: Clone> Sticky<S> {
    pub(crate) fn new(backends: Backends<S>, policy: Arc<Policy>) -> Self {
        backends.require_rings(&policy.chain.rings());
        Self { backends, policy }
    }

    /// The backend set this service routes over (a handle to the same set).
    pub fn backends(&self) -> &Backends<S> {
        &self.backends
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Sticky<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    ResBody: TextBody,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, Request<ReqBody>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.backends.shared().poll_discover(cx);
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let snapshot = self.backends.shared().load();
        if snapshot.set.is_empty() {
            return ResponseFuture::unavailable(Unavailable::NoBackends);
        }
        let (mut parts, body) = req.into_parts();
        let ctx = RouteContext::new(&snapshot.set, &[]);
        let (selection, strategy) = self.policy.select(&parts, &ctx);
        let choice = match selection {
            Selection::Chosen(choice) => choice,
            Selection::Unavailable(why) => {
                tracing::debug!(reason = %why, "no backend for request");
                return ResponseFuture::unavailable(why);
            }
            // The layer always ends the chain with round robin, so this is only reached when
            // every member is filtered out by a custom strategy.
            Selection::NoKey => return ResponseFuture::unavailable(Unavailable::NoHealthyBackend),
        };
        let (Some(member), Some(service)) = (
            snapshot.set.get(choice.position),
            snapshot.services.get(choice.position),
        ) else {
            return ResponseFuture::unavailable(Unavailable::NoHealthyBackend);
        };
        let routed = Routed {
            backend: member.id().clone(),
            reason: choice.reason,
            strategy,
        };
        tracing::debug!(backend = %routed.backend, reason = %routed.reason, strategy, "routed");
        let in_flight = member.shared_state().begin();
        let service = service.clone();
        drop(snapshot);
        parts.extensions.insert(routed.clone());
        let req = Request::from_parts(parts, body);
        ResponseFuture::routed(service.oneshot(req), in_flight, routed, choice.on_response)
    }
}
