//! Hostile cookies: random bytes, truncated and altered signatures, oversized and non-UTF-8
//! values, duplicated names, plain backend ids, values signed for another cookie. Each must give
//! a normal response, a fresh cookie and a backend the balancer chose (`Reason::New`), never a
//! panic and never routing picked by the client. Property tests drive `Sticky` in process; a few
//! cases also go over real HTTP.

mod support;

use std::convert::Infallible;

use futures_util::FutureExt;
use proptest::prelude::*;
use support::cookie::{backends, gateway, raw_client, send, set_cookie_value};
use tower::{Service, service_fn};
use tower_sticky::affinity::cookie::{Key, Protection};
use tower_sticky::affinity::{CookieAffinity, Reason};
use tower_sticky::{Backends, Routed, Sticky, StickyLayer};

type Svc =
    tower::util::BoxCloneSyncService<http::Request<String>, http::Response<String>, Infallible>;

fn key() -> Key {
    Key::from(&[21u8; 64])
}

fn sticky(cookie: CookieAffinity) -> Sticky<Svc> {
    let backends: Backends<Svc> = ["b0", "b1", "b2"]
        .into_iter()
        .map(|id| {
            let svc = tower::util::BoxCloneSyncService::new(service_fn(
                move |_req: http::Request<String>| async move {
                    Ok::<_, Infallible>(http::Response::new(id.to_owned()))
                },
            ));
            (id, svc)
        })
        .collect();
    StickyLayer::builder()
        .cookie(cookie)
        .build()
        .sticky(backends)
}

fn pinned(protection: Protection) -> Sticky<Svc> {
    sticky(
        CookieAffinity::pinned("srv")
            .key(key())
            .protection(protection)
            .build()
            .unwrap(),
    )
}

fn hashed() -> Sticky<Svc> {
    sticky(CookieAffinity::hashed("srv").key(key()).build().unwrap())
}

/// Sends one request with these raw `Cookie` header bytes; `None` if the bytes cannot be a
/// header value at all (hyper would refuse them before any service runs).
fn call(svc: &mut Sticky<Svc>, cookie: &[u8]) -> Option<(Routed, Option<String>)> {
    let value = http::HeaderValue::from_bytes(cookie).ok()?;
    let req = http::Request::builder()
        .header("cookie", value)
        .body(String::new())
        .unwrap();
    let res = svc
        .call(req)
        .now_or_never()
        .expect("in-process backends answer at once")
        .unwrap();
    assert_eq!(res.status(), 200);
    let routed = res.extensions().get::<Routed>().unwrap().clone();
    let set = res
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_owned());
    Some((routed, set))
}

/// A valid cookie value issued by `svc` and the backend it names.
fn issued(svc: &mut Sticky<Svc>) -> (String, String) {
    let (routed, set) = call(svc, b"other=1").unwrap();
    let set = set.expect("new client gets a cookie");
    let value = set_cookie_value(&set, "srv").expect("it sets srv");
    (value, routed.backend.to_string())
}

