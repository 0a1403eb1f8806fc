//! Serves an axum router bare, or `Sticky` over three in-process copies of it, so an HTTP load
//! generator can measure what the layer costs (used by `scripts/bench-e2e.sh`).
//!
//! ```text
//! cargo run --release --example overhead -- --listen 127.0.0.1:9100 --mode bare|sticky [--threads 1]
//! ```

use std::error::Error;
use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use tower_sticky::affinity::IpHash;
use tower_sticky::serve::with_client_addr;
use tower_sticky::{Backends, StickyLayer};

/// `with_state(())` turns the handlers into ready routes once, as `into_make_service` does for the
/// bare router; a `Router<()>` called as a plain service without it rebuilds the handler's route
/// on every request.
fn router(name: &'static str) -> Router {
    Router::new()
        .route("/", get(move || async move { name }))
        .with_state(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut listen: SocketAddr = "127.0.0.1:9100".parse()?;
    let mut mode = String::from("sticky");
    let mut threads = 1usize;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = value.parse()?,
            "--mode" => mode = value,
            "--threads" => threads = value.parse()?,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        match mode.as_str() {
            // The bare router gets the peer address too, so both sides do the same work for it.
            "bare" => {
                let make = router("a").into_make_service_with_connect_info::<SocketAddr>();
                axum::serve(listener, make).await?;
            }
            "sticky" => {
                let backends: Backends<Router> = ["a", "b", "c"]
                    .into_iter()
                    .map(|n| (n, router(n)))
                    .collect();
                let sticky = StickyLayer::new(IpHash::new()).sticky(backends);
                axum::serve(listener, with_client_addr(sticky)).await?;
            }
            other => return Err(format!("--mode must be bare or sticky, not {other}").into()),
        }
        Ok(())
    })
}
