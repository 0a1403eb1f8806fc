//! [`KeyHash`]: a key taken from the request decides the backend through a consistent hash ring.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use http::HeaderName;

use super::ip::select_on_ring_bounded;
use super::{Affinity, RouteContext, Selection};
use crate::headers::cookie_values;
use crate::ring::{BoundedLoad, RingError, RingKind};

type KeyFn = dyn Fn(&http::request::Parts) -> Option<String> + Send + Sync;

/// Where [`KeyHash`] reads the key.
#[derive(Clone)]
#[non_exhaustive]
pub enum KeySource {
    /// A request header's value (the first line). `None` if the name given was not a valid header
    /// name: such a source never finds a key.
    Header(Option<HeaderName>),
    /// A cookie's value (the first cookie of that name).
    Cookie(String),
    /// The request path.
    Path,
    /// A query parameter's value (percent-decoded).
    Query(String),
    /// A closure over the request head.
    Fn(Arc<KeyFn>),
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Header(name) => f.debug_tuple("Header").field(name).finish(),
            KeySource::Cookie(name) => f.debug_tuple("Cookie").field(name).finish(),
            KeySource::Path => f.write_str("Path"),
            KeySource::Query(name) => f.debug_tuple("Query").field(name).finish(),
            KeySource::Fn(_) => f.write_str("Fn(..)"),
        }
    }
}

impl KeySource {
    /// The key of this request, if it has one. An empty value counts as no key, so clients that
    /// send `X-User:` do not all pile onto one backend.
    pub fn extract<'a>(&self, req: &'a http::request::Parts) -> Option<Cow<'a, [u8]>> {
        let key: Cow<'a, [u8]> = match self {
            KeySource::Header(name) => Cow::Borrowed(req.headers.get(name.as_ref()?)?.as_bytes()),
            KeySource::Cookie(name) => {
                Cow::Borrowed(cookie_values(&req.headers, name).next()?.as_bytes())
            }
            KeySource::Path => Cow::Borrowed(req.uri.path().as_bytes()),
            KeySource::Query(name) => {
                let query = req.uri.query()?;
                let (_, value) = form_urlencoded::parse(query.as_bytes())
                    .find(|(k, _)| k.as_ref() == name.as_str())?;
                Cow::Owned(value.into_owned().into_bytes())
            }
            KeySource::Fn(f) => Cow::Owned(f(req)?.into_bytes()),
        };
        (!key.is_empty()).then_some(key)
    }
}

/// Routes by a key taken from the request, placed on a consistent hash ring (nginx
/// `hash $key consistent`, Envoy ring hash).
///
/// The same key always goes to the same backend while it is usable; when it is not, to one
/// deterministic substitute (the next member on the ring). A request without the key goes to the
/// next strategy in the chain.
///
/// ```
/// use tower_sticky::{StickyLayer, affinity::{KeyHash, IpHash}};
///
/// let by_user = StickyLayer::builder()
///     .affinity(KeyHash::header("x-user"))
///     .fallback(IpHash::new())
///     .build();
/// let by_tenant = StickyLayer::new(KeyHash::query("tenant"));
/// let by_session = StickyLayer::new(KeyHash::cookie("session_id"));
/// let by_first_segment = StickyLayer::new(KeyHash::from_fn(|req| {
///     req.uri.path().split('/').nth(1).map(str::to_owned)
/// }));
/// # let _ = (by_user, by_tenant, by_session, by_first_segment);
/// ```
#[derive(Debug, Clone)]
pub struct KeyHash {
    source: KeySource,
    ring: RingKind,
    bound: Option<BoundedLoad>,
}

impl KeyHash {
    /// Keys on a source, with the default ring ([`RingKind::Ketama`]).
    pub fn new(source: KeySource) -> Self {
        Self {
            source,
            ring: RingKind::Ketama,
            bound: None,
        }
    }

    /// Keys on a request header (case-insensitive name).
    pub fn header(name: &str) -> Self {
        Self::new(KeySource::Header(
            HeaderName::from_bytes(name.as_bytes()).ok(),
        ))
    }

