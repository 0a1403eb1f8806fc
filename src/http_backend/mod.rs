//! [`HttpBackend`]: a `tower::Service` that forwards requests to a remote HTTP base URL.
//!
//! It is what a gateway puts in a [`Backends`](crate::Backends) set: a pooled hyper-util client
//! (keep-alive; HTTP/1.1, or h2c with prior knowledge) that rewrites the authority, adds
//! `X-Forwarded-For` / `X-Forwarded-Proto` / `X-Forwarded-Host` / `Forwarded`, removes hop-by-hop
//! headers both ways, and streams bodies both ways. Needs the `axum` feature (its response body
//! is `axum::body::Body`, so `Sticky<HttpBackend>` can be served by `axum::serve`).

mod body;
mod error;
mod headers;

pub use error::{HttpBackendError, HttpErrorKind};

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body as AxumBody;
use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use http_body::Body;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service;

use self::body::{ClientBody, TakeBody};
use self::error::Returned;
use crate::{BoxError, ReplayBudget};

/// Forwards requests to one remote HTTP server, like a reverse proxy's upstream.
///
/// Clones share one connection pool. Timeouts: `connect_timeout` bounds making a connection
/// (default 2 s; a request that could not connect was not sent and is retried elsewhere by
/// `Sticky`), `request_timeout` bounds the wait for the response head (default 30 s; the body
/// then streams for as long as it takes). Only `http://` base URLs are supported (no TLS).
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
    client: Client<HttpConnector, ClientBody>,
    name: Arc<str>,
    scheme: Scheme,
    authority: Authority,
    /// The base URL's path without its trailing slash ("" for none).
    prefix: String,
    request_timeout: Option<Duration>,
    http2: bool,
    preserve_host: bool,
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

        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(self.connect_timeout);
        connector.set_nodelay(true);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(self.pool_idle_timeout)
            .pool_max_idle_per_host(self.pool_max_idle_per_host)
            .http2_only(self.http2);
        let client = builder.build(connector);
        Ok(HttpBackend {
            inner: Arc::new(Inner {
                client,
                name: self
                    .name
                    .unwrap_or_else(|| authority.as_str().to_owned())
                    .into(),
                scheme,
                authority,
                prefix,
                request_timeout: self.request_timeout,
                http2: self.http2,
                preserve_host: self.preserve_host,
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
        Box::pin(Arc::clone(&self.inner).forward(req))
    }
}

/// How the request can be given back if it fails.
enum Kept<B> {
    Slot(body::Slot<B>),
    Buffered(Bytes),
}

impl Inner {
    fn error(
        &self,
        kind: HttpErrorKind,
        source: Option<BoxError>,
        returned: Option<Returned>,
    ) -> HttpBackendError {
        HttpBackendError::new(Arc::clone(&self.name), kind, source, returned)
    }

    fn target(&self, uri: &Uri) -> Option<Uri> {
        let path = uri.path_and_query().map_or("/", PathAndQuery::as_str);
        let path_and_query = if self.prefix.is_empty() {
            uri.path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"))
        } else {
            PathAndQuery::try_from(format!("{}{}", self.prefix, path)).ok()?
        };
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path_and_query);
        Uri::from_parts(parts).ok()
    }

    async fn forward<B>(
        self: Arc<Self>,
        req: Request<B>,
    ) -> Result<Response<AxumBody>, HttpBackendError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = req.into_parts();
        let Some(uri) = self.target(&parts.uri) else {
            return Err(self.error(HttpErrorKind::InvalidTarget, None, None));
        };
        let mut headers = parts.headers.clone();
        headers::remove_hop_by_hop(&mut headers);
        headers::add_forwarding(&mut headers, &parts);
        if !self.preserve_host {
            // The client sets Host (HTTP/1.1) or :authority (h2) from the target URI.
            headers.remove(http::header::HOST);
        }

        let budget = parts.extensions.get::<ReplayBudget>().copied();
        let (outgoing, kept) = match budget {
            Some(ReplayBudget { max_body_bytes })
                if body::fits(&body.size_hint(), max_body_bytes) =>
            {
                match body::buffer(body, max_body_bytes).await {
                    Ok(bytes) => (body::full(bytes.clone()), Kept::Buffered(bytes)),
                    // The client's body failed or lied about its length: nothing to replay and
                    // nothing the backend did wrong; answer as a failed send.
                    Err(error) => return Err(self.error(HttpErrorKind::Sent, Some(error), None)),
                }
            }
            _ => {
                let slot: body::Slot<B> = Arc::new(Mutex::new(Some(body)));
                let outgoing = TakeBody::new(Arc::clone(&slot)).boxed_unsync();
                (outgoing, Kept::Slot(slot))
            }
        };

        let mut out = Request::new(outgoing);
        *out.method_mut() = parts.method.clone();
        *out.uri_mut() = uri;
        *out.version_mut() = if self.http2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        *out.headers_mut() = headers;

        let sent = self.client.request(out);
        let result = match self.request_timeout {
            Some(limit) => match tokio::time::timeout(limit, sent).await {
                Ok(result) => result,
                Err(_) => {
                    let returned = replayable(parts, kept);
                    return Err(self.error(HttpErrorKind::Timeout(limit), None, returned));
                }
            },
            None => sent.await,
        };
        match result {
            Ok(res) => {
                let (mut head, incoming) = res.into_parts();
                headers::remove_hop_by_hop(&mut head.headers);
                Ok(Response::from_parts(head, AxumBody::new(incoming)))
            }
            Err(error) if error.is_connect() => {
                let returned = match kept {
                    Kept::Slot(slot) => body::lock(&slot).take().map(|b| {
                        Returned::Original(Mutex::new(Box::new(Request::from_parts(parts, b))))
                    }),
                    Kept::Buffered(bytes) => Some(Returned::Buffered(Box::new(parts), bytes)),
                };
                tracing::debug!(backend = %self.name, %error, "connect failed; request not sent");
                Err(self.error(HttpErrorKind::NotSent, Some(error.into()), returned))
            }
            Err(error) => {
                tracing::debug!(backend = %self.name, %error, "request failed after it was sent");
                let returned = replayable(parts, kept);
                Err(self.error(HttpErrorKind::Sent, Some(error.into()), returned))
            }
        }
    }
}

/// A sent request can only be given back when its body was buffered.
fn replayable<B>(parts: http::request::Parts, kept: Kept<B>) -> Option<Returned> {
    match kept {
        Kept::Buffered(bytes) => Some(Returned::Buffered(Box::new(parts), bytes)),
        Kept::Slot(_) => None,
    }
}
