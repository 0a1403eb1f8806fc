//! [`StickyLayer`] and its builder.

use std::sync::Arc;

use http::Method;
use tower_layer::Layer;

use crate::affinity::{Affinity, Chain, RoundRobin};
use crate::health::PassiveHealth;
use crate::service::{Policy, ReplayBudget, ReplayPolicy};
use crate::{Backends, Sticky};

/// A [`tower::Layer`] that turns a [`Backends`] set into a [`Sticky`] service.
///
/// The layer holds a chain of strategies: the primary [`affinity`](StickyLayerBuilder::affinity),
/// then each [`fallback`](StickyLayerBuilder::fallback) in order, then always [`RoundRobin`] so a
/// request whose strategies all lack a key still gets a backend. Strategies keep their state (a
/// round-robin counter, a learned table) in the layer, so every `Sticky` it makes shares it.
///
/// ```no_run
/// use std::net::SocketAddr;
/// use axum::{Router, routing::get};
/// use tower::ServiceBuilder;
/// use tower_sticky::{Backends, StickyLayer, affinity::{IpHash, KeyHash}};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let backend = |name: &'static str| Router::new().route("/", get(move || async move { name }));
/// let backends = Backends::new()
///     .with("a", backend("a"))
///     .with("b", backend("b"))
///     .with_weight("c", backend("c"), 2)?;
///
/// let sticky = StickyLayer::builder()
///     .affinity(KeyHash::header("x-user"))
///     .fallback(IpHash::new().trusted_proxies(["10.0.0.0/8"])?)
///     .build();
/// let app = ServiceBuilder::new().layer(sticky).service(backends);
///
/// // Serve it with the peer address attached, so IP affinity sees the client.
/// let app = Router::new().fallback_service(app);
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct StickyLayer {
    policy: Arc<Policy>,
}

impl StickyLayer {
    /// A layer with one strategy (then round robin).
    pub fn new(affinity: impl Affinity) -> Self {
        Self::builder().affinity(affinity).build()
    }

    /// A builder for a chain of strategies.
    pub fn builder() -> StickyLayerBuilder {
        StickyLayerBuilder::default()
    }

    /// Makes a [`Sticky`] over `backends` (what [`Layer::layer`] does).
    pub fn sticky<S: Clone>(&self, backends: Backends<S>) -> Sticky<S> {
        Sticky::new(backends, Arc::clone(&self.policy))
    }
}

impl<S: Clone> Layer<Backends<S>> for StickyLayer {
    type Service = Sticky<S>;

    fn layer(&self, backends: Backends<S>) -> Self::Service {
        self.sticky(backends)
    }
}

/// Builds a [`StickyLayer`]: a primary strategy, fallbacks, and the final round robin.
///
/// ```
/// use tower_sticky::{StickyLayer, affinity::{IpHash, KeyHash, LeastInFlight}};
/// let layer = StickyLayer::builder()
///     .affinity(KeyHash::cookie("session_id"))
///     .fallback(IpHash::new())
///     .balance(LeastInFlight::new())
///     .build();
/// # let _ = layer;
/// ```
#[derive(Debug)]
pub struct StickyLayerBuilder {
    primary: Option<Arc<dyn Affinity>>,
    fallbacks: Vec<Arc<dyn Affinity>>,
    balance: Option<Arc<dyn Affinity>>,
    policy: Policy,
    idempotent_methods: Vec<Method>,
    replay_max_body_bytes: Option<usize>,
}

impl Default for StickyLayerBuilder {
    fn default() -> Self {
        Self {
            primary: None,
            fallbacks: Vec::new(),
            balance: None,
            policy: Policy::default(),
            // RFC 9110 section 9.2.2.
            idempotent_methods: vec![
                Method::GET,
                Method::HEAD,
                Method::OPTIONS,
                Method::TRACE,
                Method::PUT,
                Method::DELETE,
            ],
            replay_max_body_bytes: None,
        }
    }
}