    /// Keys on a cookie.
    pub fn cookie(name: impl Into<String>) -> Self {
        Self::new(KeySource::Cookie(name.into()))
    }

    /// Keys on the request path.
    pub fn path() -> Self {
        Self::new(KeySource::Path)
    }

    /// Keys on a query parameter.
    pub fn query(name: impl Into<String>) -> Self {
        Self::new(KeySource::Query(name.into()))
    }

    /// Keys on what a closure returns (`None`: no key).
    pub fn from_fn(
        f: impl Fn(&http::request::Parts) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        Self::new(KeySource::Fn(Arc::new(f)))
    }

    /// Uses a ring of this kind.
    pub fn ring(mut self, kind: RingKind) -> Self {
        self.ring = kind;
        self
    }

    /// Bounded loads (Mirrokni et al.): a backend holding its share of
    /// `ceil(factor x average in-flight)` takes no more requests; they go to the key's next
    /// candidates on the ring, so one hot key cannot swamp one backend. `factor` must be >= 1.0
    /// (1.25 is a good start; 1.0 spreads perfectly evenly but keeps keys least sticky).
    ///
    /// The bound is checked against the live in-flight counters when a request is routed;
    /// requests routed at the same instant on other threads may each see the same count, so under
    /// heavy concurrency a backend can exceed the bound by up to the number of simultaneous
    /// routings. The walk reads no lock; the average is summed over the backends only when the
    /// key's backend is busy.
    ///
    /// ```
    /// use tower_sticky::{StickyLayer, affinity::KeyHash, ring::RingKind};
    ///
    /// let layer = StickyLayer::new(
    ///     KeyHash::header("x-tenant").ring(RingKind::maglev()).bounded_load(1.25)?,
    /// );
    /// assert!(KeyHash::header("x-tenant").bounded_load(0.5).is_err());
    /// # let _ = layer;
    /// # Ok::<(), tower_sticky::ring::RingError>(())
    /// ```
    pub fn bounded_load(mut self, factor: f64) -> Result<Self, RingError> {
        self.bound = Some(BoundedLoad::new(factor)?);
        Ok(self)
    }
}

impl Affinity for KeyHash {
    fn select(&self, req: &http::request::Parts, ctx: &RouteContext<'_>) -> Selection {
        match self.source.extract(req) {
            Some(key) => select_on_ring_bounded(ctx, self.ring, &key, self.bound.as_ref()),
            None => Selection::NoKey,
        }
    }

    fn name(&self) -> &'static str {
        "key-hash"
    }

    fn edits_requests(&self) -> bool {
        false
    }

    fn rings(&self) -> Vec<RingKind> {
        vec![self.ring]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn sources_extract_their_keys() {
        let p = parts(
            "/shop/cart?tenant=acme%20corp&x=1",
            &[("x-user", "alice"), ("cookie", "sid=s1; other=2")],
        );
        let get = |s: KeySource| s.extract(&p).map(|k| k.into_owned());
        assert_eq!(
            get(KeyHash::header("X-User").source),
            Some(b"alice".to_vec())
        );
        assert_eq!(get(KeyHash::cookie("sid").source), Some(b"s1".to_vec()));
        assert_eq!(get(KeyHash::path().source), Some(b"/shop/cart".to_vec()));
        assert_eq!(
            get(KeyHash::query("tenant").source),
            Some(b"acme corp".to_vec())
        );
        assert_eq!(get(KeyHash::query("missing").source), None);
        assert_eq!(get(KeyHash::header("bad header").source), None);
        let f = KeyHash::from_fn(|r| r.uri.path().split('/').nth(1).map(str::to_owned));
        assert_eq!(get(f.source), Some(b"shop".to_vec()));
    }

    #[test]
    fn empty_values_are_no_key() {
        let p = parts("/?tenant=", &[("x-user", "")]);
        assert!(KeyHash::header("x-user").source.extract(&p).is_none());
        assert!(KeyHash::query("tenant").source.extract(&p).is_none());
    }
}
