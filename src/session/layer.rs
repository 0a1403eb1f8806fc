//! `SessionLayer`: gives each request a [`Session`], saves it after the handler, sets the cookie.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use futures_util::future::BoxFuture;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, SET_COOKIE};
use http::{HeaderValue, Request, Response, StatusCode};
use tower_layer::Layer;
use tower_service::Service;

use super::cookie_config::CookieConfig;
use super::error::SessionError;
use super::handle::{CookieAction, Session};
use super::store::{Expiry, SessionStore};

/// Adds sessions to an axum router (or any Tower HTTP service): reads the session cookie, puts a
/// [`Session`] in the request extensions for the extractor, and after the handler saves what
/// changed (one store round trip, only if something changed) and sets or removes the cookie.
///
/// If saving fails because the store is unavailable, the response is replaced by a
/// `503 Service Unavailable` with the plain-text body `session store unavailable`: the client is
/// never told a change succeeded when it was not stored.
///
/// ```
/// use std::time::Duration;
/// use axum::{Router, routing::post};
/// use tower_sticky::session::{CookieConfig, MemoryStore, Session, SessionError, SessionLayer};
///
/// async fn login(session: Session) -> Result<&'static str, SessionError> {
///     session.cycle_id().await?;
///     session.insert("user", "alice").await?;
///     Ok("welcome")
/// }
///
/// let app: Router = Router::new().route("/login", post(login)).layer(
///     SessionLayer::new(MemoryStore::default())
///         .cookie(CookieConfig::new("sid").host_prefix())
///         .idle_timeout(Duration::from_secs(30 * 60))
///         .absolute_timeout(Some(Duration::from_secs(12 * 3600))),
/// );
/// ```
#[derive(Clone)]
pub struct SessionLayer {
    store: Arc<dyn SessionStore>,
    config: Arc<Config>,
}

#[derive(Debug, Clone)]
struct Config {
    cookie: CookieConfig,
    expiry: Expiry,
    touch_every_request: bool,
}

impl fmt::Debug for SessionLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionLayer")
            .field("store", &self.store)
            .field("config", &self.config)
            .finish()
    }
}

impl SessionLayer {
    /// Sessions kept in `store`, with default cookie attributes ([`CookieConfig::default`]) and
    /// expiry ([`Expiry::default`]: 24 h idle, 7 days absolute).
    pub fn new(store: impl SessionStore) -> Self {
        Self::from_arc(Arc::new(store))
    }

    /// Same, sharing a store already behind an `Arc`.
    pub fn from_arc(store: Arc<dyn SessionStore>) -> Self {
        Self {
            store,
            config: Arc::new(Config {
                cookie: CookieConfig::default(),
                expiry: Expiry::default(),
                touch_every_request: false,
            }),
        }
    }

    fn config_mut(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    /// Cookie name and attributes.
    pub fn cookie(mut self, cookie: CookieConfig) -> Self {
        self.config_mut().cookie = cookie;
        self
    }

    /// Both expiry limits at once.
    pub fn expiry(mut self, expiry: Expiry) -> Self {
        self.config_mut().expiry = expiry;
        self
    }

    /// Ends a session after this long without a save (or a touch, see
    /// [`touch_every_request`](Self::touch_every_request)).
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.config_mut().expiry.idle = idle;
        self
    }

    /// Ends a session this long after it was created, however active; `None` for no limit.
    pub fn absolute_timeout(mut self, absolute: Option<Duration>) -> Self {
        self.config_mut().expiry.absolute = absolute;
        self
    }

    /// Extend the idle expiry on every request that carries a session, not only when it is
    /// modified (costs one small store round trip on requests that change nothing).
    pub fn touch_every_request(mut self, touch: bool) -> Self {
        self.config_mut().touch_every_request = touch;
        self
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`SessionLayer`].
#[derive(Clone, Debug)]
pub struct SessionService<S> {
    inner: S,
    layer: SessionLayer,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        // The readied service handles this request; a fresh clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let config = &layer.config;
            let presented = config.cookie.session_id(req.headers());
            let session = Session::new(layer.store.clone(), presented.clone());
            req.extensions_mut().insert(session.clone());
            let res = inner.call(req).await?.map(Body::new);
            let action = match session
                .commit(&config.expiry, config.touch_every_request)
                .await
            {
                Ok(action) => action,
                Err(e) => {
                    let e = SessionError::Store(e);
                    tracing::warn!(error = %e, "saving the session failed");
                    return Ok(plain_text(e.status(), e.public_message()));
                }
            };
            Ok(apply_cookie(
                res,
                action,
                presented.as_ref(),
                &config.cookie,
            ))
        })
    }
}

fn apply_cookie(
    mut res: Response<Body>,
    action: CookieAction,
    presented: Option<&super::SessionId>,
    cookie: &CookieConfig,
) -> Response<Body> {
    let value = match action {
        CookieAction::Nothing => return res,
        // The client already holds this id in a browser-session cookie: nothing to refresh.
        CookieAction::Set(id) if Some(&id) == presented && !cookie.is_persistent() => {
            return res;
        }
        CookieAction::Set(id) => cookie.set_cookie(&id),
        CookieAction::Remove => cookie.removal_cookie(),
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        res.headers_mut().append(SET_COOKIE, value);
        // A response that hands out a session must not be stored by shared caches.
        res.headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// A short plain-text response, e.g. `503 Service Unavailable: session store unavailable`.
pub(crate) fn plain_text(status: StatusCode, message: &str) -> Response<Body> {
    let reason = status.canonical_reason().unwrap_or("Error");
    let mut res = Response::new(Body::from(format!(
        "{} {reason}: {message}\n",
        status.as_u16()
    )));
    *res.status_mut() = status;
    res.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}
