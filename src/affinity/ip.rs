//! [`IpHash`]: the client's IP address decides the backend.

use std::net::IpAddr;

use super::client_ip::InvalidCidr;
use super::{
    Affinity, Choice, ClientIpResolver, ForwardedHeader, Reason, RouteContext, Selection,
    Unavailable,
};
use crate::hash::fnv1a_32;
use crate::ring::{BoundedLoad, RingError, RingKind};

/// Routes by client IP address.
///
/// The address comes from the connection (axum `ConnectInfo<SocketAddr>` or [`ClientAddr`]);
/// `X-Forwarded-For` (or RFC 7239 `Forwarded`) is read only when the peer is a trusted proxy,
/// walking right to left past trusted hops (see [`ClientIpResolver`]). Addresses can be grouped by
/// prefix so NAT pools and mobile users in one subnet stay together.
///
/// Two mappings:
/// - ring (default): the address is a key on a consistent hash ring, so adding a backend to `n`
///   moves only about `1/(n+1)` of clients, and a backend that is down sends each of its clients to
///   one deterministic substitute;
/// - [`modulo`](Self::modulo): `fnv1a_32(address bytes) % total_weight`, the classic mapping
///   (members own consecutive slots in id order, as many as their weight). Scaling reshuffles
///   almost everyone; use it to reproduce an existing deployment.
///
/// A request without a known peer address has no key and goes to the next strategy.
///
/// ```
/// use tower_sticky::{StickyLayer, affinity::IpHash};
///
/// let layer = StickyLayer::new(
///     IpHash::new()
///         .trusted_proxies(["10.0.0.0/8", "fd00::/8"])
///         .unwrap()
///         .ipv4_prefix(24)
///         .ipv6_prefix(64),
/// );
/// # let _ = layer;
/// ```
///
/// [`ClientAddr`]: super::ClientAddr
#[derive(Debug, Clone)]
pub struct IpHash {
    resolver: ClientIpResolver,
    ipv4_prefix: u8,
    ipv6_prefix: u8,
    mode: Mode,
    bound: Option<BoundedLoad>,
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    Ring(RingKind),
    Modulo,
}

impl Default for IpHash {
    fn default() -> Self {
        Self::new()
    }
}

/// How many deterministic re-hashes modulo mode tries before scanning for a usable member (the
/// same bound nginx's `ip_hash` uses).
const MODULO_REHASHES: u32 = 20;

impl IpHash {
    /// Ring mode, whole addresses, no trusted proxies.
    pub fn new() -> Self {
        Self {
            resolver: ClientIpResolver::new(),
            ipv4_prefix: 32,
            ipv6_prefix: 128,
            mode: Mode::Ring(RingKind::Ketama),
            bound: None,
        }
    }

    /// Trusts these proxy networks to report the client address (CIDR strings).
    pub fn trusted_proxies<I, T>(mut self, cidrs: I) -> Result<Self, InvalidCidr>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        self.resolver = self.resolver.trusted_proxies(cidrs)?;
        Ok(self)
    }

    /// Which header the trusted proxies write (default `X-Forwarded-For`).
    pub fn forwarded_header(mut self, header: ForwardedHeader) -> Self {
        self.resolver = self.resolver.forwarded_header(header);
        self
    }

    /// Replaces the whole client-address resolver.
    pub fn resolver(mut self, resolver: ClientIpResolver) -> Self {
        self.resolver = resolver;
        self
    }

    /// Groups IPv4 clients by this prefix length (e.g. 24); clamped to 0..=32.
    pub fn ipv4_prefix(mut self, bits: u8) -> Self {
        self.ipv4_prefix = bits.min(32);
        self
    }

    /// Groups IPv6 clients by this prefix length (e.g. 64); clamped to 0..=128.
    pub fn ipv6_prefix(mut self, bits: u8) -> Self {
        self.ipv6_prefix = bits.min(128);
        self
    }

    /// Uses the classic `fnv1a_32(ip) % total_weight` mapping instead of a ring.
    ///
    /// Turns off [`bounded_load`](Self::bounded_load), which needs a ring.
    pub fn modulo(mut self) -> Self {
        self.mode = Mode::Modulo;
        self.bound = None;
        self
    }

    /// Uses a ring of this kind (the default is [`RingKind::Ketama`]).
    pub fn ring(mut self, kind: RingKind) -> Self {
        self.mode = Mode::Ring(kind);
        self
    }

    /// Ring mode with bounded loads (Mirrokni et al.): a backend holding its share of
    /// `ceil(factor x average in-flight)` takes no more requests; they go to the address's next
    /// candidates on the ring. `factor` must be >= 1.0 (1.25 is a good start).
    ///
    /// The bound is checked against the live in-flight counters when a request is routed; requests
    /// routed at the same instant on other threads may each see the same count, so under heavy
    /// concurrency a backend can exceed the bound by up to the number of simultaneous routings.
    /// The walk reads no lock; the average is summed over the backends only when the address's
    /// backend is busy.
    pub fn bounded_load(mut self, factor: f64) -> Result<Self, RingError> {
        self.bound = Some(BoundedLoad::new(factor)?);
        if matches!(self.mode, Mode::Modulo) {
            self.mode = Mode::Ring(RingKind::Ketama);
        }
        Ok(self)
    }

    /// The routing key of an address: its bytes after prefix grouping.
    fn key(&self, ip: IpAddr) -> ([u8; 16], usize) {
        let mut key = [0u8; 16];
        match ip {
            IpAddr::V4(v4) => {
                let masked = u32::from(v4) & prefix_mask32(self.ipv4_prefix);
                key[..4].copy_from_slice(&masked.to_be_bytes());
                (key, 4)
            }
            IpAddr::V6(v6) => {
                let masked = u128::from(v6) & prefix_mask128(self.ipv6_prefix);
                key.copy_from_slice(&masked.to_be_bytes());
                (key, 16)
            }
        }
    }
}

