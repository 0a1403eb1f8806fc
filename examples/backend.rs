//! A tiny HTTP backend for trying the gateway and for the end-to-end benchmark: answers every path
//! with its id (and `/healthz` with `ok`).
//!
//! ```text
//! cargo run --release --example backend -- --listen 127.0.0.1:9001 --id a [--threads 1]
//! cargo run --release --example backend -- --listen 127.0.0.1:9001 --id a --listen 127.0.0.1:9002 --id b
//! ```
//!
//! Several `--listen` / `--id` pairs (the n-th id goes with the n-th address) are several backends
//! served by one process: the benchmark runs its three backends this way, so that the core they
//! share with the proxy switches between two processes rather than four.

use std::error::Error;
use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;

struct Args {
    backends: Vec<(SocketAddr, String)>,
    threads: usize,
}

const USAGE: &str =
    "usage: backend --listen ADDR --id NAME [--listen ADDR --id NAME ...] [--threads N]";

fn parse_args() -> Result<Args, String> {
    let mut listens = Vec::new();
    let mut ids = Vec::new();
    let mut threads = 1;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => {
                let v = value()?;
                listens.push(v.parse().map_err(|e| format!("--listen {v}: {e}"))?);
            }
            "--id" => ids.push(value()?),
            "--threads" => {
                let v = value()?;
                threads = v.parse().map_err(|e| format!("--threads {v}: {e}"))?;
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if listens.is_empty() {
        return Err("--listen ADDR is required".into());
    }
    if ids.len() != listens.len() {
        return Err(format!(
            "each --listen needs its --id ({} addresses, {} ids)",
            listens.len(),
            ids.len()
        ));
    }
    Ok(Args {
        backends: listens.into_iter().zip(ids).collect(),
        threads,
    })
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("backend: {message}\n{USAGE}");
            std::process::exit(2);
        }
    };
    // One thread: a current-thread runtime, so accepting and serving happen on the same thread and
    // no request crosses threads (a multi-thread runtime of one worker still accepts on another).
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(async move {
        let mut servers = tokio::task::JoinSet::new();
        for (listen, id) in args.backends {
            let id: &'static str = Box::leak(id.into_boxed_str());
            let app = Router::new()
                .route("/healthz", get(|| async { "ok" }))
                .fallback(get(move || async move { id }));
            let listener = tokio::net::TcpListener::bind(listen).await?;
            servers.spawn(async move { axum::serve(listener, app).await });
        }
        // Any server that stops (an accept error axum gives up on) stops the process.
        while let Some(done) = servers.join_next().await {
            done??;
        }
        Ok::<(), Box<dyn Error>>(())
    })
}
