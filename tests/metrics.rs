//! The metrics snapshot agrees with what clients saw, and (feature `metrics`) the facade
//! reports the same numbers.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::backend::{http_backends, refused_addr, spawn_full};
use support::http::{client_from, get as http_get, serve_gateway};
use tower_sticky::affinity::{KeyHash, Reason};
use tower_sticky::{Routed, StickyLayer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snapshot_matches_what_the_clients_saw() {
    let (a, _) = spawn_full("127.0.0.1:0", "a").await;
    let (b, _) = spawn_full("127.0.0.1:0", "b").await;
    let dead = refused_addr().await;
    let backends = http_backends(&[
        ("a", a.url()),
        ("b", b.url()),
        ("x", format!("http://{dead}")),
    ]);
    let stats = backends.clone();
    let gateway = serve_gateway(
        "127.0.0.1:0",
        StickyLayer::new(KeyHash::header("x-user")).sticky(backends),
    )
    .await;

    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let url = gateway.url();
            tokio::spawn(async move {
                let client = client_from([127, 0, 4, i + 1].into());
                let mut seen = Vec::new();
                for _ in 0..15 {
                    seen.push(http_get(&client, &url, &[("x-user", &format!("m-{i}"))]).await);
                }
                seen
            })
        })
        .collect();
    let mut per_backend: BTreeMap<String, u64> = BTreeMap::new();
    let mut total = 0;
    for task in tasks {
        for (status, backend) in tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .unwrap()
            .unwrap()
        {
            assert_eq!(status, 200);
            *per_backend.entry(backend).or_default() += 1;
            total += 1;
        }
    }
    let s = stats.stats();
    let x = s.backend("x").unwrap();
    assert!(x.requests > 0, "some users hash to the dead backend");
    assert_eq!((x.responses, x.errors), (0, x.requests));
    for id in ["a", "b"] {
        let st = s.backend(id).unwrap();
        let seen = per_backend.get(id).copied().unwrap_or(0);
        assert_eq!(st.responses, seen, "{id}: {st:?}");
        assert_eq!(st.requests, seen);
        assert_eq!((st.errors, st.in_flight), (0, 0));
        // Latency is timed on the first request and every eighth after it.
        assert_eq!(st.latency.count, seen.div_ceil(8));
        assert!(st.latency.p50 <= st.latency.p99 && st.latency.p99 <= st.latency.max);
    }
    assert_eq!(s.total(|b| b.responses), total);
    // Every attempt on the dead backend was re-assigned once, to a live one.
    assert_eq!(s.total(|b| b.reassignments), x.requests);
    assert_eq!(s.total(|b| b.requests), total + x.requests);
}

#[tokio::test]
async fn new_assignments_count_choices_a_strategy_marks_new() {
    use tower::{Service, ServiceExt};
    use tower_sticky::affinity::{Affinity, Choice, RouteContext, Selection};

    /// Marks a client new unless it sends `x-known`.
    #[derive(Debug)]
    struct Newcomers;
    impl Affinity for Newcomers {
        fn select(&self, req: &http::request::Parts, _ctx: &RouteContext<'_>) -> Selection {
            let reason = if req.headers.contains_key("x-known") {
                Reason::Sticky
            } else {
                Reason::New
            };
            Selection::Chosen(Choice::new(0, reason))
        }
        fn name(&self) -> &'static str {
            "newcomers"
        }
    }
    let backend = tower::service_fn(|_req: http::Request<String>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
    });
    let backends = tower_sticky::Backends::new().with("only", backend);
    let mut sticky = StickyLayer::new(Newcomers).sticky(backends.clone());
    for known in [false, true, false] {
        let mut req = http::Request::new(String::new());
        if known {
            req.headers_mut().insert("x-known", "1".parse().unwrap());
        }
        let res = sticky.ready().await.unwrap().call(req).await.unwrap();
        assert_eq!(
            res.extensions().get::<Routed>().unwrap().strategy,
            "newcomers"
        );
    }
    let s = backends.stats();
    assert_eq!(s.backend("only").unwrap().new_assignments, 2);
    assert_eq!(s.backend("only").unwrap().requests, 3);
}

