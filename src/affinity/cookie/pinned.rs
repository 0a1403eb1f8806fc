//! Pinned mode: the cookie names the backend (HAProxy `cookie insert`, ALB application cookies).
//!
//! The sealed payload is `P1.<client token>.<issued>.<last seen>.<backend id>`: the token (64
//! random bits) spreads the clients of a dead backend over the ring instead of sending them all to
//! one substitute; the two times (Unix seconds) carry HAProxy's `maxlife` / `maxidle`.

use std::time::Duration;

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

use super::assign::{Assigner, candidates, choose_with_cookie, now_secs, substitute};
use super::attributes::CookieAttributes;
use super::codec::Codec;
use crate::affinity::{Choice, Reason, RouteContext, Selection, Unavailable};
use crate::ring::RingKind;

/// Characters of a backend id that are escaped in the payload: everything a cookie value may not
/// hold, and `%` itself.
const ID_ESCAPES: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b',')
    .add(b';')
    .add(b'\\')
    .add(b'%');

/// How many values of our cookie name a request may make us check (duplicates from other paths
/// or domains are normal, thousands are not).
const MAX_CANDIDATES: usize = 4;

/// What a pinned cookie says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PinnedValue {
    pub(crate) token: u64,
    pub(crate) issued: u64,
    pub(crate) seen: u64,
    pub(crate) id: String,
}

impl PinnedValue {
    pub(crate) fn encode(&self) -> String {
        format!(
            "P1.{:016x}.{}.{}.{}",
            self.token,
            self.issued,
            self.seen,
            utf8_percent_encode(&self.id, ID_ESCAPES)
        )
    }

    pub(crate) fn decode(payload: &str) -> Option<Self> {
        let mut fields = payload.splitn(5, '.');
        if fields.next()? != "P1" {
            return None;
        }
        let token = fields.next()?;
        if token.len() != 16 {
            return None;
        }
        let token = u64::from_str_radix(token, 16).ok()?;
        let issued = fields.next()?.parse().ok()?;
        let seen = fields.next()?.parse().ok()?;
        let id = percent_decode_str(fields.next()?).decode_utf8().ok()?;
        (!id.is_empty()).then(|| Self {
            token,
            issued,
            seen,
            id: id.into_owned(),
        })
    }

    /// The ring key of this client's substitute: its backend and its own token, so the clients of
    /// one dead backend spread over the others, each always to the same one.
    fn failover_key(&self) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.id.len() + 9);
        key.extend_from_slice(self.id.as_bytes());
        key.push(b'/');
        key.extend_from_slice(&self.token.to_be_bytes());
        key
    }
}

/// The pinned strategy's configuration and state.
#[derive(Debug)]
pub(crate) struct Pinned {
    pub(crate) attributes: CookieAttributes,
    pub(crate) codec: Codec,
    pub(crate) assigner: Assigner,
    pub(crate) max_idle: Option<Duration>,
    pub(crate) max_life: Option<Duration>,
    pub(crate) repin_on_failover: bool,
    pub(crate) strict: bool,
    pub(crate) ring: RingKind,
}

/// A valid cookie and whether it must be written again (re-sealed by the current key).
struct Presented {
    value: PinnedValue,
    stale_key: bool,
}

impl Pinned {
    pub(crate) fn select(&self, req: &http::request::Parts, ctx: &RouteContext<'_>) -> Selection {
        let now = now_secs();
        match self.presented(req, now) {
            Some(presented) => self.returning(req, ctx, presented, now),
            None => self.new_client(req, ctx, now),
        }
    }

    /// The first of the request's cookies that opens, parses and has not expired.
    fn presented(&self, req: &http::request::Parts, now: u64) -> Option<Presented> {
        candidates(&req.headers, &self.attributes.name, MAX_CANDIDATES).find_map(|raw| {
            let opened = self.codec.open(&self.attributes.name, raw)?;
            let value = PinnedValue::decode(&opened.payload)?;
            (!self.expired(&value, now)).then_some(Presented {
                value,
                stale_key: opened.stale_key,
            })
        })
    }

    fn expired(&self, value: &PinnedValue, now: u64) -> bool {
        let past = |since: u64, limit: Option<Duration>| {
            limit.is_some_and(|limit| now.saturating_sub(since) > limit.as_secs())
        };
        // A cookie from the future (clock skew between replicas aside) is not trusted to be new.
        past(value.issued, self.max_life)
            || past(value.seen, self.max_idle)
            || value.issued > now.saturating_add(300)
    }

    /// The last-seen time is written back at most every quarter of `max_idle`, so an active client
    /// does not get a new `Set-Cookie` on every response.
    fn needs_touch(&self, value: &PinnedValue, now: u64) -> bool {
        self.max_idle
            .is_some_and(|idle| now.saturating_sub(value.seen) >= (idle.as_secs() / 4).max(1))
    }

