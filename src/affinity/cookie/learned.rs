//! Learned mode (HAProxy `stick on req.cook(..)` / `stick store-response res.cook(..)`, nginx
//! `sticky learn`): the application's own cookie (a session id) is the key; the balancer learns
//! where it lives from the response that sets it.
//!
//! - A request whose app cookie is in the table goes to the learned backend.
//! - A request whose app cookie is unknown (learned by nobody, evicted, expired) goes by a
//!   consistent hash of the value, so it does not bounce between backends, and nothing is stored:
//!   clients cannot fill the table with made-up cookies.
//! - A request without the app cookie is assigned like a new client (round robin by default).
//! - Every response is watched: a `Set-Cookie` of the app cookie records `value -> backend`, one
//!   that deletes it forgets the request's value.

use std::sync::Arc;
use std::time::Instant;

use cookie::Cookie;
use cookie::time::OffsetDateTime;
use http::header::SET_COOKIE;

use super::assign::{Assigner, candidates, substitute, then_hook};
use super::learned_table::{LearnedTable, key_of};
use crate::BackendId;
use crate::affinity::{Choice, Reason, RouteContext, Selection, Unavailable};
use crate::ring::RingKind;

/// Writes and reads that go to the shared table, if any.
#[derive(Debug, Clone, Default)]
pub(crate) struct Shared {
    #[cfg(feature = "redis")]
    pub(crate) redis: Option<super::learned_redis::RedisLearnedTable>,
}

impl Shared {
    fn write(&self, _key: u128, _backend: &BackendId, _table: &LearnedTable) {
        #[cfg(feature = "redis")]
        if let Some(redis) = &self.redis {
            redis.write(_key, _backend.clone(), _table.ttl());
        }
    }

    fn delete(&self, _key: u128) {
        #[cfg(feature = "redis")]
        if let Some(redis) = &self.redis {
            redis.delete(_key);
        }
    }

    fn miss(&self, _key: u128, _table: &Arc<LearnedTable>) {
        #[cfg(feature = "redis")]
        if let Some(redis) = &self.redis {
            redis.fetch(_key, Arc::clone(_table));
        }
    }
}

/// The learned strategy's configuration and state.
#[derive(Debug)]
pub(crate) struct Learned {
    pub(crate) app_cookie: Arc<str>,
    pub(crate) table: Arc<LearnedTable>,
    pub(crate) shared: Shared,
    pub(crate) assigner: Assigner,
    pub(crate) repin_on_failover: bool,
    pub(crate) strict: bool,
    pub(crate) ring: RingKind,
}

/// What the response hook does besides watching `Set-Cookie`.
struct Learning {
    app_cookie: Arc<str>,
    table: Arc<LearnedTable>,
    shared: Shared,
    backend: BackendId,
    /// The hashed value the request carried, if any.
    request_key: Option<u128>,
    /// Record `request_key -> backend` even without a `Set-Cookie` (re-pinning after failover).
    repin: bool,
}

impl Learned {
    pub(crate) fn select(&self, req: &http::request::Parts, ctx: &RouteContext<'_>) -> Selection {
        let key = candidates(&req.headers, &self.app_cookie, 1)
            .next()
            .map(key_of);
        let (choice, repin) = match key {
            Some(key) => match self.returning(ctx, key) {
                Ok(found) => found,
                Err(why) => return Selection::Unavailable(why),
            },
            None => match self.assigner.assign(req, ctx) {
                Ok(choice) => (choice, false),
                Err(why) => return Selection::Unavailable(why),
            },
        };
        let Some(member) = ctx.member(choice.position) else {
            return Selection::Unavailable(Unavailable::NoHealthyBackend);
        };
        let learning = Learning {
            app_cookie: Arc::clone(&self.app_cookie),
            table: Arc::clone(&self.table),
            shared: self.shared.clone(),
            backend: member.id().clone(),
            request_key: key,
            repin,
        };
        Selection::Chosen(then_hook(choice, move |head| learning.watch(head)))
    }

    /// A request carrying the app cookie: learned backend, its substitute, or the hash of the
    /// value. The flag asks the response hook to record the substitute.
    fn returning(&self, ctx: &RouteContext<'_>, key: u128) -> Result<(Choice, bool), Unavailable> {
        let key_bytes = key.to_be_bytes();
        let Some(backend) = self.table.get(key, Instant::now()) else {
            self.shared.miss(key, &self.table);
            return match super::super::ip::select_on_ring(ctx, self.ring, &key_bytes) {
                Selection::Chosen(choice) => Ok((choice, false)),
                Selection::Unavailable(why) => Err(why),
                Selection::NoKey => Err(Unavailable::NoHealthyBackend),
            };
        };
        match ctx.position(backend.as_str()) {
            Some(position) if ctx.is_usable(position) => {
                Ok((Choice::new(position, Reason::Sticky), false))
            }
            Some(_) if self.strict => Err(Unavailable::AffinityBackendDown),
            _ => {
                // The learned backend is down or gone: a substitute keyed by the client's value
                // and the dead backend, so each client goes to one place and they spread.
                let mut failover_key = backend.as_str().as_bytes().to_vec();
                failover_key.push(b'/');
                failover_key.extend_from_slice(&key_bytes);
                let position = substitute(ctx, self.ring, &failover_key)?;
                Ok((
                    Choice::new(position, Reason::Failover),
                    self.repin_on_failover,
                ))
            }
        }
    }
}

impl Learning {
    fn watch(self, head: &mut http::response::Parts) {
        let mut saw_app_cookie = false;
        for line in head.headers.get_all(SET_COOKIE) {
            let Ok(line) = line.to_str() else { continue };
            let Ok(cookie) = Cookie::parse(line) else {
                continue;
            };
            if cookie.name() != &*self.app_cookie {
                continue;
            }
            saw_app_cookie = true;
            if deletes(&cookie) {
                if let Some(key) = self.request_key {
                    if self.table.remove(key) {
                        self.shared.delete(key);
                    }
                }
            } else {
                self.record(key_of(cookie.value()));
            }
        }
        if !saw_app_cookie && self.repin {
            if let Some(key) = self.request_key {
                self.record(key);
            }
        }
    }

    fn record(&self, key: u128) {
        if self.table.insert(key, self.backend.clone(), Instant::now()) {
            tracing::debug!(backend = %self.backend, cookie = %self.app_cookie, "learned");
            self.shared.write(key, &self.backend, &self.table);
        }
    }
}

/// Does this `Set-Cookie` remove the cookie (empty value, `Max-Age<=0` or `Expires` past)?
fn deletes(cookie: &Cookie<'_>) -> bool {
    cookie.value().is_empty()
        || cookie
            .max_age()
            .is_some_and(|age| age.is_zero() || age.is_negative())
        || cookie
            .expires_datetime()
            .is_some_and(|at| at <= OffsetDateTime::now_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_deletions() {
        let parse = |s: &str| Cookie::parse(s.to_owned()).unwrap();
        assert!(deletes(&parse("sid=")));
        assert!(deletes(&parse("sid=x; Max-Age=0")));
        assert!(deletes(&parse(
            "sid=x; Expires=Thu, 01 Jan 1970 00:00:00 GMT"
        )));
        assert!(!deletes(&parse("sid=x; Max-Age=60")));
        assert!(!deletes(&parse("sid=x")));
    }
}
