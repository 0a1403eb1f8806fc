//! Placing a client that has no affinity yet, and the small helpers every cookie mode shares.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::super::{Affinity, Choice, Reason, RoundRobin, RouteContext, Selection, Unavailable};
use crate::ring::RingKind;

/// Chooses the backend of a new client: the configured strategy (round robin by default, which
/// skips draining backends), then round robin if that strategy has no key for the request.
#[derive(Debug)]
pub(crate) struct Assigner {
    strategy: Arc<dyn Affinity>,
    last_resort: RoundRobin,
}

impl Assigner {
    pub(crate) fn new(strategy: Option<Arc<dyn Affinity>>) -> Self {
        Self {
            strategy: strategy.unwrap_or_else(|| Arc::new(RoundRobin::new())),
            last_resort: RoundRobin::new(),
        }
    }

    /// A choice marked [`Reason::New`], keeping any response hook the strategy attached.
    pub(crate) fn assign(
        &self,
        req: &http::request::Parts,
        ctx: &RouteContext<'_>,
    ) -> Result<Choice, Unavailable> {
        let selection = match self.strategy.select(req, ctx) {
            Selection::NoKey => self.last_resort.select(req, ctx),
            decided => decided,
        };
        match selection {
            Selection::Chosen(mut choice) => {
                choice.reason = Reason::New;
                Ok(choice)
            }
            Selection::Unavailable(why) => Err(why),
            Selection::NoKey if ctx.is_empty() => Err(Unavailable::NoBackends),
            Selection::NoKey => Err(Unavailable::NoHealthyBackend),
        }
    }

    pub(crate) fn rings(&self) -> Vec<RingKind> {
        self.strategy.rings()
    }
}

/// Adds `hook` after any hook the choice already carries.
pub(crate) fn then_hook(
    mut choice: Choice,
    hook: impl FnOnce(&mut http::response::Parts) + Send + 'static,
) -> Choice {
    match choice.on_response.take() {
        Some(first) => choice.on_response(move |head| {
            first(head);
            hook(head);
        }),
        None => choice.on_response(hook),
    }
}

/// The deterministic substitute for a client whose backend is unusable or gone: the first member
/// on the ring walk for `key` that takes new clients, else the first usable one.
pub(crate) fn substitute(
    ctx: &RouteContext<'_>,
    kind: RingKind,
    key: &[u8],
) -> Result<usize, Unavailable> {
    let ring = ctx.ring(kind);
    ring.find(key, &mut |p| ctx.accepts_new(p))
        .or_else(|| ring.find(key, &mut |p| ctx.is_usable(p)))
        .ok_or(if ctx.is_empty() {
            Unavailable::NoBackends
        } else {
            Unavailable::NoHealthyBackend
        })
}

/// Seconds since the Unix epoch (0 if the clock is before it: cookies then simply look new).
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The first `limit` values of cookie `name`, skipping empty and oversized ones.
pub(crate) fn candidates<'h>(
    headers: &'h http::HeaderMap,
    name: &'h str,
    limit: usize,
) -> impl Iterator<Item = &'h str> + 'h {
    crate::headers::cookie_values(headers, name)
        .filter(|v| !v.is_empty() && v.len() <= super::codec::MAX_VALUE_LEN)
        .take(limit)
}

/// Routes `choice` and, on its response, sets the affinity cookie holding `payload` (sealed with
/// `codec`). If sealing fails (it cannot for valid settings) the request is still routed, without
/// a cookie, and a warning is logged.
pub(crate) fn choose_with_cookie(
    codec: &super::codec::Codec,
    attributes: &super::attributes::CookieAttributes,
    choice: Choice,
    payload: &str,
) -> Selection {
    let header = codec
        .seal(&attributes.name, payload)
        .and_then(|sealed| attributes.set_cookie(&sealed));
    match header {
        Some(header) => Selection::Chosen(then_hook(choice, move |head| {
            super::attributes::add_set_cookie(head, header)
        })),
        None => {
            tracing::warn!(cookie = %attributes.name, "could not seal the affinity cookie");
            Selection::Chosen(choice)
        }
    }
}
