//! The cost of routing, side by side with the same work without `Sticky`, in one run.
//!
//! - `pick/*`: one request through `Sticky` over no-op backends, per strategy, next to calling a
//!   no-op backend directly (`pick/bare`). The difference is the price of choosing.
//! - `axum/*`: one request through an axum router bare, and through `Sticky` over three routers.
//!
//! ```text
//! cargo bench --bench sticky
//! ```

use std::convert::Infallible;
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use tower::{Service, ServiceExt, service_fn};
use tower_sticky::affinity::{ClientAddr, IpHash, KeyHash, RoundRobin};
use tower_sticky::{Backends, StickyLayer};

type Svc =
    tower::util::BoxCloneSyncService<http::Request<String>, http::Response<String>, Infallible>;

fn noop() -> Svc {
    tower::util::BoxCloneSyncService::new(service_fn(|_req: http::Request<String>| async {
        Ok::<_, Infallible>(http::Response::new(String::new()))
    }))
}

fn request() -> http::Request<String> {
    let mut req = http::Request::builder()
        .uri("/cart?tenant=acme")
        .header("x-user", "user-12345")
        .body(String::new())
        .unwrap();
    req.extensions_mut()
        .insert(ClientAddr(SocketAddr::from(([203, 0, 113, 7], 50000))));
    req
}

fn pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    group.measurement_time(Duration::from_secs(3));
    let mut bare = noop();
    group.bench_function("bare", |b| {
        b.iter(|| {
            let res = bare.call(black_box(request())).now_or_never();
            black_box(res)
        })
    });
    for n in [3usize, 100] {
        let strategies = [
            ("ip-ring", StickyLayer::new(IpHash::new())),
            ("ip-modulo", StickyLayer::new(IpHash::new().modulo())),
            ("key-header", StickyLayer::new(KeyHash::header("x-user"))),
            ("round-robin", StickyLayer::new(RoundRobin::new())),
        ];
        for (name, layer) in strategies {
            let backends: Backends<Svc> = (0..n).map(|i| (format!("b{i}"), noop())).collect();
            let mut sticky = layer.sticky(backends);
            group.bench_function(format!("{name}/n={n}"), |b| {
                b.iter(|| {
                    let res = sticky.call(black_box(request())).now_or_never();
                    black_box(res)
                })
            });
        }
    }
    group.finish();
}

fn router(name: &'static str) -> Router {
    Router::new().route("/cart", get(move || async move { name }))
}

fn axum_request() -> http::Request<Body> {
    let (parts, _) = request().into_parts();
    http::Request::from_parts(parts, Body::empty())
}

fn axum_overhead(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("axum");
    group.measurement_time(Duration::from_secs(3));
    let bare = router("a");
    group.bench_function("bare-router", |b| {
        b.iter(|| rt.block_on(bare.clone().oneshot(axum_request())))
    });
    let strategies = [
        ("ip-ring", StickyLayer::new(IpHash::new())),
        ("key-header", StickyLayer::new(KeyHash::header("x-user"))),
    ];
    for (name, layer) in strategies {
        let backends: Backends<Router> = ["a", "b", "c"]
            .into_iter()
            .map(|n| (n, router(n)))
            .collect();
        let sticky = layer.sticky(backends);
        group.bench_function(format!("sticky-{name}-3-routers"), |b| {
            b.iter(|| rt.block_on(sticky.clone().oneshot(axum_request())))
        });
    }
    group.finish();
}

criterion_group!(benches, pick, axum_overhead);
criterion_main!(benches);
