//! [`HttpBackend`]: a `tower::Service` that forwards requests to a remote HTTP base URL.
//!
//! It is what a gateway puts in a [`Backends`](crate::Backends) set: an HTTP client with its own
//! keep-alive pool that rewrites the authority, adds `X-Forwarded-For` / `X-Forwarded-Proto` /
//! `X-Forwarded-Host` / `Forwarded` (see [`ForwardedHeaders`]), removes hop-by-hop headers both
//! ways, and streams bodies both ways. HTTP/1.1 runs on the calling task with no connection task
//! of its own (the `h1` module); h2c with prior knowledge runs on hyper's client. Needs the `axum`
//! feature (its response body is `axum::body::Body`, so `Sticky<HttpBackend>` can be served by
//! `axum::serve`).

mod body;
mod error;
mod h1;
mod headers;
mod pool;

pub use error::{HttpBackendError, HttpErrorKind};
pub use headers::ForwardedHeaders;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body as AxumBody;
use bytes::Bytes;
use http::header::HOST;
use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri, Version};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::client::conn::TrySendError;
use tower_service::Service;

use self::body::{ClientBody, TakeBody};
use self::error::Returned;
use self::pool::{Pool, PoolConfig};
use crate::{BoxError, ReplayBudget};

/// Forwards requests to one remote HTTP server, like a reverse proxy's upstream.
///
/// Clones share one connection pool. Over HTTP/1.1 the request is written and the response read
/// by the task that polls the response future and body (the one serving the client's
/// connection), so a proxied request is never handed between tasks. Timeouts: `connect_timeout`
/// bounds making a connection (default 2 s; a request that could not connect was not sent and
/// is retried elsewhere by `Sticky`), `request_timeout` bounds the wait for the response head
/// (default 30 s; the body then streams for as long as it takes). Only `http://` base URLs are supported (no TLS).
///
/// Errors are [`HttpBackendError`]s naming the backend; inside a `Sticky` they become retries or
/// `502`/`504` responses, so `Sticky<HttpBackend>` is infallible.
///
/// ```no_run
/// use std::time::Duration;
/// use axum::Router;
/// use tower_sticky::{Backends, StickyLayer, affinity::IpHash, http_backend::HttpBackend};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let backend = |name: &str, url: &str| {
///     HttpBackend::builder(url)
///         .name(name)
///         .connect_timeout(Duration::from_millis(500))
///         .request_timeout(Duration::from_secs(10))
///         .build()
/// };
/// let backends = Backends::new()
///     .with("a", backend("a", "http://127.0.0.1:9001")?)
///     .with("b", backend("b", "http://127.0.0.1:9002")?);
/// let app = StickyLayer::new(IpHash::new()).sticky(backends);
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// axum::serve(
///     listener,
///     Router::new()
///         .fallback_service(app)
///         .into_make_service_with_connect_info::<std::net::SocketAddr>(),
/// )
/// .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct HttpBackend {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Arc<Pool>,
    name: Arc<str>,
    scheme: Scheme,
    authority: Authority,
    /// The `Host` of HTTP/1.1 requests: the base URL's authority.
    host: HeaderValue,
    /// The base URL's path without its trailing slash ("" for none).
    prefix: String,
    request_timeout: Option<Duration>,
    http2: bool,
    preserve_host: bool,
    forwarded: ForwardedHeaders,
}

impl std::fmt::Debug for HttpBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpBackend")
            .field("name", &self.inner.name)
            .field(
                "base",
                &format_args!(
                    "{}://{}{}",
                    self.inner.scheme, self.inner.authority, self.inner.prefix
                ),
            )
            .field("http2", &self.inner.http2)
            .finish()
    }
}

