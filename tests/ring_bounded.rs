//! Bounded loads: the factor is validated, the bound holds under many threads, and `KeyHash`
//! spills a hot key over to the next candidates once its backend holds its share.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Barrier, Mutex};

use tower::{Service, ServiceExt, service_fn};
use tower_sticky::affinity::{IpHash, KeyHash};
use tower_sticky::ring::{BoundedLoad, LoadCounters, RingError, RingKind, RingMember};
use tower_sticky::{BackendId, Backends, Routed, StickyLayer};

#[test]
fn factors_below_one_are_refused() {
    for bad in [0.0, 0.99, -1.0, f64::NAN, f64::INFINITY] {
        let error = BoundedLoad::new(bad).unwrap_err();
        assert!(matches!(error, RingError::InvalidLoadFactor { .. }));
        assert!(error.to_string().contains(">= 1.0"), "{error}");
    }
    assert!(KeyHash::header("x").bounded_load(0.5).is_err());
    assert!(IpHash::new().bounded_load(0.999).is_err());
    assert_eq!(BoundedLoad::new(1.0).unwrap().capacity(0, 10), 1);
    assert_eq!(BoundedLoad::new(1.25).unwrap().capacity(99, 10), 13);
    // Weighted share: a member with 3 of 4 weight units may hold 3/4 of the bound.
    assert_eq!(
        BoundedLoad::new(1.0).unwrap().weighted_capacity(99, 3, 4),
        75
    );
}

/// Many threads place (and hold) requests for a few hot keys at once: at the end no member holds
/// more than `ceil(c x total / n)`. A check-then-increment placement breaks this under contention;
/// the compare-and-swap reservation must not.
#[test]
fn the_bound_holds_under_concurrent_placements() {
    const THREADS: usize = 16;
    const PER_THREAD: usize = 2_000;
    for (kind, factor, n) in [
        (RingKind::Ketama, 1.0, 7),
        (RingKind::maglev(), 1.1, 40),
        (RingKind::KetamaCompat, 1.25, 100),
    ] {
        let ids: Vec<BackendId> = (0..n)
            .map(|i| BackendId::from(format!("10.0.0.{i}:80")))
            .collect();
        let members: Vec<RingMember<'_>> =
            ids.iter().map(|id| RingMember { id, weight: 1 }).collect();
        let ring = kind.build(&members);
        let counters = LoadCounters::new(n);
        let bound = BoundedLoad::new(factor).unwrap();
        let start = Barrier::new(THREADS);
        let placed = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let (ring, counters, start) = (&ring, &counters, &start);
                    scope.spawn(move || {
                        start.wait();
                        let mut held = Vec::with_capacity(PER_THREAD);
                        for i in 0..PER_THREAD {
                            // Three hot keys shared by every thread, plus a spread of cold ones.
                            let key = if i % 4 == 0 {
                                format!("cold-{t}-{i}")
                            } else {
                                format!("hot-{}", i % 3)
                            };
                            if let Some(guard) = bound.acquire(&**ring, key.as_bytes(), counters) {
                                held.push(guard);
                            }
                        }
                        held
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        });
        let total: u64 = placed.iter().map(|h| h.len() as u64).sum();
        assert_eq!(
            total,
            (THREADS * PER_THREAD) as u64,
            "{kind:?}: every placement succeeded"
        );
        assert_eq!(counters.total(), total);
        let cap = bound.capacity(total - 1, n);
        let max = (0..n).map(|m| counters.load(m)).max().unwrap();
        assert!(max <= cap, "{kind:?}: a member holds {max}, bound {cap}");
        let sum: u64 = (0..n).map(|m| counters.load(m)).sum();
        assert_eq!(sum, total);
        drop(placed);
        assert_eq!(counters.total(), 0, "guards release their load");
        assert!((0..n).all(|m| counters.load(m) == 0));
    }
}

