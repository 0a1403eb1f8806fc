//! Finding the client's IP address: the connection's peer, or, behind trusted proxies, the
//! rightmost untrusted hop of `X-Forwarded-For` / `Forwarded`.

use std::net::{IpAddr, SocketAddr};

use http::HeaderName;
use http::header::FORWARDED;
use ipnet::IpNet;

/// The connection's remote address, for servers that do not use axum's `ConnectInfo`.
///
/// `Sticky` reads the peer address from this request extension, or from
/// `axum::extract::ConnectInfo<SocketAddr>` (feature `axum`). Insert it from a hyper server:
///
/// ```
/// use tower_sticky::affinity::ClientAddr;
/// let mut req = http::Request::new(());
/// req.extensions_mut().insert(ClientAddr("192.0.2.7:50000".parse().unwrap()));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// Which header trusted proxies write the client chain into.
///
/// Only one is read: a proxy that appends to `X-Forwarded-For` passes a client-written `Forwarded`
/// through untouched, so reading both would let clients choose their own address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (the de facto standard).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for="[2001:db8::1]:443"`.
    Forwarded,
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Resolves a request's client IP with nginx `real_ip_recursive on` semantics.
///
/// The peer address is the client unless it is inside a trusted CIDR. When it is, the forwarded
/// chain is walked right to left, skipping trusted hops; the first untrusted hop is the client. If
/// every hop is trusted, the leftmost is the client. An unparseable hop stops the walk at the last
/// trusted one. IPv4-mapped IPv6 addresses are treated as IPv4.
///
/// ```
/// use tower_sticky::affinity::{ClientAddr, ClientIpResolver};
/// let resolver = ClientIpResolver::new().trusted_proxies(["10.0.0.0/8"]).unwrap();
/// let mut req = http::Request::builder()
///     .header("x-forwarded-for", "203.0.113.9, 10.1.2.3")
///     .body(())
///     .unwrap();
/// req.extensions_mut().insert(ClientAddr("10.0.0.1:4000".parse().unwrap()));
/// let (parts, _) = req.into_parts();
/// assert_eq!(resolver.resolve(&parts), Some("203.0.113.9".parse().unwrap()));
/// ```
#[derive(Debug, Clone, Default)]
pub struct ClientIpResolver {
    trusted: Vec<IpNet>,
    header: ForwardedHeader,
}

/// A CIDR string that did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CIDR {cidr:?}: expected e.g. 10.0.0.0/8, 192.0.2.1 or 2001:db8::/32")]
pub struct InvalidCidr {
    /// The text given.
    pub cidr: String,
}

impl ClientIpResolver {
    /// Trusts nobody: the peer address is always the client.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the trusted proxy networks (CIDR, or a single address meaning /32 or /128).
    pub fn trusted_proxies<I, T>(mut self, cidrs: I) -> Result<Self, InvalidCidr>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        self.trusted = cidrs
            .into_iter()
            .map(|c| parse_cidr(c.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(self)
    }

    /// Sets the trusted proxy networks from parsed values.
    pub fn trusted_networks(mut self, networks: impl IntoIterator<Item = IpNet>) -> Self {
        self.trusted = networks.into_iter().collect();
        self
    }

    /// Chooses which header the trusted proxies write (default `X-Forwarded-For`).
    pub fn forwarded_header(mut self, header: ForwardedHeader) -> Self {
        self.header = header;
        self
    }

    /// The connection's peer address, from [`ClientAddr`] or axum's `ConnectInfo`.
    // Inlined: on every request's path, with callers in other codegen units and crates.
    #[inline]
    pub fn peer(parts: &http::request::Parts) -> Option<IpAddr> {
        Self::peer_of(&parts.extensions)
    }

    /// [`peer`](Self::peer) from the extensions alone.
    pub(crate) fn peer_of(extensions: &http::Extensions) -> Option<IpAddr> {
        if let Some(ClientAddr(addr)) = extensions.get::<ClientAddr>() {
            return Some(addr.ip().to_canonical());
        }
        #[cfg(feature = "axum")]
        if let Some(info) = extensions.get::<axum::extract::ConnectInfo<SocketAddr>>() {
            return Some(info.0.ip().to_canonical());
        }
        None
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// The client address of this request, or `None` when the peer address is unknown.
    #[inline]
    pub fn resolve(&self, parts: &http::request::Parts) -> Option<IpAddr> {
        let peer = Self::peer(parts)?;
        if self.trusted.is_empty() || !self.is_trusted(peer) {
            return Some(peer);
        }
        let name = match self.header {
            ForwardedHeader::XForwardedFor => X_FORWARDED_FOR,
            ForwardedHeader::Forwarded => FORWARDED,
        };
        let mut client = peer;
        // Header lines in reverse order, then each line's hops right to left.
        for value in parts.headers.get_all(&name).iter().rev() {
            let Ok(line) = std::str::from_utf8(value.as_bytes()) else {
                return Some(client);
            };
            for hop in line.rsplit(',') {
                let parsed = match self.header {
                    ForwardedHeader::XForwardedFor => parse_hop(hop),
                    ForwardedHeader::Forwarded => forwarded_for(hop).and_then(parse_hop),
                };
                let Some(ip) = parsed else {
                    return Some(client);
                };
                client = ip;
                if !self.is_trusted(ip) {
                    return Some(client);
                }
            }
        }
        Some(client)
    }
}

fn parse_cidr(text: &str) -> Result<IpNet, InvalidCidr> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| InvalidCidr {
            cidr: text.to_owned(),
        })
}