/// A base URL `HttpBackend` cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid backend base URL {url:?}: {why}")]
pub struct InvalidBaseUrl {
    /// The text given.
    pub url: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// Configures an [`HttpBackend`].
#[derive(Debug, Clone)]
pub struct HttpBackendBuilder {
    base: String,
    name: Option<String>,
    connect_timeout: Option<Duration>,
    request_timeout: Option<Duration>,
    http2: bool,
    pool_idle_timeout: Option<Duration>,
    pool_max_idle_per_host: usize,
    preserve_host: bool,
    forwarded: ForwardedHeaders,
}

impl HttpBackend {
    /// A backend at `base` (e.g. `http://10.0.0.7:8080` or `http://10.0.0.7/api`) with default
    /// settings.
    pub fn new(base: &str) -> Result<Self, InvalidBaseUrl> {
        Self::builder(base).build()
    }

    /// A builder for a backend at `base`.
    pub fn builder(base: &str) -> HttpBackendBuilder {
        HttpBackendBuilder {
            base: base.to_owned(),
            name: None,
            connect_timeout: Some(Duration::from_secs(2)),
            request_timeout: Some(Duration::from_secs(30)),
            http2: false,
            pool_idle_timeout: Some(Duration::from_secs(90)),
            pool_max_idle_per_host: usize::MAX,
            preserve_host: false,
            forwarded: ForwardedHeaders::ALL,
        }
    }

    /// The name used in errors and logs.
    pub fn name(&self) -> &str {
        &self.inner.name
    }
}

impl HttpBackendBuilder {
    /// The name errors and logs use (default: the base URL's authority, e.g. `10.0.0.7:8080`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Bounds making a TCP connection (default 2 s; `None` for the OS default).
    pub fn connect_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.connect_timeout = timeout.into();
        self
    }

    /// Bounds the wait for the response head (default 30 s; `None` for no bound).
    pub fn request_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.request_timeout = timeout.into();
        self
    }

    /// Speaks HTTP/2 over cleartext with prior knowledge (h2c) instead of HTTP/1.1.
    pub fn http2_prior_knowledge(mut self, http2: bool) -> Self {
        self.http2 = http2;
        self
    }

    /// How long an idle pooled connection is kept (default 90 s).
    pub fn pool_idle_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.pool_idle_timeout = timeout.into();
        self
    }

    /// The most idle connections kept (default unbounded).
    pub fn pool_max_idle(mut self, max: usize) -> Self {
        self.pool_max_idle_per_host = max;
        self
    }

    /// Sends the client's `Host` header to the backend instead of the backend's own authority
    /// (default: rewrite, the original goes in `X-Forwarded-Host`).
    pub fn preserve_host(mut self, preserve: bool) -> Self {
        self.preserve_host = preserve;
        self
    }

    /// Which forwarding headers to add (default [`ForwardedHeaders::ALL`]).
    ///
    /// ```
    /// use tower_sticky::http_backend::{ForwardedHeaders, HttpBackend};
    ///
    /// // Like HAProxy's `option forwardfor`: only X-Forwarded-For.
    /// let backend = HttpBackend::builder("http://127.0.0.1:9001")
    ///     .forwarded_headers(ForwardedHeaders::X_FORWARDED_FOR)
    ///     .build()
    ///     .unwrap();
    /// # let _ = backend;
    /// ```
    pub fn forwarded_headers(mut self, which: ForwardedHeaders) -> Self {
        self.forwarded = which;
        self
    }

    /// Builds the backend (no connection is made until the first request).
    pub fn build(self) -> Result<HttpBackend, InvalidBaseUrl> {
        let invalid = |why| InvalidBaseUrl {
            url: self.base.clone(),
            why,
        };
        let uri: Uri = self.base.parse().map_err(|_| invalid("not a URL"))?;
        let scheme = uri.scheme().cloned().ok_or_else(|| invalid("no scheme"))?;
        if scheme != Scheme::HTTP {
            return Err(invalid("only http:// is supported (no TLS)"));
        }
        let authority = uri.authority().cloned().ok_or_else(|| invalid("no host"))?;
        if uri.query().is_some() {
            return Err(invalid("a base URL cannot have a query"));
        }
        let prefix = uri.path().trim_end_matches('/').to_owned();
        let host = HeaderValue::from_str(authority.as_str()).map_err(|_| invalid("bad host"))?;
        // `[::1]` in a URL is `::1` to the resolver.
        let connect_host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let pool = Pool::new(PoolConfig {
            host: connect_host,
            port: authority.port_u16().unwrap_or(80),
            connect_timeout: self.connect_timeout,
            idle_timeout: self.pool_idle_timeout,
            max_idle: self.pool_max_idle_per_host,
        });
        Ok(HttpBackend {
            inner: Arc::new(Inner {
                pool: Arc::new(pool),
                name: self
                    .name
                    .unwrap_or_else(|| authority.as_str().to_owned())
                    .into(),
                scheme,
                authority,
                host,
                prefix,
                request_timeout: self.request_timeout,
                http2: self.http2,
                preserve_host: self.preserve_host,
                forwarded: self.forwarded,
            }),
        })
    }
}