/// The response treated the client as new: balancer's choice, fresh cookie.
fn assert_fresh(outcome: Option<(Routed, Option<String>)>, what: &str) {
    if let Some((routed, set)) = outcome {
        assert_eq!(routed.reason, Reason::New, "{what}: obeyed");
        assert!(
            set.is_some_and(|s| s.starts_with("srv=")),
            "{what}: no fresh cookie"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_are_never_obeyed(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut cookie = b"srv=".to_vec();
        cookie.extend_from_slice(&bytes);
        for mut svc in [pinned(Protection::Signed), pinned(Protection::Private), hashed()] {
            assert_fresh(call(&mut svc, &cookie), "random bytes");
        }
    }

    #[test]
    fn truncated_and_altered_signatures_are_never_obeyed(
        cut in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        replacement in proptest::char::range('!', '~'),
    ) {
        for mut svc in [pinned(Protection::Signed), pinned(Protection::Private), hashed()] {
            let (value, _) = issued(&mut svc);
            let truncated = &value[..cut.index(value.len())];
            assert_fresh(call(&mut svc, format!("srv={truncated}").as_bytes()), "truncated");

            let mut altered: Vec<char> = value.chars().collect();
            let i = at.index(altered.len());
            if altered[i] != replacement && replacement != ';' {
                altered[i] = replacement;
                let altered: String = altered.into_iter().collect();
                assert_fresh(call(&mut svc, format!("srv={altered}").as_bytes()), "altered");
            }
        }
    }

    #[test]
    fn oversized_values_are_refused_before_any_work(len in 8192usize..20_000, fill in any::<u8>()) {
        let filler = char::from(b'A' + fill % 26).to_string().repeat(len);
        let mut svc = pinned(Protection::Signed);
        let (value, _) = issued(&mut svc);
        // Even a valid signature padded past the limit is refused.
        for candidate in [filler.clone(), format!("{value}{filler}")] {
            assert_fresh(call(&mut svc, format!("srv={candidate}").as_bytes()), "oversized");
        }
    }
}

#[test]
fn non_utf8_duplicates_plain_ids_and_foreign_signatures_are_not_obeyed() {
    let mut svc = pinned(Protection::Signed);
    let (valid, backend) = issued(&mut svc);

    // Non-UTF-8 bytes around an otherwise valid value: the header line cannot be read as text.
    let mut non_utf8 = format!("srv={valid}; x=").into_bytes();
    non_utf8.extend_from_slice(&[0xff, 0xfe, 0x80]);
    assert_fresh(call(&mut svc, &non_utf8), "non-utf8");
    assert_fresh(call(&mut svc, b"srv=\xc3\x28\xa0\xa1"), "non-utf8 value");

    // Duplicated names, all junk.
    assert_fresh(call(&mut svc, b"srv=junk; srv=b1; srv=b2"), "duplicates");
    // More duplicates than the balancer will look at, the valid one last: not obeyed.
    let many = format!("srv=a; srv=b; srv=c; srv=d; srv={valid}");
    assert_fresh(
        call(&mut svc, many.as_bytes()),
        "valid one past the look-up limit",
    );
    // A junk duplicate before a valid cookie (e.g. one from another path) does not hide it.
    let (routed, set) = call(&mut svc, format!("srv=junk; srv={valid}").as_bytes()).unwrap();
    assert_eq!(
        (routed.backend.as_str(), routed.reason),
        (backend.as_str(), Reason::Sticky)
    );
    assert!(set.is_none());

    // A plain backend id, and the payload format without its signature.
    for plain in [
        "b0".to_owned(),
        "b2".to_owned(),
        "P1.0000000000000001.1.1.b2".to_owned(),
        valid[44..].to_owned(),
    ] {
        assert_fresh(call(&mut svc, format!("srv={plain}").as_bytes()), &plain);
    }

    // A value validly signed with the same key for another cookie name.
    let mut other = sticky(CookieAffinity::pinned("other").key(key()).build().unwrap());
    let (_, set) = call(&mut other, b"").map(|(r, s)| (r, s.unwrap())).unwrap();
    let foreign = set
        .split(';')
        .next()
        .unwrap()
        .strip_prefix("other=")
        .unwrap();
    assert_fresh(
        call(&mut svc, format!("srv={foreign}").as_bytes()),
        "foreign name",
    );

    // A hashed token is not a pinned value and vice versa.
    let mut hashed_svc = hashed();
    let (token, _) = issued(&mut hashed_svc);
    assert_fresh(
        call(&mut svc, format!("srv={token}").as_bytes()),
        "token as pin",
    );
    assert_fresh(
        call(&mut hashed_svc, format!("srv={valid}").as_bytes()),
        "pin as token",
    );
}

#[tokio::test]
async fn hostile_cookies_over_http_get_a_normal_answer_and_a_fresh_cookie() {
    let (_servers, backends) = backends(3).await;
    let gw = gateway(
        CookieAffinity::pinned("srv").key(key()).build().unwrap(),
        backends,
    )
    .await;
    let client = raw_client();
    let big = format!("srv={}", "A".repeat(9000));
    let cases: [&[u8]; 5] = [
        big.as_bytes(),
        b"srv=\xff\xfe\xfd",
        b"srv=b1; srv=b2",
        b"srv=b0",
        b"srv=",
    ];
    for cookie in cases {
        let res = send(&client, &gw.url(), Some(cookie)).await;
        assert_eq!(res.status, 200, "{:?}", String::from_utf8_lossy(cookie));
        assert!(res.cookie("srv").is_some(), "no fresh cookie");
    }
}
