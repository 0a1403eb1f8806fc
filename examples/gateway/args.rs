//! The gateway's command line: parsing and validation, with messages that say what is wrong.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tower_sticky::http_backend::ForwardedHeaders;

pub(crate) const USAGE: &str = "\
usage: gateway --listen ADDR --backend ID=URL [--backend ID=URL]...
               [--strategy cookie-pinned|cookie-hashed|cookie-learn:NAME|ip-hash|ip-ring|header:NAME|round-robin]
               [--cookie-name NAME] [--cookie-key-file PATH] [--trusted-proxy CIDR]...
               [--health-path /healthz] [--health-interval 1s] [--threads N] [--metrics-listen ADDR]
               [--failures-to-eject N] [--retry-idempotent BYTES]
               [--forwarded-headers all|x-forwarded|x-forwarded-for|none]
               [--request-timeout 30s|none] [--cookie-indirect]";

/// Which affinity the gateway applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Strategy {
    CookiePinned,
    CookieHashed,
    CookieLearn(String),
    IpHash,
    IpRing,
    Header(String),
    RoundRobin,
}

impl Strategy {
    fn parse(text: &str) -> Result<Self, String> {
        let strategy = match text {
            "cookie-pinned" => Self::CookiePinned,
            "cookie-hashed" => Self::CookieHashed,
            "ip-hash" => Self::IpHash,
            "ip-ring" => Self::IpRing,
            "round-robin" => Self::RoundRobin,
            other => match other.split_once(':') {
                Some(("cookie-learn", name)) if !name.is_empty() => Self::CookieLearn(name.into()),
                Some(("header", name)) if !name.is_empty() => Self::Header(name.into()),
                _ => {
                    return Err(format!(
                        "--strategy {other:?} is not one of cookie-pinned, cookie-hashed, \
                         cookie-learn:NAME, ip-hash, ip-ring, header:NAME, round-robin"
                    ));
                }
            },
        };
        Ok(strategy)
    }
}

#[derive(Debug)]
pub(crate) struct Args {
    pub(crate) listen: SocketAddr,
    pub(crate) backends: Vec<(String, String)>,
    pub(crate) strategy: Strategy,
    pub(crate) cookie_name: String,
    pub(crate) cookie_key_file: Option<PathBuf>,
    pub(crate) trusted_proxies: Vec<String>,
    pub(crate) health_path: Option<String>,
    pub(crate) health_interval: Duration,
    pub(crate) threads: usize,
    pub(crate) metrics_listen: Option<SocketAddr>,
    pub(crate) failures_to_eject: u32,
    pub(crate) retry_idempotent: Option<usize>,
    pub(crate) forwarded_headers: ForwardedHeaders,
    pub(crate) request_timeout: Option<Duration>,
    pub(crate) cookie_indirect: bool,
}

/// Parses `1s`, `500ms`, `2m`, or plain seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration (e.g. 1s, 500ms, 2m)");
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let value: f64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(bad()),
    };
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(seconds))
}

pub(crate) fn parse(raw: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut listen = None;
    let mut backends = Vec::new();
    let mut strategy = Strategy::CookiePinned;
    let mut cookie_name = String::from("srv");
    let mut cookie_key_file = None;
    let mut trusted_proxies = Vec::new();
    let mut health_path = None;
    let mut health_interval = Duration::from_secs(1);
    let mut threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut metrics_listen = None;
    let mut failures_to_eject = 3;
    let mut retry_idempotent = None;
    let mut forwarded_headers = ForwardedHeaders::ALL;
    let mut request_timeout = Some(Duration::from_secs(30));
    let mut cookie_indirect = false;

    let mut raw = raw.into_iter();
    while let Some(flag) = raw.next() {
        if flag == "--help" || flag == "-h" {
            return Err(String::new());
        }
        if flag == "--cookie-indirect" {
            cookie_indirect = true;
            continue;
        }
        let value = raw.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let addr = |v: &str| {
            v.parse::<SocketAddr>()
                .map_err(|_| format!("{flag} {v:?} is not an address like 127.0.0.1:8080"))
        };
        match flag.as_str() {
            "--listen" => listen = Some(addr(&value)?),
            "--backend" => {
                let (id, url) = value
                    .split_once('=')
                    .filter(|(id, url)| !id.is_empty() && !url.is_empty())
                    .ok_or_else(|| format!("--backend {value:?} must look like ID=URL"))?;
                if backends.iter().any(|(existing, _)| existing == id) {
                    return Err(format!("--backend id {id:?} is given twice"));
                }
                backends.push((id.to_owned(), url.to_owned()));
            }
            "--strategy" => strategy = Strategy::parse(&value)?,
            "--cookie-name" => cookie_name = value,
            "--cookie-key-file" => cookie_key_file = Some(PathBuf::from(value)),
            "--trusted-proxy" => trusted_proxies.push(value),
            "--health-path" => health_path = Some(value),
            "--health-interval" => {
                health_interval =
                    parse_duration(&value).map_err(|e| format!("--health-interval {e}"))?
            }
            "--threads" => {
                threads = value
                    .parse()
                    .ok()
                    .filter(|&n: &usize| n > 0)
                    .ok_or_else(|| format!("--threads {value:?} must be a number >= 1"))?
            }
            "--metrics-listen" => metrics_listen = Some(addr(&value)?),
            "--failures-to-eject" => {
                failures_to_eject = value
                    .parse()
                    .ok()
                    .filter(|&n: &u32| n > 0)
                    .ok_or_else(|| format!("--failures-to-eject {value:?} must be >= 1"))?
            }
            "--retry-idempotent" => {
                retry_idempotent =
                    Some(value.parse().map_err(|_| {
                        format!("--retry-idempotent {value:?} must be a byte count")
                    })?)
            }
            "--forwarded-headers" => {
                forwarded_headers = match value.as_str() {
                    "all" => ForwardedHeaders::ALL,
                    "x-forwarded" => ForwardedHeaders::X_FORWARDED,
                    "x-forwarded-for" => ForwardedHeaders::X_FORWARDED_FOR,
                    "none" => ForwardedHeaders::NONE,
                    other => {
                        return Err(format!(
                            "--forwarded-headers {other:?} is not one of all, x-forwarded, \
                             x-forwarded-for, none"
                        ));
                    }
                }
            }
            "--request-timeout" if value == "none" => request_timeout = None,
            "--request-timeout" => {
                request_timeout =
                    Some(parse_duration(&value).map_err(|e| format!("--request-timeout {e}"))?)
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    let listen = listen.ok_or("--listen ADDR is required")?;
    if backends.is_empty() {
        return Err("at least one --backend ID=URL is required".into());
    }
    Ok(Args {
        listen,
        backends,
        strategy,
        cookie_name,
        cookie_key_file,
        trusted_proxies,
        health_path,
        health_interval,
        threads,
        metrics_listen,
        failures_to_eject,
        retry_idempotent,
        forwarded_headers,
        request_timeout,
        cookie_indirect,
    })
}