impl<B> Service<Request<B>> for HttpBackend
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<AxumBody>;
    type Error = HttpBackendError;
    type Future =
        Pin<Box<dyn Future<Output = Result<Response<AxumBody>, HttpBackendError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The pool opens connections on demand; readiness is per request.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let inner = Arc::clone(&self.inner);
        if inner.http2 {
            Box::pin(inner.forward_h2(req))
        } else {
            Box::pin(inner.forward_h1(req))
        }
    }
}

/// How the original request can be given back if it fails.
enum Kept<B> {
    /// The body was empty: the original body is kept aside untouched (no slot, no lock).
    Empty(B),
    /// The body waits in a slot until the connection first reads it (HTTP/2).
    Slot(body::Slot<B>),
    /// The body is being streamed; it cannot be given back (HTTP/1.1).
    Streamed,
    /// A replayable request: its head as it came, and its buffered body.
    Buffered(Box<Parts>, Bytes),
}

/// What `prepare` changed that a request given back unsent must have restored.
struct Undo {
    /// The client's URI, when the target differs from it.
    uri: Option<Uri>,
    /// The client's `Host`, when the backend's was sent instead.
    host: Option<HeaderValue>,
}

/// Marks a request given back unsent after its forwarding headers were added, so the next backend
/// does not add them twice.
#[derive(Debug, Clone, Copy)]
struct AlreadyForwarded;

type Sent = Result<Response<hyper::body::Incoming>, TrySendError<Request<ClientBody>>>;
type H2Sender = hyper::client::conn::http2::SendRequest<ClientBody>;

impl Inner {
    fn error(
        &self,
        kind: HttpErrorKind,
        source: Option<BoxError>,
        returned: Option<Returned>,
    ) -> HttpBackendError {
        HttpBackendError::new(Arc::clone(&self.name), kind, source, returned)
    }

    /// The request target for the backend: `None` if it cannot be built, `Some(None)` when the
    /// client's URI can be sent as it is.
    fn target(&self, uri: &Uri) -> Option<Option<Uri>> {
        let origin_form = uri.scheme().is_none() && uri.authority().is_none();
        if !self.http2 && self.prefix.is_empty() && origin_form {
            return Some(None);
        }
        let path = uri.path_and_query().map_or("/", PathAndQuery::as_str);
        let path_and_query = if self.prefix.is_empty() {
            uri.path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"))
        } else {
            PathAndQuery::try_from(format!("{}{}", self.prefix, path)).ok()?
        };
        let mut parts = http::uri::Parts::default();
        if self.http2 {
            // HTTP/2 carries scheme and authority as pseudo-headers; HTTP/1.1 sends the origin
            // form and the authority in `Host`.
            parts.scheme = Some(self.scheme.clone());
            parts.authority = Some(self.authority.clone());
        }
        parts.path_and_query = Some(path_and_query);
        Uri::from_parts(parts).ok().map(Some)
    }

