//! What a proxy changes in the header block: hop-by-hop headers out, forwarding headers in.

use std::fmt::Write;
use std::net::IpAddr;

use http::header::{CONNECTION, FORWARDED, HOST, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::affinity::ClientIpResolver;

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const PROXY_AUTHENTICATE: HeaderName = HeaderName::from_static("proxy-authenticate");
const PROXY_AUTHORIZATION: HeaderName = HeaderName::from_static("proxy-authorization");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Removes the hop-by-hop headers of RFC 9110 section 7.6.1: those `Connection` names, and the
/// fixed list. `TE: trailers` is kept (gRPC needs it end to end).
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap) {
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
    for name in [
        CONNECTION,
        KEEP_ALIVE,
        PROXY_CONNECTION,
        PROXY_AUTHENTICATE,
        PROXY_AUTHORIZATION,
        TE,
        TRAILER,
        TRANSFER_ENCODING,
        UPGRADE,
    ] {
        headers.remove(name);
    }
    if trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
}

/// Adds `X-Forwarded-For` (appended), `X-Forwarded-Proto` and `X-Forwarded-Host` (set) and an
/// RFC 7239 `Forwarded` element (appended) describing the hop from the client to us.
pub(crate) fn add_forwarding(headers: &mut HeaderMap, parts: &http::request::Parts) {
    let peer = ClientIpResolver::peer(parts);
    let proto = parts.uri.scheme_str().unwrap_or("http");
    let host = parts
        .headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| parts.uri.authority().map(|a| a.as_str().to_owned()));

    if let Some(ip) = peer {
        let value = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(chain) if !chain.trim().is_empty() => format!("{chain}, {ip}"),
            _ => ip.to_string(),
        };
        // Every part is a valid header value: the old one was, an IP address is.
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(X_FORWARDED_FOR, value);
        }
    }
    if let Ok(value) = HeaderValue::try_from(proto) {
        headers.insert(X_FORWARDED_PROTO, value);
    }
    if let Some(host) = host.as_deref().and_then(|h| HeaderValue::try_from(h).ok()) {
        headers.insert(X_FORWARDED_HOST, host);
    }

    let mut element = String::new();
    match peer {
        Some(IpAddr::V4(ip)) => {
            let _ = write!(element, "for={ip}");
        }
        Some(IpAddr::V6(ip)) => {
            let _ = write!(element, "for=\"[{ip}]\"");
        }
        None => element.push_str("for=unknown"),
    }
    if let Some(host) = &host {
        element.push_str(";host=");
        quote_into(&mut element, host);
    }
    let _ = write!(element, ";proto={proto}");
    let value = match headers.get(FORWARDED).and_then(|v| v.to_str().ok()) {
        Some(existing) if !existing.trim().is_empty() => format!("{existing}, {element}"),
        _ => element,
    };
    if let Ok(value) = HeaderValue::try_from(value) {
        headers.insert(FORWARDED, value);
    }
}

/// An RFC 7230 quoted-string.
fn quote_into(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::affinity::ClientAddr;

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
        add_forwarding(&mut h, &parts);
        assert_eq!(h["x-forwarded-for"], "203.0.113.1, 2001:db8::7");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "shop.example:8080");
        assert_eq!(
            h[FORWARDED],
            "for=203.0.113.1, for=\"[2001:db8::7]\";host=\"shop.example:8080\";proto=http"
        );
    }
}
