//! Serving a `Sticky` (or any service) with `axum::serve` and the peer address attached, without
//! an extra `Router` in front.
//!
//! IP affinity needs each request's peer address. axum attaches it through
//! `Router::into_make_service_with_connect_info`, which needs a `Router` around the service; this
//! module attaches it directly as a [`ClientAddr`] extension, which saves that router's work on
//! every request.
//!
//! ```no_run
//! use axum::Router;
//! use tower_sticky::{Backends, StickyLayer, affinity::IpHash, serve::with_client_addr};
//!
//! # #[tokio::main] async fn main() -> std::io::Result<()> {
//! let backends = Backends::new().with("a", Router::new()).with("b", Router::new());
//! let sticky = StickyLayer::new(IpHash::new()).sticky(backends);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, with_client_addr(sticky)).await
//! # }
//! ```

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::net::SocketAddr;
use std::task::{Context, Poll};

use axum::serve::{IncomingStream, Listener};
use tower_service::Service;

use crate::affinity::ClientAddr;

/// Wraps `service` so that `axum::serve` gives every connection a copy that stamps requests with
/// the connection's peer address ([`ClientAddr`]).
pub fn with_client_addr<S: Clone>(service: S) -> MakeWithClientAddr<S> {
    MakeWithClientAddr { service }
}

/// The make-service of [`with_client_addr`]: one [`WithClientAddr`] per accepted connection.
#[derive(Debug, Clone)]
pub struct MakeWithClientAddr<S> {
    service: S,
}

impl<S, L> Service<IncomingStream<'_, L>> for MakeWithClientAddr<S>
where
    S: Clone,
    L: Listener<Addr = SocketAddr>,
{
    type Response = WithClientAddr<S>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, stream: IncomingStream<'_, L>) -> Self::Future {
        ready(Ok(WithClientAddr {
            service: self.service.clone(),
            addr: *stream.remote_addr(),
        }))
    }
}

/// A service that inserts [`ClientAddr`] into every request before passing it on.
#[derive(Debug, Clone)]
pub struct WithClientAddr<S> {
    service: S,
    addr: SocketAddr,
}

impl<S> WithClientAddr<S> {
    /// Wraps `service` for one connection from `addr` (for hyper servers you run yourself).
    pub fn new(service: S, addr: SocketAddr) -> Self {
        Self { service, addr }
    }
}

impl<S, B> Service<http::Request<B>> for WithClientAddr<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.service.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> S::Future {
        // With room for what `Sticky` and the router add after it (see `crate::extensions`).
        crate::extensions::insert_roomy(req.extensions_mut(), ClientAddr(self.addr));
        self.service.call(req)
    }
}