    /// Turns the client's request head into the backend's, in place.
    fn prepare(&self, parts: &mut Parts) -> Option<Undo> {
        let target = self.target(&parts.uri)?;
        headers::remove_hop_by_hop(&mut parts.headers);
        let client_host = if self.preserve_host {
            if !self.http2 && !parts.headers.contains_key(HOST) {
                // An HTTP/2 client names the host in the URI; HTTP/1.1 needs it in `Host`.
                let host = parts
                    .uri
                    .authority()
                    .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
                    .unwrap_or_else(|| self.host.clone());
                parts.headers.insert(HOST, host);
            }
            None
        } else if self.http2 {
            // HTTP/2 sends the target's authority as `:authority`.
            parts.headers.remove(HOST)
        } else {
            parts.headers.insert(HOST, self.host.clone())
        };
        if parts.extensions.get::<AlreadyForwarded>().is_none() {
            let wants_host = self.forwarded.x_forwarded_host || self.forwarded.forwarded;
            let host_seen = match &client_host {
                _ if !wants_host => None,
                Some(host) => Some(host.clone()),
                None if self.preserve_host => parts.headers.get(HOST).cloned(),
                None => None,
            };
            headers::add_forwarding(
                self.forwarded,
                &mut parts.headers,
                &parts.extensions,
                &parts.uri,
                host_seen,
            );
        }
        let uri = target.map(|target| std::mem::replace(&mut parts.uri, target));
        parts.version = if self.http2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        Some(Undo {
            uri,
            host: client_host,
        })
    }

    /// Gives back a request the backend never saw: the client's URI and `Host` restored, the
    /// forwarding headers kept and marked as added.
    fn restore(&self, parts: &mut Parts, undo: Undo) {
        if let Some(uri) = undo.uri {
            parts.uri = uri;
        }
        if !self.preserve_host {
            match undo.host {
                Some(host) => parts.headers.insert(HOST, host),
                None => parts.headers.remove(HOST),
            };
        }
        parts.extensions.insert(AlreadyForwarded);
    }

    async fn send(
        sender: &mut H2Sender,
        req: Request<ClientBody>,
        limit: Option<Duration>,
    ) -> Option<Sent> {
        let sent = sender.try_send_request(req);
        match limit {
            Some(limit) => tokio::time::timeout(limit, sent).await.ok(),
            None => Some(sent.await),
        }
    }

    /// Forwards one request over the shared HTTP/2 connection (hyper's client).
    async fn forward_h2<B>(
        self: Arc<Self>,
        req: Request<B>,
    ) -> Result<Response<AxumBody>, HttpBackendError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        // Connect first: a request that cannot get a connection goes back to `Sticky` untouched.
        let mut sender = match self.pool.checkout_h2().await {
            Ok(sender) => sender,
            Err(error) => {
                tracing::debug!(backend = %self.name, %error, "connect failed; request not sent");
                let returned = Some(Returned::original(req));
                return Err(self.error(HttpErrorKind::NotSent, Some(error.into()), returned));
            }
        };

        let (mut parts, body) = req.into_parts();
        let budget = parts.extensions.get::<ReplayBudget>().copied();
        let (outgoing, kept) = match budget {
            Some(ReplayBudget { max_body_bytes })
                if body::fits(&body.size_hint(), max_body_bytes) =>
            {
                // Boxed: the rare path; its state would enlarge every request's future.
                match Box::pin(body::buffer(body, max_body_bytes)).await {
                    Ok(bytes) => (
                        body::full(bytes.clone()),
                        Kept::Buffered(Box::new(parts.clone()), bytes),
                    ),
                    // The client's body failed or lied about its length: nothing to replay and
                    // nothing the backend did wrong; answer as a failed send.
                    Err(error) => {
                        return Err(self.error(HttpErrorKind::Sent, Some(error), None));
                    }
                }
            }
            _ if body.is_end_stream() => (body::empty(), Kept::Empty(body)),
            _ => {
                let slot: body::Slot<B> = Arc::new(Mutex::new(Some(body)));
                let outgoing = TakeBody::new(Arc::clone(&slot)).boxed_unsync();
                (outgoing, Kept::Slot(slot))
            }
        };
        let Some(undo) = self.prepare(&mut parts) else {
            return Err(self.error(HttpErrorKind::InvalidTarget, None, None));
        };

