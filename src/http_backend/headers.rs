//! What a proxy changes in the header block: hop-by-hop headers out, forwarding headers in.

use std::net::IpAddr;

use http::header::{CONNECTION, FORWARDED, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::affinity::ClientIpResolver;

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const PROXY_AUTHENTICATE: HeaderName = HeaderName::from_static("proxy-authenticate");
const PROXY_AUTHORIZATION: HeaderName = HeaderName::from_static("proxy-authorization");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The fixed hop-by-hop headers (besides those `Connection` names).
const HOP_BY_HOP: [HeaderName; 9] = [
    CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
];

/// Removes the hop-by-hop headers of RFC 9110 section 7.6.1: those `Connection` names, and the
/// fixed list. `TE: trailers` is kept (gRPC needs it end to end).
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the names (standard names compare as small
    // integers) saves nine hash lookups per message.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    let trailers = headers
        .get_all(TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    if trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
}

/// Which forwarding headers [`HttpBackend`](super::HttpBackend) adds to each request, describing
/// the hop from the client to the gateway.
///
/// The default is [`ALL`](Self::ALL). HAProxy's `option forwardfor` corresponds to
/// [`X_FORWARDED_FOR`](Self::X_FORWARDED_FOR); each header left out saves its formatting on every
/// request.
///
/// ```
/// use tower_sticky::http_backend::{ForwardedHeaders, HttpBackend};
///
/// let backend = HttpBackend::builder("http://127.0.0.1:9001")
///     .forwarded_headers(ForwardedHeaders::X_FORWARDED_FOR)
///     .build()
///     .unwrap();
/// # let _ = backend;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardedHeaders {
    /// `X-Forwarded-For`: the client's address, appended to the chain it came with.
    pub x_forwarded_for: bool,
    /// `X-Forwarded-Proto`: the scheme the client used (set).
    pub x_forwarded_proto: bool,
    /// `X-Forwarded-Host`: the `Host` the client asked for (set).
    pub x_forwarded_host: bool,
    /// RFC 7239 `Forwarded`: `for`, `host` and `proto` in one element, appended.
    pub forwarded: bool,
}

impl ForwardedHeaders {
    /// All four: `X-Forwarded-For`, `-Proto`, `-Host` and `Forwarded` (the default).
    pub const ALL: Self = Self {
        x_forwarded_for: true,
        x_forwarded_proto: true,
        x_forwarded_host: true,
        forwarded: true,
    };
    /// The three `X-Forwarded-*` headers, no `Forwarded`.
    pub const X_FORWARDED: Self = Self {
        forwarded: false,
        ..Self::ALL
    };
    /// Only `X-Forwarded-For` (like HAProxy's `option forwardfor`).
    pub const X_FORWARDED_FOR: Self = Self {
        x_forwarded_for: true,
        ..Self::NONE
    };
    /// None: the backend sees the request as the client sent it (hop-by-hop headers aside).
    pub const NONE: Self = Self {
        x_forwarded_for: false,
        x_forwarded_proto: false,
        x_forwarded_host: false,
        forwarded: false,
    };
}

impl Default for ForwardedHeaders {
    fn default() -> Self {
        Self::ALL
    }
}

/// Adds the chosen forwarding headers: `X-Forwarded-For` (appended), `X-Forwarded-Proto` and
/// `X-Forwarded-Host` (set) and an RFC 7239 `Forwarded` element (appended). `host` is the `Host`
/// the client sent (already taken out of `headers` when the backend's own is sent instead; only
/// read for `X-Forwarded-Host` and `Forwarded`).
///
/// This runs on every proxied request, so it formats by hand into one buffer per header and looks
/// each header up once, rather than going through `format!` and `get` + `insert` (several times
/// the cost, measured with callgrind).
pub(crate) fn add_forwarding(
    which: ForwardedHeaders,
    headers: &mut HeaderMap,
    extensions: &http::Extensions,
    uri: &http::Uri,
    host: Option<HeaderValue>,
) {
    let peer = ClientIpResolver::peer_of(extensions).map(IpText::new);
    let proto = uri.scheme_str().unwrap_or("http");
    let wants_host = which.x_forwarded_host || which.forwarded;
    let host = host.filter(|_| wants_host).or_else(|| {
        uri.authority()
            .filter(|_| wants_host)
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    // One growth of the map at most, instead of one per insert.
    let added = [
        which.x_forwarded_for,
        which.x_forwarded_proto,
        which.x_forwarded_host,
        which.forwarded,
    ];
    headers.reserve(added.iter().filter(|&&on| on).count());

    if which.x_forwarded_for {
        if let Some(ip) = &peer {
            append_element(headers, X_FORWARDED_FOR, ip.as_str());
        }
    }
    if which.x_forwarded_proto {
        let value = match proto {
            "http" => Some(HeaderValue::from_static("http")),
            "https" => Some(HeaderValue::from_static("https")),
            other => HeaderValue::try_from(other).ok(),
        };
        if let Some(value) = value {
            headers.insert(X_FORWARDED_PROTO, value);
        }
    }
    if which.x_forwarded_host {
        if let Some(host) = &host {
            headers.insert(X_FORWARDED_HOST, host.clone());
        }
    }
    if which.forwarded {
        let mut element = String::with_capacity(64);
        match &peer {
            Some(ip) if ip.is_v6 => {
                element.push_str("for=\"[");
                element.push_str(ip.as_str());
                element.push_str("]\"");
            }
            Some(ip) => {
                element.push_str("for=");
                element.push_str(ip.as_str());
            }
            None => element.push_str("for=unknown"),
        }
        if let Some(host) = host.as_ref().and_then(|h| h.to_str().ok()) {
            element.push_str(";host=");
            quote_into(&mut element, host);
        }
        element.push_str(";proto=");
        element.push_str(proto);
        append_element(headers, FORWARDED, &element);
    }
}

/// Appends `element` to the comma-separated list in header `name` (every line of it joined, in
/// order; lines that are not text are dropped), or sets it when there is none.
fn append_element(headers: &mut HeaderMap, name: HeaderName, element: &str) {
    match headers.entry(name) {
        http::header::Entry::Vacant(slot) => {
            if let Ok(value) = HeaderValue::from_str(element) {
                slot.insert(value);
            }
        }
        http::header::Entry::Occupied(mut lines) => {
            let mut value = String::new();
            for line in lines.iter().filter_map(|v| v.to_str().ok()) {
                let line = line.trim();
                if !line.is_empty() {
                    value.push_str(line);
                    value.push_str(", ");
                }
            }
            value.push_str(element);
            // Every part is valid header text: the old lines were, the element is.
            if let Ok(value) = HeaderValue::try_from(value) {
                lines.insert(value);
            }
        }
    }
}

/// An address in its usual text form, formatted on the stack (IPv4 by hand: the common case, and
/// `Display` is slow for it; IPv6 through `Display`).
struct IpText {
    buf: [u8; 48],
    len: usize,
    is_v6: bool,
}

impl IpText {
    fn new(ip: IpAddr) -> Self {
        let mut text = Self {
            buf: [0; 48],
            len: 0,
            is_v6: ip.is_ipv6(),
        };
        match ip {
            IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        text.push(b'.');
                    }
                    if octet >= 100 {
                        text.push(b'0' + octet / 100);
                    }
                    if octet >= 10 {
                        text.push(b'0' + octet / 10 % 10);
                    }
                    text.push(b'0' + octet % 10);
                }
            }
            IpAddr::V6(v6) => {
                // At most 45 characters ("ffff:...:255.255.255.255"); the buffer holds 48.
                let mut cursor = std::io::Cursor::new(&mut text.buf[..]);
                if std::io::Write::write_fmt(&mut cursor, format_args!("{v6}")).is_ok() {
                    text.len = usize::try_from(cursor.position()).unwrap_or(0);
                }
            }
        }
        text
    }

    fn push(&mut self, byte: u8) {
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = byte;
            self.len += 1;
        }
    }

    fn as_str(&self) -> &str {
        // Only ASCII digits, dots, colons and hex letters were written.
        std::str::from_utf8(self.buf.get(..self.len).unwrap_or_default()).unwrap_or_default()
    }
}

