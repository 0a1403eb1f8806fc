//! The price of cookie affinity, side by side with the IP-hash pick in one run.
//!
//! Each case is one request through `Sticky` over no-op in-process backends (so the numbers are
//! "choose + call a no-op"), next to `bare` (the no-op alone):
//! - `ip-ring`: the IP-hash pick, the peer to compare with;
//! - `pinned-verify`: a returning client with a valid signed cookie (HMAC verify + look-up);
//! - `pinned-private-verify`: the same with an encrypted cookie (AES-GCM open);
//! - `hashed-verify`: a returning hashed-mode client (HMAC verify + ring look-up);
//! - `pinned-issue` / `hashed-issue`: a new client (assign + seal + `Set-Cookie` rendering);
//! - `learned-hit`: a learned session (sharded LRU look-up + the response hook).
//!
//! ```text
//! cargo bench --bench cookie
//! ```

use std::convert::Infallible;
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use tower::{Service, service_fn};
use tower_sticky::affinity::cookie::{Key, Protection};
use tower_sticky::affinity::{ClientAddr, CookieAffinity, IpHash};
use tower_sticky::{Backends, StickyLayer};

type Svc =
    tower::util::BoxCloneSyncService<http::Request<String>, http::Response<String>, Infallible>;

fn noop() -> Svc {
    tower::util::BoxCloneSyncService::new(service_fn(|_req: http::Request<String>| async {
        Ok::<_, Infallible>(http::Response::new(String::new()))
    }))
}

/// A no-op backend that sets the application's session cookie (for learned mode).
fn session_setter() -> Svc {
    tower::util::BoxCloneSyncService::new(service_fn(|_req: http::Request<String>| async {
        let mut res = http::Response::new(String::new());
        res.headers_mut().insert(
            "set-cookie",
            http::HeaderValue::from_static("session_id=s-1; Path=/"),
        );
        Ok::<_, Infallible>(res)
    }))
}

fn request(cookie: Option<&str>) -> http::Request<String> {
    let mut b = http::Request::builder().uri("/cart");
    if let Some(cookie) = cookie {
        b = b.header("cookie", cookie);
    }
    let mut req = b.body(String::new()).unwrap();
    req.extensions_mut()
        .insert(ClientAddr(SocketAddr::from(([203, 0, 113, 7], 50000))));
    req
}

fn key() -> Key {
    Key::from(&[5u8; 64])
}

fn pinned(protection: Protection) -> CookieAffinity {
    CookieAffinity::pinned("srv")
        .key(key())
        .protection(protection)
        .build()
        .unwrap()
}

fn hashed() -> CookieAffinity {
    CookieAffinity::hashed("srv").key(key()).build().unwrap()
}

fn backends(n: usize, make: fn() -> Svc) -> Backends<Svc> {
    (0..n).map(|i| (format!("b{i}"), make())).collect()
}

/// Calls once without a cookie and returns the `Cookie` header a browser would send back.
fn issued_cookie(sticky: &mut tower_sticky::Sticky<Svc>) -> String {
    let res = sticky.call(request(None)).now_or_never().unwrap().unwrap();
    let set = res.headers().get("set-cookie").unwrap().to_str().unwrap();
    set.split(';').next().unwrap().to_owned()
}

fn cookie_costs(c: &mut Criterion) {
    let mut group = c.benchmark_group("cookie");
    group.measurement_time(Duration::from_secs(2));
    group.warm_up_time(Duration::from_millis(500));

    let mut bare = noop();
    group.bench_function("bare", |b| {
        b.iter(|| black_box(bare.call(black_box(request(None))).now_or_never()))
    });

    for n in [3usize, 100] {
        let mut ip = StickyLayer::new(IpHash::new()).sticky(backends(n, noop));
        group.bench_function(format!("ip-ring/n={n}"), |b| {
            b.iter(|| black_box(ip.call(black_box(request(None))).now_or_never()))
        });

        for (name, affinity) in [
            ("pinned-verify", pinned(Protection::Signed)),
            ("pinned-private-verify", pinned(Protection::Private)),
            ("hashed-verify", hashed()),
        ] {
            let mut sticky = StickyLayer::builder()
                .cookie(affinity)
                .build()
                .sticky(backends(n, noop));
            let cookie = issued_cookie(&mut sticky);
            group.bench_function(format!("{name}/n={n}"), |b| {
                b.iter(|| {
                    black_box(
                        sticky
                            .call(black_box(request(Some(&cookie))))
                            .now_or_never(),
                    )
                })
            });
        }

        for (name, affinity) in [
            ("pinned-issue", pinned(Protection::Signed)),
            ("hashed-issue", hashed()),
        ] {
            let mut sticky = StickyLayer::builder()
                .cookie(affinity)
                .build()
                .sticky(backends(n, noop));
            group.bench_function(format!("{name}/n={n}"), |b| {
                b.iter(|| black_box(sticky.call(black_box(request(None))).now_or_never()))
            });
        }

        let learned = CookieAffinity::learn("session_id").build().unwrap();
        let mut sticky = StickyLayer::builder()
            .cookie(learned)
            .build()
            .sticky(backends(n, session_setter));
        let _ = sticky.call(request(None)).now_or_never();
        group.bench_function(format!("learned-hit/n={n}"), |b| {
            b.iter(|| {
                black_box(
                    sticky
                        .call(black_box(request(Some("session_id=s-1"))))
                        .now_or_never(),
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, cookie_costs);
criterion_main!(benches);
