//! A reverse proxy with sticky sessions over remote HTTP backends, built from the crate's parts:
//! `HttpBackend`, passive and active health, the strategies, and the stats snapshot.
//!
//! ```text
//! cargo run --release --example gateway -- \
//!   --listen 127.0.0.1:8080 \
//!   --backend a=http://127.0.0.1:9001 --backend b=http://127.0.0.1:9002 \
//!   --strategy cookie-pinned --cookie-key-file /tmp/gateway.key \
//!   --health-path /healthz --health-interval 1s --metrics-listen 127.0.0.1:9100
//! ```
//!
//! Try it with `cargo run --example backend -- --listen 127.0.0.1:9001 --id a` (and b, c...).
//! Ctrl-C or SIGTERM stops accepting and lets requests in flight finish.

mod args;
mod key_file;
mod prometheus;
mod server;

/// A proxy allocates and frees many small buffers per request; mimalloc's thread-local free
/// lists do that faster than glibc's malloc (measured with scripts/bench-e2e.sh).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::error::Error;
use std::time::Duration;

use args::{Args, Strategy};
use axum::Router;
use axum::routing::get;
use tower_sticky::affinity::cookie::{CookieAffinity, CookieKeys, Key};
use tower_sticky::affinity::{IpHash, KeyHash, RoundRobin};
use tower_sticky::health::{ActiveHealth, PassiveHealth};
use tower_sticky::http_backend::HttpBackend;
use tower_sticky::{Backends, StickyLayer};

fn main() {
    let args = match args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) if message.is_empty() => {
            println!("{}", args::USAGE);
            return;
        }
        Err(message) => {
            eprintln!("gateway: {message}\n{}", args::USAGE);
            std::process::exit(2);
        }
    };
    // One thread: everything on it (like HAProxy's nbthread 1). More: the server runs on the
    // workers, not on the thread that waits for it, so no request hops between threads.
    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("gateway: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(async move {
        match tokio::spawn(run(args)).await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(e) => Err(format!("the server task failed: {e}")),
        }
    });
    if let Err(error) = result {
        eprintln!("gateway: {error}");
        std::process::exit(1);
    }
}

fn cookie_key(args: &Args) -> Result<Key, String> {
    match &args.cookie_key_file {
        Some(path) => key_file::load_or_create(path),
        None => {
            eprintln!(
                "gateway: warning: no --cookie-key-file; using a fresh in-memory key, so a \
                 restarted gateway or another replica will not recognise the cookies"
            );
            Ok(Key::generate())
        }
    }
}

fn layer(args: &Args) -> Result<StickyLayer, Box<dyn Error + Send + Sync>> {
    let ip = || IpHash::new().trusted_proxies(&args.trusted_proxies);
    let builder = StickyLayer::builder();
    let builder = match &args.strategy {
        Strategy::CookiePinned => builder.cookie(
            CookieAffinity::pinned(&args.cookie_name)
                .key(CookieKeys::new(cookie_key(args)?))
                .indirect(args.cookie_indirect)
                .build()?,
        ),
        Strategy::CookieHashed => builder.cookie(
            CookieAffinity::hashed(&args.cookie_name)
                .key(CookieKeys::new(cookie_key(args)?))
                .indirect(args.cookie_indirect)
                .build()?,
        ),
        Strategy::CookieLearn(_) if args.cookie_indirect => {
            return Err(
                "--cookie-indirect applies to cookie-pinned and cookie-hashed only: \
                 learned mode reads the application's own cookie"
                    .into(),
            );
        }
        Strategy::CookieLearn(name) => builder.cookie(CookieAffinity::learn(name).build()?),
        Strategy::IpHash => builder.affinity(ip()?.modulo()),
        Strategy::IpRing => builder.affinity(ip()?),
        Strategy::Header(name) => builder.affinity(KeyHash::header(name)),
        Strategy::RoundRobin => builder.affinity(RoundRobin::new()),
    };
    let mut builder =
        builder.passive_health(PassiveHealth::consecutive_failures(args.failures_to_eject));
    if let Some(bytes) = args.retry_idempotent {
        builder = builder.retry_idempotent(bytes);
    }
    Ok(builder.build())
}

async fn run(args: Args) -> Result<(), Box<dyn Error + Send + Sync>> {
    let layer = layer(&args)?;
    // Every proxied request arms a timer (its --request-timeout). tokio wakes its own driver, by a
    // write(2) to an eventfd, whenever a new timer is due before every other one, which is always
    // the case when the runtime went to sleep with no timer at all: 0.175 extra system calls per
    // request under load (`perf stat`, header pair). A timer that is always due within a second
    // keeps every request's later than the earliest, so arming it costs no system call.
    tokio::spawn(async {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
        }
    });
    let mut backends = Backends::new();
    for (id, url) in &args.backends {
        let backend = HttpBackend::builder(url)
            .name(id.clone())
            .connect_timeout(Duration::from_millis(500))
            .request_timeout(args.request_timeout)
            .forwarded_headers(args.forwarded_headers)
            .build()
            .map_err(|e| format!("--backend {id}={url}: {e}"))?;
        backends = backends.with(id.as_str(), backend);
    }
    if let Some(path) = &args.health_path {
        let probe = ActiveHealth::http_get(path)
            .map_err(|e| format!("--health-path {path:?}: {e}"))?
            .interval(args.health_interval)
            .timeout(args.health_interval.min(Duration::from_secs(2)));
        backends = backends.with_active_health(probe)?;
    }
    let sticky = layer.sticky(backends.clone());

    if let Some(addr) = args.metrics_listen {
        let stats_of = backends.clone();
        let app = Router::new().route(
            "/metrics",
            get(move || {
                let stats = stats_of.stats();
                async move { prometheus::render(&stats) }
            }),
        );
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("--metrics-listen {addr}: {e}"))?;
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("gateway: metrics server stopped: {e}");
            }
        });
    }

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("--listen {}: {e}", args.listen))?;
    eprintln!(
        "gateway: listening on {} ({:?}, {} backend(s), {} thread(s))",
        listener.local_addr()?,
        args.strategy,
        args.backends.len(),
        args.threads
    );
    server::serve(listener, sticky, shutdown_signal()).await;
    eprintln!("gateway: stopped");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
