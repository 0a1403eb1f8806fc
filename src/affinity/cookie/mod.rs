//! Cookie affinity: [`CookieAffinity`] in three modes, the way real load balancers keep a user on
//! one backend.
//!
//! | mode | the cookie holds | the balancer keeps | scaling |
//! |---|---|---|---|
//! | [`pinned`](CookieAffinity::pinned) (HAProxy `cookie insert`) | the backend id, signed or encrypted | nothing | clients stay until their backend goes |
//! | [`hashed`](CookieAffinity::hashed) (Heroku) | a random 128-bit token, signed | nothing | ~`1/(n+1)` move on an add |
//! | [`learn`](CookieAffinity::learn) (HAProxy `stick store-response`) | the app's own cookie, untouched | value -> backend, LRU + TTL, optionally in Redis | learned clients stay |
//!
//! Cookies set by the balancer are authenticated with [`CookieKeys`] (HMAC-SHA256 through the
//! `cookie` crate, constant-time check; or AES-256-GCM with [`Protection::Private`]). A missing,
//! truncated, altered, expired or wrong-key cookie is never obeyed: the client is treated as new
//! and gets a fresh cookie. With a shared key, a restarted balancer and any number of replicas
//! route the same cookie the same way.
//!
//! When a client's backend is unusable or gone, the request goes to a deterministic substitute
//! (the next member on the ring for that client) and, by default, the cookie is re-pinned to it;
//! [`strict`](CookieAffinityBuilder::strict) answers 503 instead.
//!
//! ```
//! use std::time::Duration;
//! use tower_sticky::StickyLayer;
//! use tower_sticky::affinity::{IpHash, LeastInFlight};
//! use tower_sticky::affinity::cookie::{CookieAffinity, CookieKeys, Key};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let key = Key::from(&[42u8; 64]); // in production: 64 secret random bytes, shared by replicas
//! let pinned = CookieAffinity::pinned("srv")
//!     .key(CookieKeys::new(key))
//!     .max_idle(Duration::from_secs(30 * 60))
//!     .max_life(Duration::from_secs(24 * 3600))
//!     .assign_with(LeastInFlight::new())
//!     .secure(true)
//!     .build()?;
//! let layer = StickyLayer::builder().cookie(pinned).fallback(IpHash::new()).build();
//! # let _ = layer;
//!
//! let hashed = CookieAffinity::hashed("__Host-affinity").key(Key::generate()).build()?;
//! let learned = CookieAffinity::learn("session_id")
//!     .capacity(100_000)
//!     .ttl(Duration::from_secs(3600))
//!     .build()?;
//! # let _ = (hashed, learned);
//! # Ok(()) }
//! ```

mod assign;
mod attributes;
mod codec;
mod hashed;
mod learned;
#[cfg(feature = "redis")]
mod learned_redis;
mod learned_table;
mod pinned;

pub use attributes::CookieAttributes;
pub use codec::{CookieKeys, Protection};
pub use cookie::{Key, SameSite};
#[cfg(feature = "redis")]
pub use learned_redis::{RedisLearnedTable, RedisShareError};

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use super::{Affinity, RouteContext, Selection};
use crate::ring::RingKind;
use assign::Assigner;
use codec::Codec;
use hashed::Hashed;
use learned::Learned;
use learned_table::LearnedTable;
use pinned::Pinned;

/// Why a [`CookieAffinityBuilder`] refused its settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CookieConfigError {
    /// The cookie name is empty or holds characters a cookie name may not.
    #[error("invalid cookie name {0:?}")]
    InvalidName(String),
    /// An attribute value cannot be written in a `Set-Cookie` header.
    #[error("invalid cookie {0} attribute")]
    InvalidAttribute(&'static str),
    /// A `__Host-` / `__Secure-` name with settings browsers would reject.
    #[error("cookie {name:?}: the prefix {rule}")]
    PrefixRule {
        /// The cookie name.
        name: String,
        /// What the prefix requires.
        rule: &'static str,
    },
    /// Browsers drop `SameSite=None` cookies without `Secure`.
    #[error("SameSite=None needs Secure")]
    SameSiteNoneNeedsSecure,
    /// A key must hold at least 64 bytes.
    #[error("cookie key too short: {len} bytes, need 64")]
    KeyTooShort {
        /// Bytes given.
        len: usize,
    },
    /// The operating system's random source failed while generating a key.
    #[error("no randomness available to generate a cookie key")]
    NoRandomness,
    /// A duration or size setting was zero.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    /// `indirect` was asked of learned mode, whose cookie belongs to the application.
    #[error(
        "indirect only applies to the pinned and hashed modes (learned mode reads the application's own cookie)"
    )]
    IndirectLearned,
}