        let mut out = Request::from_parts(parts, outgoing);
        let mut fresh = false;
        loop {
            let Some(sent) = Self::send(&mut sender, out, self.request_timeout).await else {
                let limit = self.request_timeout.unwrap_or_default();
                return Err(self.error(HttpErrorKind::Timeout(limit), None, replayable(kept)));
            };
            let mut error = match sent {
                Ok(res) => return Ok(respond_h2(res)),
                Err(error) => error,
            };
            // Only a request no connection took, on a pooled connection, gets a second try:
            // after a brand-new connection refused it too, give up on this backend.
            let (Some(unsent), false) = (error.take_message(), fresh) else {
                let error = error.into_error();
                tracing::debug!(backend = %self.name, %error, "request failed on its connection");
                return Err(self.error(HttpErrorKind::Sent, Some(error.into()), replayable(kept)));
            };
            // A pooled connection closed just as it was taken: try once on a new one (the other
            // idle ones may be as stale).
            sender = match self.pool.connect_h2().await {
                Ok(sender) => sender,
                Err(connect) => {
                    tracing::debug!(backend = %self.name, error = %connect, "reconnect failed; request not sent");
                    let (mut parts, _) = unsent.into_parts();
                    self.restore(&mut parts, undo);
                    let returned = given_back(parts, kept);
                    return Err(self.error(HttpErrorKind::NotSent, Some(connect.into()), returned));
                }
            };
            fresh = true;
            out = unsent;
        }
    }
}

/// The backend's response with its hop-by-hop headers removed.
fn respond_h2(res: Response<hyper::body::Incoming>) -> Response<AxumBody> {
    let (mut head, incoming) = res.into_parts();
    headers::remove_hop_by_hop(&mut head.headers);
    Response::from_parts(head, AxumBody::new(incoming))
}

/// The original request rebuilt from its restored head and its kept body, if the body is still
/// there to give.
fn given_back<B: Send + 'static>(parts: Parts, kept: Kept<B>) -> Option<Returned> {
    match kept {
        Kept::Empty(body) => Some(Returned::original(Request::from_parts(parts, body))),
        Kept::Slot(slot) => body::lock(&slot)
            .take()
            .map(|body| Returned::original(Request::from_parts(parts, body))),
        Kept::Buffered(original, bytes) => Some(Returned::Buffered(original, bytes)),
        Kept::Streamed => None,
    }
}