    fn returning(
        &self,
        req: &http::request::Parts,
        ctx: &RouteContext<'_>,
        presented: Presented,
        now: u64,
    ) -> Selection {
        let Presented { value, stale_key } = presented;
        match ctx.position(&value.id) {
            Some(position) if ctx.is_usable(position) => {
                let choice = Choice::new(position, Reason::Sticky);
                if stale_key || self.needs_touch(&value, now) {
                    let renewed = PinnedValue { seen: now, ..value };
                    self.with_cookie(choice, &renewed)
                } else {
                    Selection::Chosen(choice)
                }
            }
            // Strict mode waits for the client's own backend while it is still a member;
            // a removed backend will not come back, so its clients move on.
            Some(_) if self.strict => Selection::Unavailable(Unavailable::AffinityBackendDown),
            _ if ctx.is_empty() => Selection::Unavailable(Unavailable::NoBackends),
            _ => match substitute(ctx, self.ring, &value.failover_key()) {
                Ok(position) => {
                    let choice = Choice::new(position, Reason::Failover);
                    let Some(member) = ctx.member(position) else {
                        return self.new_client(req, ctx, now);
                    };
                    if self.repin_on_failover {
                        let repinned = PinnedValue {
                            id: member.id().as_str().to_owned(),
                            seen: now,
                            ..value
                        };
                        self.with_cookie(choice, &repinned)
                    } else if stale_key {
                        self.with_cookie(choice, &PinnedValue { seen: now, ..value })
                    } else {
                        Selection::Chosen(choice)
                    }
                }
                Err(why) => Selection::Unavailable(why),
            },
        }
    }

    fn new_client(
        &self,
        req: &http::request::Parts,
        ctx: &RouteContext<'_>,
        now: u64,
    ) -> Selection {
        let choice = match self.assigner.assign(req, ctx) {
            Ok(choice) => choice,
            Err(why) => return Selection::Unavailable(why),
        };
        let Some(member) = ctx.member(choice.position) else {
            return Selection::Unavailable(Unavailable::NoHealthyBackend);
        };
        let value = PinnedValue {
            token: rand::random(),
            issued: now,
            seen: now,
            id: member.id().as_str().to_owned(),
        };
        self.with_cookie(choice, &value)
    }

    fn with_cookie(&self, choice: Choice, value: &PinnedValue) -> Selection {
        choose_with_cookie(&self.codec, &self.attributes, choice, &value.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_any_id() {
        for id in [
            "a",
            "10.0.0.7:8080",
            "eu west; \"x\"",
            "%41",
            "ünï.code",
            "a.b.c",
        ] {
            let v = PinnedValue {
                token: 0xdead_beef,
                issued: 1,
                seen: 2,
                id: id.to_owned(),
            };
            let encoded = v.encode();
            assert!(
                encoded
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b";,\"\\".contains(&b)),
                "{encoded}"
            );
            assert_eq!(PinnedValue::decode(&encoded), Some(v));
        }
    }

    fn pinned(max_idle: Option<u64>, max_life: Option<u64>) -> Pinned {
        Pinned {
            attributes: CookieAttributes::new("srv"),
            codec: Codec::new(
                super::super::CookieKeys::new(cookie::Key::from(&[1u8; 64])),
                super::super::Protection::Signed,
            ),
            assigner: Assigner::new(None),
            max_idle: max_idle.map(Duration::from_secs),
            max_life: max_life.map(Duration::from_secs),
            repin_on_failover: true,
            strict: false,
            ring: RingKind::Ketama,
        }
    }

    fn value(issued: u64, seen: u64) -> PinnedValue {
        PinnedValue {
            token: 1,
            issued,
            seen,
            id: "a".into(),
        }
    }

    #[test]
    fn max_life_and_max_idle_expire_and_last_seen_is_refreshed_sparingly() {
        let now = 1_000_000;
        let p = pinned(Some(400), Some(3600));
        assert!(!p.expired(&value(now - 3600, now), now));
        assert!(p.expired(&value(now - 3601, now), now), "past max life");
        assert!(!p.expired(&value(now - 10, now - 400), now));
        assert!(p.expired(&value(now - 10, now - 401), now), "idle too long");
        assert!(
            p.expired(&value(now + 301, now + 301), now),
            "from the future"
        );
        // Touched at most every max_idle / 4 = 100 s.
        assert!(!p.needs_touch(&value(now - 500, now - 99), now));
        assert!(p.needs_touch(&value(now - 500, now - 100), now));
        // Without limits nothing expires and nothing is rewritten.
        let unlimited = pinned(None, None);
        assert!(!unlimited.expired(&value(0, 0), now));
        assert!(!unlimited.needs_touch(&value(0, 0), now));
    }

    #[test]
    fn malformed_payloads_are_refused() {
        for bad in [
            "",
            "a",
            "P1",
            "P2.0000000000000001.1.2.a",
            "P1.1.1.2.a",
            "P1.000000000000000g.1.2.a",
            "P1.0000000000000001.x.2.a",
            "P1.0000000000000001.1.2.",
            "P1.0000000000000001.1.2.%ff",
        ] {
            assert_eq!(PinnedValue::decode(bad), None, "{bad:?}");
        }
    }
}