/// Cookie affinity, ready to be used as a strategy ([`Affinity`]); made by
/// [`CookieAffinityBuilder::build`]. See the [module docs](self) for the three modes.
#[derive(Debug)]
pub struct CookieAffinity {
    mode: Mode,
    rings: Vec<RingKind>,
    /// Our cookie's name when backends must not see it (`indirect`).
    hidden: Option<String>,
}

#[derive(Debug)]
enum Mode {
    Pinned(Pinned),
    Hashed(Hashed),
    Learned(Learned),
}

impl CookieAffinity {
    /// Pinned mode: the cookie `name` names the backend (signed).
    pub fn pinned(name: impl Into<String>) -> CookieAffinityBuilder {
        CookieAffinityBuilder::new(Kind::Pinned, name.into())
    }

    /// Hashed mode: the cookie `name` holds a random token placed on the ring (signed).
    pub fn hashed(name: impl Into<String>) -> CookieAffinityBuilder {
        CookieAffinityBuilder::new(Kind::Hashed, name.into())
    }

    /// Learned mode: the application's cookie `app_cookie` (e.g. `session_id`) is the key; the
    /// balancer sets no cookie of its own.
    pub fn learn(app_cookie: impl Into<String>) -> CookieAffinityBuilder {
        CookieAffinityBuilder::new(Kind::Learned, app_cookie.into())
    }

    /// A handle on the learned table (learned mode only), to inspect it after the strategy has
    /// been moved into a layer.
    pub fn learned_table(&self) -> Option<LearnedTableHandle> {
        match &self.mode {
            Mode::Learned(learned) => Some(LearnedTableHandle {
                table: Arc::clone(&learned.table),
            }),
            _ => None,
        }
    }
}

/// A read-only view of a learned table (sizes for metrics, look-ups for tests and debugging).
///
/// ```
/// use tower_sticky::affinity::CookieAffinity;
/// # fn main() -> Result<(), tower_sticky::affinity::cookie::CookieConfigError> {
/// let learned = CookieAffinity::learn("session_id").capacity(1000).build()?;
/// let table = learned.learned_table().expect("learned mode");
/// assert_eq!(table.len(), 0);
/// assert!(table.capacity() <= 1000);
/// assert_eq!(table.backend_of("no-such-session"), None);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct LearnedTableHandle {
    table: Arc<LearnedTable>,
}

impl LearnedTableHandle {
    /// Entries held now.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// `true` when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most entries the table will hold.
    pub fn capacity(&self) -> usize {
        self.table.capacity()
    }

    /// The backend learned for this application cookie value, if any (does not refresh it).
    pub fn backend_of(&self, cookie_value: &str) -> Option<crate::BackendId> {
        self.table.peek(
            learned_table::key_of(cookie_value),
            std::time::Instant::now(),
        )
    }
}

impl Affinity for CookieAffinity {
    fn select(&self, req: &http::request::Parts, ctx: &RouteContext<'_>) -> Selection {
        match &self.mode {
            Mode::Pinned(pinned) => pinned.select(req, ctx),
            Mode::Hashed(hashed) => hashed.select(req, ctx),
            Mode::Learned(learned) => learned.select(req, ctx),
        }
    }

    fn name(&self) -> &'static str {
        match &self.mode {
            Mode::Pinned(_) => "cookie-pinned",
            Mode::Hashed(_) => "cookie-hashed",
            Mode::Learned(_) => "cookie-learned",
        }
    }

    fn rings(&self) -> Vec<RingKind> {
        self.rings.clone()
    }

    fn prepare_request(&self, req: &mut http::request::Parts) {
        if let Some(name) = &self.hidden {
            crate::headers::remove_cookie(&mut req.headers, name);
        }
    }

    fn edits_requests(&self) -> bool {
        self.hidden.is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Pinned,
    Hashed,
    Learned,
}