/// Threads place and release at random: the member loads never add up to more than the total, and
/// everything is released at the end.
#[test]
fn placements_interleaved_with_releases_keep_counters_consistent() {
    const THREADS: usize = 8;
    let ids: Vec<BackendId> = (0..10).map(|i| BackendId::from(format!("b{i}"))).collect();
    let members: Vec<RingMember<'_>> = ids.iter().map(|id| RingMember { id, weight: 1 }).collect();
    let ring = RingKind::maglev().build(&members);
    let counters = LoadCounters::new(10);
    let bound = BoundedLoad::new(1.25).unwrap();
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let (ring, counters) = (&ring, &counters);
            scope.spawn(move || {
                let mut held = std::collections::VecDeque::new();
                let mut state = t as u64 + 1;
                for i in 0..5_000u64 {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1);
                    if let Some(guard) =
                        bound.acquire(&**ring, format!("k{}", i % 5).as_bytes(), counters)
                    {
                        // Right after placement the member's load counts this request, and the
                        // total counts at least every request still held anywhere.
                        let load = counters.load(guard.position());
                        let total = counters.total();
                        assert!(load >= 1 && total >= load);
                        held.push_back(guard);
                    }
                    if state >> 62 == 0 || held.len() > 50 {
                        held.pop_front();
                    }
                }
            });
        }
    });
    assert_eq!(counters.total(), 0);
}

type Hold = Arc<tokio::sync::Semaphore>;

/// Four backends that record each request they get and hold it until released.
fn holding_backends(
    hold: &Hold,
    seen: &Arc<Mutex<HashMap<String, usize>>>,
) -> Backends<
    impl Service<
        http::Request<String>,
        Response = http::Response<String>,
        Error = Infallible,
        Future = impl Send,
    > + Clone
    + Send
    + 'static,
> {
    let backend = |name: &'static str| {
        let (hold, seen) = (Arc::clone(hold), Arc::clone(seen));
        service_fn(move |_req: http::Request<String>| {
            *seen.lock().unwrap().entry(name.to_owned()).or_default() += 1;
            let hold = Arc::clone(&hold);
            async move {
                let _permit = hold.acquire().await;
                Ok::<_, Infallible>(http::Response::new(name.to_owned()))
            }
        })
    };
    Backends::new()
        .with("a", backend("a"))
        .with("b", backend("b"))
        .with("c", backend("c"))
        .with("d", backend("d"))
}

async fn hot_key_spread(bounded: Option<f64>) -> HashMap<String, usize> {
    let hold: Hold = Arc::new(tokio::sync::Semaphore::new(0));
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let mut affinity = KeyHash::header("x-user").ring(RingKind::maglev());
    if let Some(c) = bounded {
        affinity = affinity.bounded_load(c).unwrap();
    }
    let mut sticky = StickyLayer::new(affinity).sticky(holding_backends(&hold, &seen));
    let mut pending = Vec::new();
    for _ in 0..40 {
        let req = http::Request::builder()
            .header("x-user", "hot")
            .body(String::new())
            .unwrap();
        // `call` counts the request in flight before returning, so each routing sees the
        // previous ones.
        let fut = sticky.ready().await.unwrap().call(req);
        pending.push(tokio::spawn(fut));
    }
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let spread = seen.lock().unwrap().clone();
    hold.add_permits(1000);
    for p in pending {
        let res = p.await.unwrap().unwrap();
        assert!(res.extensions().get::<Routed>().is_some());
    }
    spread
}

#[tokio::test(flavor = "current_thread")]
async fn key_hash_bounded_load_spills_a_hot_key() {
    // Without a bound, one key is one backend.
    let plain = hot_key_spread(None).await;
    assert_eq!(plain.len(), 1, "{plain:?}");
    assert_eq!(plain.values().sum::<usize>(), 40);

    // With c = 1.25 the hot key's backend stops at ceil(1.25 x 40 / 4) = 13 and the rest spill
    // over in ring order; no backend exceeds the bound.
    let bounded = hot_key_spread(Some(1.25)).await;
    assert_eq!(bounded.values().sum::<usize>(), 40);
    let cap = BoundedLoad::new(1.25).unwrap().capacity(39, 4) as usize;
    assert_eq!(cap, 13);
    assert!(bounded.values().all(|&n| n <= cap), "{bounded:?}");
    assert!(bounded.len() >= 3, "{bounded:?}");
    // The sticky backend is still the one the key maps to, and it is the fullest.
    let sticky_backend = plain.keys().next().unwrap();
    assert_eq!(bounded.values().max(), bounded.get(sticky_backend));
}
