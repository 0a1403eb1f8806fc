//! Invariants of routing, checked over random inputs: determinism, movement bounds on scaling,
//! and hostile forwarded headers.

use std::convert::Infallible;
use std::net::SocketAddr;

use proptest::prelude::*;
use tower::{Service, ServiceExt, service_fn};
use tower_sticky::affinity::{ClientAddr, ClientIpResolver, IpHash, KeyHash};
use tower_sticky::ring::{RingKind, RingMember};
use tower_sticky::{BackendId, Backends, Routed, StickyLayer};

type Svc =
    tower::util::BoxCloneSyncService<http::Request<String>, http::Response<String>, Infallible>;

fn svc() -> Svc {
    tower::util::BoxCloneSyncService::new(service_fn(|_req: http::Request<String>| async {
        Ok::<_, Infallible>(http::Response::new(String::new()))
    }))
}

/// Where a ring of `ids` (weight 1) puts each key.
fn mapping(ids: &[String], keys: &[String]) -> Vec<String> {
    let ids: Vec<BackendId> = {
        let mut v: Vec<BackendId> = ids.iter().map(BackendId::from).collect();
        v.sort();
        v
    };
    let members: Vec<RingMember<'_>> = ids.iter().map(|id| RingMember { id, weight: 1 }).collect();
    let ring = RingKind::Ketama.build(&members);
    keys.iter()
        .map(|k| ids[ring.primary(k.as_bytes()).unwrap()].to_string())
        .collect()
}

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("backend-{i}")).collect()
}

fn keys(seed: u64, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("client-{seed}-{i}")).collect()
}

/// Routes `req` through a fresh `Sticky` built over `members` in the given insertion order.
fn route(members: &[String], layer: &StickyLayer, req: http::Request<String>) -> String {
    let backends: Backends<Svc> = members.iter().map(|id| (id.clone(), svc())).collect();
    let mut sticky = layer.sticky(backends);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let res = sticky.ready().await.unwrap().call(req).await.unwrap();
        res.extensions()
            .get::<Routed>()
            .unwrap()
            .backend
            .to_string()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Same key, same members (in any insertion order) -> same backend, across independent
    /// `Sticky` instances (restarts, replicas).
    #[test]
    fn same_input_same_backend(key in "[a-zA-Z0-9]{1,24}", n in 1usize..12, rotate in 0usize..12) {
        let members = ids(n);
        let mut shuffled = members.clone();
        shuffled.rotate_left(rotate % n);
        let layer = StickyLayer::new(KeyHash::header("x-key"));
        let req = || http::Request::builder().header("x-key", key.as_str()).body(String::new()).unwrap();
        prop_assert_eq!(route(&members, &layer, req()), route(&shuffled, &layer, req()));
    }

    /// Same client IP -> same backend in both IP modes, across instances.
    #[test]
    fn same_ip_same_backend(octets in any::<[u8; 4]>(), n in 1usize..12, modulo in any::<bool>()) {
        let members = ids(n);
        let strategy = if modulo { IpHash::new().modulo() } else { IpHash::new() };
        let layer = StickyLayer::new(strategy);
        let addr = SocketAddr::from((octets, 4000));
        let req = || {
            let mut r = http::Request::new(String::new());
            r.extensions_mut().insert(ClientAddr(addr));
            r
        };
        let mut reversed = members.clone();
        reversed.reverse();
        prop_assert_eq!(route(&members, &layer, req()), route(&reversed, &layer, req()));
    }

    /// Adding one backend to n moves about 1/(n+1) of keys, all of them to the new backend.
    #[test]
    fn adding_one_backend_moves_about_one_in_n_plus_one(n in 2usize..20, seed in any::<u64>()) {
        let keys = keys(seed, 4000);
        let before = mapping(&ids(n), &keys);
        let after = mapping(&ids(n + 1), &keys);
        let newcomer = format!("backend-{n}");
        let mut moved = 0;
        for (b, a) in before.iter().zip(&after) {
            if b != a {
                moved += 1;
                prop_assert_eq!(a, &newcomer, "a key moved between old backends");
            }
        }
        let fraction = moved as f64 / keys.len() as f64;
        let ideal = 1.0 / (n as f64 + 1.0);
        prop_assert!(fraction <= ideal * 1.5 + 0.02, "moved {fraction:.3}, ideal {ideal:.3}");
        prop_assert!(fraction >= ideal * 0.5 - 0.02, "moved {fraction:.3}, ideal {ideal:.3}");
    }

    /// Removing one backend moves only the keys it had.
    #[test]
    fn removing_one_backend_moves_only_its_keys(n in 2usize..20, victim in 0usize..20, seed in any::<u64>()) {
        let victim = victim % n;
        let keys = keys(seed, 3000);
        let all = ids(n);
        let before = mapping(&all, &keys);
        let mut fewer = all.clone();
        let removed = fewer.remove(victim);
        let after = mapping(&fewer, &keys);
        for (b, a) in before.iter().zip(&after) {
            if b != &removed {
                prop_assert_eq!(a, b);
            } else {
                prop_assert_ne!(a, &removed);
            }
        }
    }

    /// Whatever a client puts in X-Forwarded-For / Forwarded: no panic, and an untrusted peer
    /// always resolves to itself.
    #[test]
    fn forwarded_headers_never_panic_and_untrusted_peers_are_themselves(
        raw in proptest::collection::vec(any::<u8>(), 0..300),
        text in ".{0,200}",
        trusted_peer in any::<bool>(),
    ) {
        let peer: SocketAddr = if trusted_peer { "10.0.0.1:1" } else { "192.0.2.1:1" }.parse().unwrap();
        for name in ["x-forwarded-for", "forwarded"] {
            let mut builder = http::Request::builder();
            if let Ok(v) = http::HeaderValue::from_bytes(&raw) {
                builder = builder.header(name, v);
            }
            if let Ok(v) = http::HeaderValue::from_str(&text) {
                builder = builder.header(name, v);
            }
            let mut req = builder.body(()).unwrap();
            req.extensions_mut().insert(ClientAddr(peer));
            let (parts, _) = req.into_parts();
            for header in [tower_sticky::affinity::ForwardedHeader::XForwardedFor, tower_sticky::affinity::ForwardedHeader::Forwarded] {
                let resolver = ClientIpResolver::new().trusted_proxies(["10.0.0.0/8"]).unwrap().forwarded_header(header);
                let ip = resolver.resolve(&parts);
                prop_assert!(ip.is_some());
                if !trusted_peer {
                    prop_assert_eq!(ip, Some(peer.ip()));
                }
            }
        }
    }
}

#[test]
fn ketama_mapping_is_pinned() {
    // Pins the mapping of the default ring end to end (ids, weights, hash, point labels): if this
    // changes, every deployed client of every balancer moves.
    let got = mapping(&ids(3), &keys(0, 8));
    let expected = [
        "backend-0",
        "backend-0",
        "backend-2",
        "backend-1",
        "backend-0",
        "backend-0",
        "backend-1",
        "backend-0",
    ];
    assert_eq!(got, expected);
}