/// Settings of a [`CookieAffinity`]; [`build`](Self::build) checks them.
///
/// Defaults: a random key (fine for one process; replicas and restarts need
/// [`key`](Self::key)), signed values, `Path=/`, session cookie, `HttpOnly`, `SameSite=Lax`, not
/// `Secure`, new clients by round robin, re-pinning on failover, not strict, Ketama ring; learned
/// mode: 100,000 entries, one hour TTL.
#[derive(Debug)]
pub struct CookieAffinityBuilder {
    kind: Kind,
    attributes: CookieAttributes,
    keys: Option<CookieKeys>,
    protection: Protection,
    max_idle: Option<Duration>,
    max_life: Option<Duration>,
    assign: Option<Arc<dyn Affinity>>,
    repin_on_failover: bool,
    strict: bool,
    indirect: bool,
    ring: RingKind,
    capacity: usize,
    ttl: Duration,
    #[cfg(feature = "redis")]
    redis: Option<RedisLearnedTable>,
}

impl CookieAffinityBuilder {
    fn new(kind: Kind, name: String) -> Self {
        Self {
            kind,
            attributes: CookieAttributes::new(name),
            keys: None,
            protection: Protection::Signed,
            max_idle: None,
            max_life: None,
            assign: None,
            repin_on_failover: true,
            strict: false,
            indirect: false,
            ring: RingKind::Ketama,
            capacity: 100_000,
            ttl: Duration::from_secs(3600),
            #[cfg(feature = "redis")]
            redis: None,
        }
    }

    /// The keys that seal and open the cookie (first seals, all open).
    pub fn key(mut self, keys: impl Into<CookieKeys>) -> Self {
        self.keys = Some(keys.into());
        self
    }

    /// Signed (default) or private (encrypted) values.
    pub fn protection(mut self, protection: Protection) -> Self {
        self.protection = protection;
        self
    }

