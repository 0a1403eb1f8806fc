//! A tiny HTTP backend for trying the gateway and for the end-to-end benchmark: answers every path
//! with its id (and `/healthz` with `ok`).
//!
//! ```text
//! cargo run --release --example backend -- --listen 127.0.0.1:9001 --id a [--threads 1]
//! ```

use std::error::Error;
use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;

struct Args {
    listen: SocketAddr,
    id: String,
    threads: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut listen = None;
    let mut id = None;
    let mut threads = 1;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => {
                let v = value()?;
                listen = Some(v.parse().map_err(|e| format!("--listen {v}: {e}"))?);
            }
            "--id" => id = Some(value()?),
            "--threads" => {
                let v = value()?;
                threads = v.parse().map_err(|e| format!("--threads {v}: {e}"))?;
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(Args {
        listen: listen.ok_or("--listen ADDR is required")?,
        id: id.ok_or("--id NAME is required")?,
        threads,
    })
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("backend: {message}\nusage: backend --listen ADDR --id NAME [--threads N]");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let id: &'static str = Box::leak(args.id.into_boxed_str());
        let app = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .fallback(get(move || async move { id }));
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        axum::serve(listener, app).await?;
        Ok(())
    })
}