#[cfg(feature = "metrics")]
mod facade {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    use metrics::{
        Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString,
        Unit,
    };

    use super::*;

    #[derive(Default)]
    struct Samples(Mutex<Vec<f64>>);
    impl HistogramFn for Samples {
        fn record(&self, value: f64) {
            self.0.lock().unwrap().push(value);
        }
    }

    /// Keeps every series by `name{backend}`.
    #[derive(Default, Clone)]
    struct Capture {
        counters: Arc<Mutex<BTreeMap<String, Arc<AtomicU64>>>>,
        histograms: Arc<Mutex<BTreeMap<String, Arc<Samples>>>>,
    }

    fn series(key: &Key) -> String {
        let backend = key
            .labels()
            .find(|l| l.key() == "backend")
            .map(|l| l.value().to_owned())
            .unwrap_or_default();
        format!("{}{{{backend}}}", key.name())
    }

    impl Capture {
        fn cell(&self, key: &Key) -> Arc<AtomicU64> {
            let mut cells = self.counters.lock().unwrap();
            cells.entry(series(key)).or_default().clone()
        }
    }

    impl Recorder for Capture {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            Counter::from_arc(self.cell(key))
        }
        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            // Gauges keep their f64 bits in the same kind of cell as counters.
            Gauge::from_arc(self.cell(key))
        }
        fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
            let h = self
                .histograms
                .lock()
                .unwrap()
                .entry(series(key))
                .or_default()
                .clone();
            Histogram::from_arc(h)
        }
    }

    #[tokio::test]
    async fn the_facade_reports_the_snapshot_counters() {
        let capture = Capture::default();
        metrics::set_global_recorder(capture.clone()).unwrap();
        let (m1, _) = spawn_full("127.0.0.1:0", "m1").await;
        let dead = refused_addr().await;
        let backends = http_backends(&[("m1", m1.url()), ("m2", format!("http://{dead}"))]);
        let stats = backends.clone();
        let gateway = serve_gateway(
            "127.0.0.1:0",
            StickyLayer::new(KeyHash::header("x-user")).sticky(backends),
        )
        .await;
        let client = client_from([127, 0, 4, 200].into());
        for i in 0..20 {
            let (status, _) =
                http_get(&client, &gateway.url(), &[("x-user", &format!("f{i}"))]).await;
            assert_eq!(status, 200);
        }
        let s = stats.stats();
        let counter = |name: &str, id: &str| {
            capture
                .counters
                .lock()
                .unwrap()
                .get(&format!("{name}{{{id}}}"))
                .map_or(0, |c| c.load(Ordering::Relaxed))
        };
        for id in ["m1", "m2"] {
            let b = s.backend(id).unwrap();
            assert_eq!(
                counter("tower_sticky_requests_total", id),
                b.requests,
                "{id}"
            );
            assert_eq!(
                counter("tower_sticky_responses_total", id),
                b.responses,
                "{id}"
            );
            assert_eq!(counter("tower_sticky_errors_total", id), b.errors, "{id}");
            assert_eq!(
                counter("tower_sticky_reassignments_total", id),
                b.reassignments,
                "{id}"
            );
            // The in-flight gauge is back at 0.0 (its bits are 0).
            assert_eq!(counter("tower_sticky_in_flight", id), 0, "{id}");
        }
        assert!(s.backend("m2").unwrap().errors > 0);
        let latencies = capture.histograms.lock().unwrap()["tower_sticky_latency_seconds{m1}"]
            .0
            .lock()
            .unwrap()
            .len() as u64;
        let m1 = s.backend("m1").unwrap();
        assert_eq!(latencies, m1.latency.count);
        assert_eq!(latencies, m1.requests.div_ceil(8));
        // Marking a backend down or up through the handle moves its healthy gauge too.
        let healthy = |id: &str| f64::from_bits(counter("tower_sticky_healthy", id));
        assert_eq!(healthy("m1"), 1.0);
        stats.handle().set_healthy("m1", false).unwrap();
        assert_eq!(healthy("m1"), 0.0);
        stats.handle().set_healthy("m1", true).unwrap();
        assert_eq!(healthy("m1"), 1.0);
    }
}
