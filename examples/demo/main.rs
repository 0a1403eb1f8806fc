//! The classic sticky-session scenarios over real HTTP on loopback; no servers needed.
//!
//! Three (or four) backends run in this process as real HTTP servers on 127.0.0.1, each answering
//! with its id; a `Sticky` gateway in front of them forwards with `HttpBackend`. Simulated users
//! are HTTP clients with cookie jars and their own source addresses (127.0.0.0/8 is loopback).
//!
//! ```text
//! cargo run --example demo                              # every scenario, in-memory sessions
//! cargo run --example demo -- --scenario failover       # cookie|ip|hash|sessions|scaling|failover
//! cargo run --example demo -- --scenario sessions --store redis://127.0.0.1:6379
//! ```

mod scenarios;
mod world;

use std::error::Error;

const SCENARIOS: [&str; 6] = ["cookie", "ip", "hash", "sessions", "scaling", "failover"];

struct Options {
    scenario: Option<String>,
    store: String,
}

fn parse_args() -> Result<Options, String> {
    let mut options = Options {
        scenario: None,
        store: "memory".into(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--scenario" if SCENARIOS.contains(&value.as_str()) || value == "all" => {
                options.scenario = (value != "all").then_some(value);
            }
            "--scenario" => {
                return Err(format!(
                    "--scenario {value:?}: pick one of {SCENARIOS:?} or all"
                ));
            }
            "--store" if value == "memory" || value.starts_with("redis://") => {
                options.store = value
            }
            "--store" => return Err(format!("--store {value:?}: memory or redis://HOST:PORT")),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(options)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let options = match parse_args() {
        Ok(options) => options,
        Err(message) => {
            eprintln!(
                "demo: {message}\nusage: demo [--scenario {}|all] [--store memory|redis://HOST:PORT]",
                SCENARIOS.join("|")
            );
            std::process::exit(2);
        }
    };
    let wanted = |name: &str| options.scenario.as_deref().is_none_or(|s| s == name);
    println!(
        "tower-sticky demo: real HTTP on loopback, backends a, b, c behind one Sticky gateway"
    );
    if wanted("cookie") {
        scenarios::cookie().await?;
    }
    if wanted("ip") {
        scenarios::ip().await?;
    }
    if wanted("hash") {
        scenarios::hash().await?;
    }
    if wanted("sessions") {
        scenarios::sessions(&options.store).await?;
    }
    if wanted("scaling") {
        scenarios::scaling().await?;
    }
    if wanted("failover") {
        scenarios::failover().await?;
    }
    Ok(())
}
