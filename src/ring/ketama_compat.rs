//! The nginx `hash $key consistent` ring, bit for bit: CRC32 points and keys.

use std::net::SocketAddr;

use super::continuum::Continuum;
use super::{Ring, RingMember};

/// Points per unit of weight in nginx's consistent hash (and so in `pingora-ketama`).
pub const COMPAT_POINTS_PER_WEIGHT: u32 = 160;

/// A ring that maps keys exactly as nginx's `hash $key consistent` and Cloudflare's
/// `pingora-ketama` do for the same server list, so a deployment can move between them (or run
/// side by side) without reshuffling its clients.
///
/// Server ids are the servers as nginx would name them, normally `ip:port`
/// (`"10.0.0.1:8080"`, `"[2001:db8::1]:443"`). The algorithm:
/// - each server has a base string `host + "\0" + port`; for an id that parses as a socket
///   address, `host` is the address printed canonically (IPv6 without brackets) and `port` its
///   decimal port, as `pingora-ketama` does. Other ids follow nginx: a `unix:` prefix is dropped
///   and the port is empty; otherwise the id is split at its last `:` (no `:`: empty port);
/// - the server gets `160 x weight` points; point `j` is
///   `crc32(base ++ le_bytes(point[j - 1]))`, with `point[-1] = 0`;
/// - a key sits at `crc32(key)` and belongs to the first point at or after it, wrapping around.
///
/// Where two servers' points collide exactly (CRC32 is only 32 bits: expect one collision per
/// ~93,000 points), the server listed first wins; members are listed sorted by id. nginx and
/// `pingora-ketama` leave such ties to their sort routine, so keys on a tied point's arc may
/// disagree with them there; outside exact collisions the mappings are identical.
///
/// Failover walks on clockwise like nginx, offering each further server once.
///
/// ```
/// use tower_sticky::ring::{KetamaCompatRing, Ring, RingMember};
/// use tower_sticky::BackendId;
///
/// let ids = [BackendId::from("127.0.0.1:7777"), BackendId::from("127.0.0.1:7778")];
/// let members: Vec<_> = ids.iter().map(|id| RingMember { id, weight: 1 }).collect();
/// let ring = KetamaCompatRing::new(&members);
/// // Same answers as nginx for the same two upstream servers.
/// assert_eq!(ring.primary(b"/some/path"), Some(1));
/// assert_eq!(ring.primary(b"/g"), Some(0));
/// ```
#[derive(Debug, Clone)]
pub struct KetamaCompatRing {
    circle: Continuum,
}

impl KetamaCompatRing {
    /// Builds the ring over `members` (positions in that slice are what lookups return).
    pub fn new(members: &[RingMember<'_>]) -> Self {
        let total: usize = members
            .iter()
            .map(|m| m.weight.max(1) as usize * COMPAT_POINTS_PER_WEIGHT as usize)
            .sum();
        let mut pairs: Vec<(u64, u32)> = Vec::with_capacity(total);
        for (position, member) in members.iter().enumerate() {
            let mut base = crc32fast::Hasher::new();
            base.update(&server_base(member.id.as_str()));
            let mut previous: u32 = 0;
            for _ in 0..member
                .weight
                .max(1)
                .saturating_mul(COMPAT_POINTS_PER_WEIGHT)
            {
                let mut point = base.clone();
                point.update(&previous.to_le_bytes());
                previous = point.finalize();
                pairs.push((widen(previous), position as u32));
            }
        }
        Self {
            circle: Continuum::new(pairs, members.len()),
        }
    }

    /// Number of points on the circle (160 x total weight, less exact collisions).
    pub fn points(&self) -> usize {
        self.circle.points()
    }
}

impl Ring for KetamaCompatRing {
    fn len(&self) -> usize {
        self.circle.members()
    }

    fn find(&self, key: &[u8], accept: &mut dyn FnMut(usize) -> bool) -> Option<usize> {
        self.circle.find(widen(crc32fast::hash(key)), accept)
    }

    // Without the callback of the default: the routing fast path asks this first.
    fn primary(&self, key: &[u8]) -> Option<usize> {
        self.circle.primary(widen(crc32fast::hash(key)))
    }
}

/// Places a 32-bit hash in the top half of the 64-bit circle, which keeps the order (so the
/// shared circle code serves both rings) and puts the bits the bucket index reads on top.
#[inline]
fn widen(hash: u32) -> u64 {
    u64::from(hash) << 32
}

/// The bytes nginx hashes for a server before the per-point suffix: `host "\0" port`.
fn server_base(id: &str) -> Vec<u8> {
    let (host, port) = match id.parse::<SocketAddr>() {
        Ok(addr) => (addr.ip().to_string(), addr.port().to_string()),
        Err(_) => {
            let (host, port) = match id.strip_prefix("unix:") {
                Some(path) => (path, ""),
                None => id.rsplit_once(':').unwrap_or((id, "")),
            };
            (host.to_owned(), port.to_owned())
        }
    };
    let mut base = host.into_bytes();
    base.push(0);
    base.extend_from_slice(port.as_bytes());
    base
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_bases_follow_nginx_naming() {
        assert_eq!(server_base("10.0.0.1:80"), b"10.0.0.1\x0080");
        assert_eq!(server_base("[::1]:7777"), b"::1\x007777");
        assert_eq!(server_base("[2001:db8:0::1]:443"), b"2001:db8::1\x00443");
        assert_eq!(server_base("backend.local:8080"), b"backend.local\x008080");
        assert_eq!(server_base("unix:/run/app.sock"), b"/run/app.sock\x00");
        assert_eq!(server_base("plain"), b"plain\x00");
    }
}