/// A sent request can only be given back when its body was buffered.
fn replayable<B>(kept: Kept<B>) -> Option<Returned> {
    match kept {
        Kept::Buffered(parts, bytes) => Some(Returned::Buffered(parts, bytes)),
        Kept::Empty(_) | Kept::Slot(_) | Kept::Streamed => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::affinity::ClientAddr;

    fn client_request() -> Parts {
        let mut req = Request::builder()
            .uri("/cart?x=1")
            .header(HOST, "shop.example")
            .header("x-forwarded-for", "203.0.113.9")
            .header("connection", "x-hop")
            .header("x-hop", "1")
            .body(())
            .unwrap();
        req.extensions_mut()
            .insert(ClientAddr("192.0.2.7:5000".parse().unwrap()));
        req.into_parts().0
    }

    fn backend(
        base: &str,
        configure: impl Fn(HttpBackendBuilder) -> HttpBackendBuilder,
    ) -> Arc<Inner> {
        Arc::clone(&configure(HttpBackend::builder(base)).build().unwrap().inner)
    }

    #[test]
    fn prepare_sends_the_origin_form_with_the_backends_host_and_forwarding_headers() {
        let inner = backend("http://10.0.0.1:8080/api", |b| b);
        let mut parts = client_request();
        inner.prepare(&mut parts).unwrap();
        assert_eq!(parts.uri, "/api/cart?x=1");
        assert_eq!(parts.headers[HOST], "10.0.0.1:8080");
        assert_eq!(parts.headers["x-forwarded-for"], "203.0.113.9, 192.0.2.7");
        assert_eq!(parts.headers["x-forwarded-host"], "shop.example");
        assert!(parts.headers.get("x-hop").is_none());
        assert_eq!(parts.version, Version::HTTP_11);

        let h2 = backend("http://10.0.0.1:8080", |b| b.http2_prior_knowledge(true));
        let mut parts = client_request();
        h2.prepare(&mut parts).unwrap();
        assert_eq!(parts.uri, "http://10.0.0.1:8080/cart?x=1");
        assert!(parts.headers.get(HOST).is_none(), ":authority carries it");
    }

    #[test]
    fn a_request_given_back_unsent_is_restored_and_not_forwarded_twice() {
        let first = backend("http://10.0.0.1:8080/api", |b| b);
        let second = backend("http://10.0.0.2:8080", |b| b);
        let mut parts = client_request();
        let undo = first.prepare(&mut parts).unwrap();
        first.restore(&mut parts, undo);
        assert_eq!(parts.uri, "/cart?x=1", "the client's target again");
        assert_eq!(
            parts.headers[HOST], "shop.example",
            "the client's Host again"
        );

        second.prepare(&mut parts).unwrap();
        assert_eq!(parts.uri, "/cart?x=1");
        assert_eq!(parts.headers[HOST], "10.0.0.2:8080");
        assert_eq!(
            parts.headers["x-forwarded-for"], "203.0.113.9, 192.0.2.7",
            "the client's address is added once"
        );
        assert_eq!(parts.headers.get_all("forwarded").iter().count(), 1);
        assert_eq!(parts.headers["x-forwarded-host"], "shop.example");
    }

    #[test]
    fn preserve_host_keeps_the_clients_host_and_fills_it_in_for_http2_clients() {
        let inner = backend("http://10.0.0.1:8080", |b| b.preserve_host(true));
        let mut parts = client_request();
        inner.prepare(&mut parts).unwrap();
        assert_eq!(parts.headers[HOST], "shop.example");

        let mut parts = client_request();
        parts.headers.remove(HOST);
        parts.uri = "http://shop.example/cart".parse().unwrap();
        inner.prepare(&mut parts).unwrap();
        assert_eq!(parts.headers[HOST], "shop.example");
        assert_eq!(parts.uri, "/cart");
    }

    #[test]
    fn only_the_chosen_forwarding_headers_are_added() {
        let inner = backend("http://10.0.0.1:8080", |b| {
            b.forwarded_headers(ForwardedHeaders::X_FORWARDED_FOR)
        });
        let mut parts = client_request();
        inner.prepare(&mut parts).unwrap();
        assert_eq!(parts.headers["x-forwarded-for"], "203.0.113.9, 192.0.2.7");
        for absent in ["x-forwarded-proto", "x-forwarded-host", "forwarded"] {
            assert!(parts.headers.get(absent).is_none(), "{absent}");
        }
        let none = backend("http://10.0.0.1:8080", |b| {
            b.forwarded_headers(ForwardedHeaders::NONE)
        });
        let mut parts = client_request();
        none.prepare(&mut parts).unwrap();
        assert_eq!(
            parts.headers["x-forwarded-for"], "203.0.113.9",
            "left as it came"
        );
    }
}
