//! Hashed mode (Heroku's session affinity): the cookie holds a random client token, sealed so a
//! client cannot pick one that lands where it likes, and the token is a key on the ring.
//!
//! The sealed payload is `H1.<128-bit token in hex>`. Nothing about the backend is in the cookie,
//! so scaling moves clients exactly as the ring does (about `1/(n+1)` on an add).

use super::assign::{candidates, choose_with_cookie, substitute};
use super::attributes::CookieAttributes;
use super::codec::Codec;
use crate::affinity::{Choice, Reason, RouteContext, Selection, Unavailable};
use crate::ring::RingKind;

/// How many values of our cookie name a request may make us check.
const MAX_CANDIDATES: usize = 4;

/// How many fresh tokens a new client may draw to find one whose ring primary takes new clients
/// (a draining backend keeps its clients but gets no new ones).
const NEW_TOKEN_DRAWS: usize = 16;

/// A client token: 128 bits from the thread's CSPRNG, as 32 lower-case hex digits.
pub(crate) fn new_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn encode(token: &str) -> String {
    format!("H1.{token}")
}

fn decode(payload: &str) -> Option<&str> {
    let token = payload.strip_prefix("H1.")?;
    (token.len() == 32 && token.bytes().all(|b| b.is_ascii_hexdigit())).then_some(token)
}

/// The hashed strategy's configuration.
#[derive(Debug)]
pub(crate) struct Hashed {
    pub(crate) attributes: CookieAttributes,
    pub(crate) codec: Codec,
    pub(crate) strict: bool,
    pub(crate) ring: RingKind,
}

impl Hashed {
    pub(crate) fn select(&self, req: &http::request::Parts, ctx: &RouteContext<'_>) -> Selection {
        let presented =
            candidates(&req.headers, &self.attributes.name, MAX_CANDIDATES).find_map(|raw| {
                let opened = self.codec.open(&self.attributes.name, raw)?;
                let token = decode(&opened.payload)?.to_owned();
                Some((token, opened.stale_key))
            });
        match presented {
            Some((token, stale_key)) => self.returning(ctx, token, stale_key),
            None => self.new_client(ctx),
        }
    }

    fn returning(&self, ctx: &RouteContext<'_>, token: String, stale_key: bool) -> Selection {
        let ring = ctx.ring(self.ring);
        let Some(primary) = ring.primary(token.as_bytes()) else {
            return Selection::Unavailable(Unavailable::NoBackends);
        };
        let choice = if ctx.is_usable(primary) {
            Choice::new(primary, Reason::Sticky)
        } else if self.strict {
            return Selection::Unavailable(Unavailable::AffinityBackendDown);
        } else {
            match substitute(ctx, self.ring, token.as_bytes()) {
                Ok(position) => Choice::new(position, Reason::Failover),
                Err(why) => return Selection::Unavailable(why),
            }
        };
        if stale_key {
            self.with_cookie(choice, &token)
        } else {
            Selection::Chosen(choice)
        }
    }

    fn new_client(&self, ctx: &RouteContext<'_>) -> Selection {
        let ring = ctx.ring(self.ring);
        let mut token = new_token();
        for _ in 1..NEW_TOKEN_DRAWS {
            if ring
                .primary(token.as_bytes())
                .is_some_and(|p| ctx.accepts_new(p))
            {
                break;
            }
            token = new_token();
        }
        match substitute(ctx, self.ring, token.as_bytes()) {
            Ok(position) => self.with_cookie(Choice::new(position, Reason::New), &token),
            Err(why) => Selection::Unavailable(why),
        }
    }

    fn with_cookie(&self, choice: Choice, token: &str) -> Selection {
        choose_with_cookie(&self.codec, &self.attributes, choice, &encode(token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_128_bit_hex_and_distinct() {
        let a = new_token();
        let b = new_token();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert_eq!(decode(&encode(&a)), Some(a.as_str()));
        for bad in ["", "H1.", "H1.xyz", "H2.00000000000000000000000000000000"] {
            assert_eq!(decode(bad), None);
        }
    }
}