/// One hop: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:443`,
/// optionally in double quotes.
pub(crate) fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim().trim_matches('"');
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(addr) = hop.parse::<SocketAddr>() {
        return Some(addr.ip().to_canonical());
    }
    let bracketed = hop.strip_prefix('[')?.strip_suffix(']')?;
    bracketed.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

/// The `for=` value of one RFC 7239 element (`for=192.0.2.60;proto=http;by=203.0.113.43`).
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        key.trim().eq_ignore_ascii_case("for").then_some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(peer: &str, header: Option<(&str, &str)>) -> http::request::Parts {
        let mut builder = http::Request::builder();
        if let Some((name, value)) = header {
            builder = builder.header(name, value);
        }
        let mut req = builder.body(()).unwrap();
        req.extensions_mut()
            .insert(ClientAddr(peer.parse().unwrap()));
        req.into_parts().0
    }

    fn trusted() -> ClientIpResolver {
        ClientIpResolver::new()
            .trusted_proxies(["10.0.0.0/8", "2001:db8:ffff::/48"])
            .unwrap()
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn untrusted_peer_ignores_the_header() {
        let p = parts("198.51.100.1:1", Some(("x-forwarded-for", "1.1.1.1")));
        assert_eq!(trusted().resolve(&p), ip("198.51.100.1"));
    }

    #[test]
    fn walks_right_to_left_past_trusted_hops() {
        let p = parts(
            "10.0.0.1:1",
            Some(("x-forwarded-for", "6.6.6.6, 203.0.113.5, 10.9.9.9")),
        );
        assert_eq!(trusted().resolve(&p), ip("203.0.113.5"));
    }

    #[test]
    fn all_trusted_gives_the_leftmost() {
        let p = parts(
            "10.0.0.1:1",
            Some(("x-forwarded-for", "10.2.2.2, 10.3.3.3")),
        );
        assert_eq!(trusted().resolve(&p), ip("10.2.2.2"));
    }

    #[test]
    fn garbage_stops_at_the_last_trusted_hop() {
        let p = parts(
            "10.0.0.1:1",
            Some(("x-forwarded-for", "nonsense, 10.3.3.3")),
        );
        assert_eq!(trusted().resolve(&p), ip("10.3.3.3"));
    }

    #[test]
    fn forwarded_header_with_ipv6_and_ports() {
        let r = trusted().forwarded_header(ForwardedHeader::Forwarded);
        let p = parts(
            "[2001:db8:ffff::1]:1",
            Some((
                "forwarded",
                r#"for=192.0.2.43, for="[2001:db8:cafe::17]:4711";proto=https, for=10.1.1.1"#,
            )),
        );
        assert_eq!(r.resolve(&p), ip("2001:db8:cafe::17"));
    }

    #[test]
    fn forwarded_is_not_read_when_xff_is_configured() {
        let p = parts("10.0.0.1:1", Some(("forwarded", "for=6.6.6.6")));
        assert_eq!(trusted().resolve(&p), ip("10.0.0.1"));
    }

    #[test]
    fn ipv4_mapped_peer_is_ipv4() {
        let p = parts(
            "[::ffff:10.0.0.1]:1",
            Some(("x-forwarded-for", "192.0.2.1")),
        );
        assert_eq!(trusted().resolve(&p), ip("192.0.2.1"));
    }

    #[test]
    fn several_header_lines_are_one_list() {
        let mut req = http::Request::builder()
            .header("x-forwarded-for", "192.0.2.1")
            .header("x-forwarded-for", "10.5.5.5")
            .body(())
            .unwrap();
        req.extensions_mut()
            .insert(ClientAddr("10.0.0.1:1".parse().unwrap()));
        assert_eq!(trusted().resolve(&req.into_parts().0), ip("192.0.2.1"));
    }

    #[test]
    fn bad_cidr_is_a_clear_error() {
        let err = ClientIpResolver::new()
            .trusted_proxies(["10.0.0.0/33"])
            .unwrap_err();
        assert!(err.to_string().contains("10.0.0.0/33"));
    }

    #[test]
    fn hop_forms() {
        assert_eq!(parse_hop(" 1.2.3.4:80 "), ip("1.2.3.4"));
        assert_eq!(parse_hop("[2001:db8::1]"), ip("2001:db8::1"));
        assert_eq!(parse_hop("\"[2001:db8::1]:443\""), ip("2001:db8::1"));
        assert_eq!(parse_hop("unknown"), None);
        assert_eq!(parse_hop("_hidden"), None);
    }
}
