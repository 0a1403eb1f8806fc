//! A lean HTTP/1.1 server for gateways: serves a tower service on a TCP listener, every request
//! stamped with its peer's address ([`ClientAddr`]), with graceful shutdown.
//!
//! ```no_run
//! use axum::Router;
//! use tower_sticky::{Backends, StickyLayer, affinity::IpHash, serve::http1};
//!
//! # #[tokio::main] async fn main() -> std::io::Result<()> {
//! let backends = Backends::new().with("a", Router::new()).with("b", Router::new());
//! let sticky = StickyLayer::new(IpHash::new()).sticky(backends);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! http1::serve(listener, sticky, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await;
//! # Ok(())
//! # }
//! ```
//!
//! Why a server of its own: hyper's serves every protocol feature through a general state
//! machine; a proxy relaying small requests spends a measurable share of its user-space time
//! there. Here each connection's task reads a head (`httparse`, as in hyper), calls the service,
//! and writes the response, in one write when the service has it whole.
//!
//! What it does: keep-alive and pipelining (responses in order), request bodies by
//! `Content-Length` or chunked, streamed to the service at its pace with `100 Continue` sent when
//! the body is first read, responses framed by their length, chunked, or (to HTTP/1.0 clients)
//! by closing, and a `Date` on responses that have none. What it refuses, with a status and a
//! body, before closing: malformed heads (400), heads over 64 KiB or 100 fields (431), ambiguous
//! or invalid lengths (400), transfer codings other than chunked (501). What it leaves out:
//! HTTP/2, upgrades (WebSocket), and timeouts for slow clients (use hyper's server, or limits in
//! front, where clients are not trusted to be timely).
//!
//! [`ClientAddr`]: crate::affinity::ClientAddr

mod body;
mod conn;
mod date;
mod io;
mod request;
mod response;
mod upload;

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use axum::body::Body as AxumBody;
use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_service::Service;

use crate::BoxError;

/// Serves `service` on `listener` until `shutdown` resolves; then stops accepting, closes idle
/// connections, waits for the requests in flight to be answered, and returns.
///
/// Each connection runs on a task of its own (`tokio::spawn`), with its own clone of `service`.
pub async fn serve<S, B>(listener: TcpListener, service: S, shutdown: impl Future<Output = ()>)
where
    S: Service<Request<AxumBody>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    // Every connection holds a receiver: the flag tells them to stop, and the sender sees when
    // the last of them is gone.
    let (stop, _) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // keep serving the others, without spinning.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Responses are written whole; do not hold their last segment back.
        let _ = stream.set_nodelay(true);
        tokio::spawn(conn::serve_connection(
            stream,
            peer,
            service.clone(),
            stop.subscribe(),
        ));
    }
    drop(listener);
    stop.send_replace(true);
    stop.closed().await;
}