impl StickyLayerBuilder {
    /// Sets the primary strategy (asked first).
    pub fn affinity(mut self, affinity: impl Affinity) -> Self {
        self.primary = Some(Arc::new(affinity));
        self
    }

    /// Sets cookie affinity as the primary strategy (the same as [`affinity`](Self::affinity)).
    ///
    /// ```
    /// use tower_sticky::{StickyLayer, affinity::{CookieAffinity, IpHash}};
    /// # fn main() -> Result<(), tower_sticky::affinity::cookie::CookieConfigError> {
    /// let layer = StickyLayer::builder()
    ///     .cookie(CookieAffinity::pinned("srv").build()?)
    ///     .fallback(IpHash::new())
    ///     .build();
    /// # let _ = layer;
    /// # Ok(()) }
    /// ```
    pub fn cookie(self, cookie: crate::affinity::CookieAffinity) -> Self {
        self.affinity(cookie)
    }

    /// Appends a fallback strategy, asked when the ones before it have no key for the request.
    pub fn fallback(mut self, affinity: impl Affinity) -> Self {
        self.fallbacks.push(Arc::new(affinity));
        self
    }

    /// Sets the last resort for requests no strategy has a key for (default [`RoundRobin`]).
    pub fn balance(mut self, affinity: impl Affinity) -> Self {
        self.balance = Some(Arc::new(affinity));
        self
    }

    /// Turns on passive health: consecutive failures eject a backend for a growing back-off
    /// (see [`PassiveHealth`]). Off by default.
    pub fn passive_health(mut self, passive: PassiveHealth) -> Self {
        self.policy.passive = Some(passive);
        self
    }

    /// Retries a request that failed before it was sent (connect refused or timed out) on the
    /// strategy's next candidate, so a dead backend costs the client no error. On by default;
    /// needs an inner service whose error gives the request back (see [`InnerError`]).
    ///
    /// [`InnerError`]: crate::InnerError
    pub fn retry_not_sent(mut self, retry: bool) -> Self {
        self.policy.retry_not_sent = retry;
        self
    }

    /// The most times one request is sent again elsewhere (default 3).
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.policy.max_retries = retries;
        self
    }

    /// Also retries requests that were sent and then failed, when their method is idempotent
    /// (see [`idempotent_methods`](Self::idempotent_methods)) and their body is at most
    /// `max_body_bytes` long: such bodies are buffered so they can be replayed. Off by default.
    pub fn retry_idempotent(mut self, max_body_bytes: usize) -> Self {
        self.replay_max_body_bytes = Some(max_body_bytes);
        self
    }

    /// The methods [`retry_idempotent`](Self::retry_idempotent) may replay (default: GET, HEAD,
    /// OPTIONS, TRACE, PUT, DELETE, the idempotent methods of RFC 9110).
    pub fn idempotent_methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.idempotent_methods = methods.into_iter().collect();
        self
    }

    /// Envoy's panic threshold: when fewer than this fraction of the backends are healthy, route
    /// over all of them, ignoring health (better some errors than a stampede onto the few left).
    /// For example `0.5`. Off by default; values are clamped to `0.0..=1.0`.
    pub fn panic_threshold(mut self, fraction: f64) -> Self {
        self.policy.panic_threshold = Some(if fraction.is_nan() {
            0.0
        } else {
            fraction.clamp(0.0, 1.0)
        });
        self
    }

    /// Builds the layer.
    pub fn build(self) -> StickyLayer {
        let mut chain = Chain::new();
        for strategy in self.primary.into_iter().chain(self.fallbacks) {
            chain = chain.then_shared(strategy);
        }
        let balance = self
            .balance
            .unwrap_or_else(|| Arc::new(RoundRobin::new()) as Arc<dyn Affinity>);
        chain = chain.then_shared(balance);
        let mut policy = self.policy;
        policy.chain = chain;
        policy.replay = self
            .replay_max_body_bytes
            .map(|max_body_bytes| ReplayPolicy {
                methods: self.idempotent_methods,
                budget: ReplayBudget { max_body_bytes },
            });
        StickyLayer {
            policy: Arc::new(policy),
        }
    }
}