    /// `Path` (default `/`).
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.attributes.path = path.into();
        self.attributes.path_set = true;
        self
    }

    /// `Domain` (default none: host-only cookie).
    pub fn domain(mut self, domain: impl Into<String>) -> Self {
        self.attributes.domain = Some(domain.into());
        self
    }

    /// `Max-Age` (and `Expires`); without it the cookie is a session cookie.
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.attributes.max_age = Some(max_age);
        self
    }

    /// `Secure` (default off, forced on by a `__Host-` or `__Secure-` name).
    pub fn secure(mut self, secure: bool) -> Self {
        self.attributes.secure = Some(secure);
        self
    }

    /// `HttpOnly` (default on).
    pub fn http_only(mut self, http_only: bool) -> Self {
        self.attributes.http_only = http_only;
        self
    }

    /// `SameSite` (default `Lax`; `None` needs `Secure`); `None` here omits the attribute.
    pub fn same_site(mut self, same_site: Option<SameSite>) -> Self {
        self.attributes.same_site = same_site;
        self
    }

    /// Renames the cookie to `__Host-{name}`: the browser then only accepts it over HTTPS, for
    /// this host, on every path.
    pub fn host_prefix(mut self) -> Self {
        if !self.attributes.name.starts_with("__Host-") {
            self.attributes.name = format!("__Host-{}", self.attributes.name);
        }
        self
    }

    /// Pinned mode: a cookie unused for longer than this is treated as a new client (HAProxy
    /// `maxidle`). The last-seen time is rewritten at most every quarter of it.
    pub fn max_idle(mut self, max_idle: Duration) -> Self {
        self.max_idle = Some(max_idle);
        self
    }

    /// Pinned mode: a cookie older than this is treated as a new client (HAProxy `maxlife`).
    pub fn max_life(mut self, max_life: Duration) -> Self {
        self.max_life = Some(max_life);
        self
    }

    /// Pinned and learned modes: how a client without affinity is placed (default
    /// [`RoundRobin`](super::RoundRobin); e.g. [`LeastInFlight`](super::LeastInFlight), or a
    /// [`Chain`](super::Chain) such as "IP hash, else round robin").
    pub fn assign_with(mut self, strategy: impl Affinity) -> Self {
        self.assign = Some(Arc::new(strategy));
        self
    }

    /// Pinned and learned modes: rewrite the affinity to the substitute when the client's backend
    /// is down or gone (default on). Off: the client goes back when its backend recovers.
    pub fn repin_on_failover(mut self, repin: bool) -> Self {
        self.repin_on_failover = repin;
        self
    }

    /// Answer 503 ([`Unavailable::AffinityBackendDown`](super::Unavailable::AffinityBackendDown))
    /// when the client's backend is a member but unusable, instead of failing over (default off).
    /// A backend removed from the set never comes back, so its clients still move.
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// Removes the affinity cookie from requests before they reach the backend, like HAProxy's
    /// `cookie ... indirect` (default off: backends see it). The cookie only matters to the
    /// balancer; hiding it saves the backends parsing it. Pinned and hashed modes only: learned
    /// mode reads the application's own cookie, which the application needs
    /// ([`build`](Self::build) refuses the combination).
    ///
    /// A request that is retried on another backend (its own refused the connection) comes back
    /// without the cookie, so it is placed like a new client and given a new cookie, even in
    /// [`strict`](Self::strict) mode.
    ///
    /// ```
    /// use tower_sticky::affinity::cookie::{CookieAffinity, CookieKeys, Key};
    ///
    /// let cookie = CookieAffinity::pinned("srv")
    ///     .key(CookieKeys::new(Key::generate()))
    ///     .indirect(true)
    ///     .build()
    ///     .unwrap();
    /// # let _ = cookie;
    /// assert!(CookieAffinity::learn("JSESSIONID").indirect(true).build().is_err());
    /// ```
    pub fn indirect(mut self, indirect: bool) -> Self {
        self.indirect = indirect;
        self
    }

    /// The ring used for hashed mode and for substitutes (default [`RingKind::Ketama`]).
    pub fn ring(mut self, kind: RingKind) -> Self {
        self.ring = kind;
        self
    }

    /// Learned mode: the most entries the table holds (least recently used evicted first).
    pub fn capacity(mut self, entries: usize) -> Self {
        self.capacity = entries;
        self
    }

    /// Learned mode: an entry is forgotten this long after it was last used.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Learned mode: share the table through Redis (replicas and restarts keep it).
    #[cfg(feature = "redis")]
    pub fn redis(mut self, shared: RedisLearnedTable) -> Self {
        self.redis = Some(shared);
        self
    }

    /// Checks the settings and builds the strategy.
    pub fn build(self) -> Result<CookieAffinity, CookieConfigError> {
        self.attributes.validate()?;
        if self.indirect && self.kind == Kind::Learned {
            return Err(CookieConfigError::IndirectLearned);
        }
        let hidden = self.indirect.then(|| self.attributes.name.clone());
        for (name, value) in [
            ("max_idle", self.max_idle),
            ("max_life", self.max_life),
            ("max_age", self.attributes.max_age),
            ("ttl", Some(self.ttl)),
        ] {
            if value.is_some_and(|d| d.is_zero()) {
                return Err(CookieConfigError::Zero(name));
            }
        }
        let assigner = Assigner::new(self.assign);
        let mut rings = vec![self.ring];
        if self.kind != Kind::Hashed {
            for kind in assigner.rings() {
                if !rings.contains(&kind) {
                    rings.push(kind);
                }
            }
        }
        let codec = || -> Result<Codec, CookieConfigError> {
            let keys = match self.keys.clone() {
                Some(keys) => keys,
                None => CookieKeys::generate()?,
            };
            Ok(Codec::new(keys, self.protection))
        };
        let mode = match self.kind {
            Kind::Pinned => Mode::Pinned(Pinned {
                codec: codec()?,
                attributes: self.attributes,
                assigner,
                max_idle: self.max_idle,
                max_life: self.max_life,
                repin_on_failover: self.repin_on_failover,
                strict: self.strict,
                ring: self.ring,
            }),
            Kind::Hashed => Mode::Hashed(Hashed {
                codec: codec()?,
                attributes: self.attributes,
                strict: self.strict,
                ring: self.ring,
            }),
            Kind::Learned => {
                let capacity =
                    NonZeroUsize::new(self.capacity).ok_or(CookieConfigError::Zero("capacity"))?;
                let table = Arc::new(LearnedTable::new(capacity, self.ttl));
                #[cfg(feature = "redis")]
                if let Some(redis) = &self.redis {
                    redis.preload(Arc::clone(&table));
                }
                Mode::Learned(Learned {
                    app_cookie: self.attributes.name.as_str().into(),
                    table,
                    shared: learned::Shared {
                        #[cfg(feature = "redis")]
                        redis: self.redis,
                    },
                    assigner,
                    repin_on_failover: self.repin_on_failover,
                    strict: self.strict,
                    ring: self.ring,
                })
            }
        };
        Ok(CookieAffinity {
            mode,
            rings,
            hidden,
        })
    }
}
