//! Small readers of request headers shared by strategies.

use http::HeaderMap;
use http::header::COOKIE;

/// Values of the cookies named `name` in the request's `Cookie` headers, in order.
///
/// Header lines that are not valid UTF-8 are skipped, not an error: they come from the client and
/// must never fail the request. Values are returned as sent (no percent-decoding).
pub(crate) fn cookie_values<'h, 'n>(
    headers: &'h HeaderMap,
    name: &'n str,
) -> impl Iterator<Item = &'h str> + use<'h, 'n> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|line| line.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(move |pair| {
            let (key, value) = pair.split_once('=')?;
            (key.trim() == name).then(|| value.trim().trim_matches('"'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cookies_across_lines_and_skips_bad_ones() {
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, "a=1; sid=abc; b=2".parse().unwrap());
        headers.append(
            COOKIE,
            http::HeaderValue::from_bytes(b"sid=\xff\xfe").unwrap(),
        );
        headers.append(COOKIE, "sid=\"second\"".parse().unwrap());
        let found: Vec<&str> = cookie_values(&headers, "sid").collect();
        assert_eq!(found, ["abc", "second"]);
        assert_eq!(cookie_values(&headers, "missing").count(), 0);
    }
}