/// An RFC 7230 quoted-string.
fn quote_into(out: &mut String, text: &str) {
    out.push('"');
    if text.contains(['"', '\\']) {
        for c in text.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
    } else {
        out.push_str(text);
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::affinity::ClientAddr;
    use http::header::HOST;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn ip_text_matches_display(v4 in any::<[u8; 4]>(), v6 in any::<[u16; 8]>()) {
            for ip in [IpAddr::from(v4), IpAddr::from(v6)] {
                let text = IpText::new(ip);
                prop_assert_eq!(text.as_str(), ip.to_string());
            }
        }
    }

    #[test]
    fn every_line_of_a_list_header_is_kept_and_the_element_appended() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", "203.0.113.1".parse().unwrap());
        h.append(
            "x-forwarded-for",
            "198.51.100.2, 198.51.100.3".parse().unwrap(),
        );
        h.append("x-forwarded-for", HeaderValue::from_bytes(b"\xff").unwrap());
        append_element(&mut h, X_FORWARDED_FOR, "192.0.2.9");
        let lines: Vec<&str> = h
            .get_all("x-forwarded-for")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(
            lines,
            ["203.0.113.1, 198.51.100.2, 198.51.100.3, 192.0.2.9"]
        );

        let mut empty = HeaderMap::new();
        append_element(&mut empty, X_FORWARDED_FOR, "192.0.2.9");
        assert_eq!(empty["x-forwarded-for"], "192.0.2.9");
    }

    #[test]
    fn quoting_escapes_quotes_and_backslashes_only() {
        let mut out = String::new();
        quote_into(&mut out, "a\"b\\c");
        assert_eq!(out, "\"a\\\"b\\\\c\"");
        out.clear();
        quote_into(&mut out, "shop.example:8080");
        assert_eq!(out, "\"shop.example:8080\"");
    }

    #[test]
    fn hop_by_hop_headers_go_including_those_named_by_connection() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, "keep-alive, x-secret-hop".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-secret-hop", "1".parse().unwrap());
        h.insert(TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert(UPGRADE, "websocket".parse().unwrap());
        h.insert(TE, "trailers, deflate".parse().unwrap());
        h.insert("proxy-authorization", "Basic x".parse().unwrap());
        h.insert("x-end-to-end", "kept".parse().unwrap());
        remove_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left.len(), 2, "{left:?}");
        assert_eq!(h["x-end-to-end"], "kept");
        assert_eq!(h[TE], "trailers");
    }

    #[test]
    fn forwarding_headers_append_to_existing_chains() {
        let mut req = http::Request::builder()
            .uri("/x")
            .header(HOST, "shop.example:8080")
            .header("x-forwarded-for", "203.0.113.1")
            .header(FORWARDED, "for=203.0.113.1")
            .body(())
            .unwrap();
        req.extensions_mut()
            .insert(ClientAddr("[2001:db8::7]:5000".parse().unwrap()));
        let (parts, ()) = req.into_parts();
        let mut h = parts.headers.clone();
        add_forwarding(
            ForwardedHeaders::ALL,
            &mut h,
            &parts.extensions,
            &parts.uri,
            parts.headers.get(HOST).cloned(),
        );
        assert_eq!(h["x-forwarded-for"], "203.0.113.1, 2001:db8::7");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "shop.example:8080");
        assert_eq!(
            h[FORWARDED],
            "for=203.0.113.1, for=\"[2001:db8::7]\";host=\"shop.example:8080\";proto=http"
        );
    }
}