fn prefix_mask32(bits: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0)
}

fn prefix_mask128(bits: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0)
}

/// Walks `ring` for `key`: the primary when usable (sticky), else the first usable substitute
/// (failover). Shared by every ring-based strategy.
// Inlined: on every request's path, with callers in other codegen units and crates.
#[inline]
pub(crate) fn select_on_ring(ctx: &RouteContext<'_>, kind: RingKind, key: &[u8]) -> Selection {
    let ring = ctx.ring(kind);
    // The usual case, the key's own member usable, without the walk's callback; only a failover
    // hashes the key again.
    if let Some(position) = ring.primary(key).filter(|&p| ctx.is_usable(p)) {
        return Selection::Chosen(Choice::new(position, Reason::Sticky));
    }
    let mut primary = None;
    let found = ring.find(key, &mut |position| {
        primary.get_or_insert(position);
        ctx.is_usable(position)
    });
    match found {
        Some(position) if Some(position) == primary => {
            Selection::Chosen(Choice::new(position, Reason::Sticky))
        }
        Some(position) => Selection::Chosen(Choice::new(position, Reason::Failover)),
        None if ctx.is_empty() => Selection::Unavailable(Unavailable::NoBackends),
        None => Selection::Unavailable(Unavailable::NoHealthyBackend),
    }
}

/// [`select_on_ring`] with a load bound: the key's first usable member unless it is full, then
/// the next candidates in ring order (reported as failover).
#[inline]
pub(crate) fn select_on_ring_bounded(
    ctx: &RouteContext<'_>,
    kind: RingKind,
    key: &[u8],
    bound: Option<&BoundedLoad>,
) -> Selection {
    let Some(bound) = bound else {
        return select_on_ring(ctx, kind, key);
    };
    let ring = ctx.ring(kind);
    let Some(primary) = ring.primary(key) else {
        return Selection::Unavailable(Unavailable::NoBackends);
    };
    match bound.find(&*ring, key, ctx) {
        Some(choice) if choice.position == primary => {
            Selection::Chosen(Choice::new(choice.position, Reason::Sticky))
        }
        Some(choice) => Selection::Chosen(Choice::new(choice.position, Reason::Failover)),
        None => Selection::Unavailable(Unavailable::NoHealthyBackend),
    }
}

fn select_modulo(ctx: &RouteContext<'_>, key: &[u8]) -> Selection {
    let total = ctx.members().total_weight();
    if total == 0 {
        return Selection::Unavailable(Unavailable::NoBackends);
    }
    let mut hash = fnv1a_32(key);
    for attempt in 0..=MODULO_REHASHES {
        if let Some(position) = ctx.members().weighted_slot(u64::from(hash) % total) {
            if ctx.is_usable(position) {
                let reason = if attempt == 0 {
                    Reason::Sticky
                } else {
                    Reason::Failover
                };
                return Selection::Chosen(Choice::new(position, reason));
            }
        }
        hash = fnv1a_32(&hash.to_be_bytes());
    }
    let start = (fnv1a_32(key) as usize) % ctx.len();
    (0..ctx.len())
        .map(|step| (start + step) % ctx.len())
        .find(|&p| ctx.is_usable(p))
        .map_or(Selection::Unavailable(Unavailable::NoHealthyBackend), |p| {
            Selection::Chosen(Choice::new(p, Reason::Failover))
        })
}

impl Affinity for IpHash {
    fn select(&self, req: &http::request::Parts, ctx: &RouteContext<'_>) -> Selection {
        let Some(ip) = self.resolver.resolve(req) else {
            return Selection::NoKey;
        };
        let (key, len) = self.key(ip);
        match self.mode {
            Mode::Ring(kind) => select_on_ring_bounded(ctx, kind, &key[..len], self.bound.as_ref()),
            Mode::Modulo => select_modulo(ctx, &key[..len]),
        }
    }

    fn name(&self) -> &'static str {
        "ip-hash"
    }

    fn edits_requests(&self) -> bool {
        false
    }

    fn rings(&self) -> Vec<RingKind> {
        match self.mode {
            Mode::Ring(kind) => vec![kind],
            Mode::Modulo => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_masks() {
        assert_eq!(prefix_mask32(24), 0xffff_ff00);
        assert_eq!(prefix_mask32(0), 0);
        assert_eq!(prefix_mask32(32), u32::MAX);
        assert_eq!(prefix_mask128(64), u128::MAX << 64);
        assert_eq!(prefix_mask128(0), 0);
    }

    #[test]
    fn grouping_makes_one_subnet_one_key() {
        let h = IpHash::new().ipv4_prefix(24).ipv6_prefix(64);
        assert_eq!(
            h.key("192.0.2.1".parse().unwrap()),
            h.key("192.0.2.254".parse().unwrap())
        );
        assert_ne!(
            h.key("192.0.2.1".parse().unwrap()),
            h.key("192.0.3.1".parse().unwrap())
        );
        assert_eq!(
            h.key("2001:db8::1".parse().unwrap()),
            h.key("2001:db8::ffff:1".parse().unwrap())
        );
    }
}
